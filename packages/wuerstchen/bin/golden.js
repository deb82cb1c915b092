#!/usr/bin/env node
require('../dist/golden/cli.js');
