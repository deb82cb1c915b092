#!/usr/bin/env node
// tfjs's "install the node backend" banner would interleave with the progress output
require('@tensorflow/tfjs').enableProdMode();
require('../dist/cli.js').runCli();
