#!/usr/bin/env node
// tfjs's "install the node backend" banner would interleave with the progress output
require('@tensorflow/tfjs').enableProdMode();
require('../dist/cli.js').main(process.argv.slice(2)).then((code) => process.exit(code));
