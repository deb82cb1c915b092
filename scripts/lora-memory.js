#!/usr/bin/env node
/**
 * Memory of a LoRA step against a full fine-tune step of the same prior (issue 12). Runs `--steps`
 * updates of one mode on freshly drawn shapes pictures and prints one JSON line: peak RSS after
 * setup and after the steps (before the final checkpoint), tfjs bytes held after setup (weights,
 * optimizer moments) and the trained parameter count. Peak RSS is per process, so run each mode
 * in its own:
 *
 *   node scripts/lora-memory.js --mode lora|full [--base DIR] [--config FILE] [--rank R] [--batch N]
 *                               [--steps N] [--backend NAME] [--prior-c C --prior-depth D]
 *
 * Default base: the bundled tiny model with configs/tiny-c.json. `--prior-c`/`--prior-depth` swap
 * in a seeded prior of that width and depth (same text encoder and compressor), to see how the
 * difference grows with the model.
 */
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const tf = require('@tensorflow/tfjs');
const { useBackend } = require('@wuerstchen/core');
const w = require('wuerstchen');
const train = require('@wuerstchen/train');
const { resolveLoraBase, saveModule } = require('@wuerstchen/train/internal');
const { flag } = require('./lib/flags');

const root = path.resolve(__dirname, '..');
const mode = flag('mode');
if (mode !== 'lora' && mode !== 'full') {
  process.stderr.write('lora-memory: --mode lora|full is required\n');
  process.exit(2);
}
const rank = Number(flag('rank', 8));
const batch = Number(flag('batch', 16));
const steps = Number(flag('steps', 3));
const priorC = flag('prior-c');
const priorDepth = flag('prior-depth');
const mb = (bytes) => Math.round(bytes / 2 ** 20);
const peakRss = () => process.resourceUsage().maxRSS * 1024;

/** A copy of the base pipeline folder with a seeded prior of width c and depth d. */
function widerBase(base, dir, c, d) {
  const src = resolveLoraBase(base, 'c').pipeline;
  fs.cpSync(src, dir, { recursive: true });
  fs.cpSync(path.join(src, '..', 'effnet'), path.join(dir, 'effnet'), { recursive: true });
  const cfg = {
    ...JSON.parse(fs.readFileSync(path.join(src, 'prior', 'config.json'), 'utf8')),
    c,
    depth: d,
    nhead: Math.max(1, c / 32),
  };
  delete cfg._class_name;
  delete cfg._diffusers_version;
  const prior = new w.WuerstchenPrior(cfg);
  saveModule(path.join(dir, 'prior'), 'WuerstchenPrior', prior.config, prior);
  prior.dispose();
  return dir;
}

(async () => {
  await useBackend(flag('backend', process.env.WUERSTCHEN_BACKEND || 'auto'), { quiet: true });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lora-memory-'));
  try {
    let base = flag('base', w.TINY_MODEL_DIR);
    if (priorC) base = widerBase(base, path.join(tmp, 'base'), Number(priorC), Number(priorDepth ?? 4));
    const data = path.join(tmp, 'data');
    train.makeShapes({ out: data, n: batch * steps, seed: 1, side: 64 });
    const config = train.loraTrainConfig({
      base,
      config: flag('config', path.join(root, 'configs', 'tiny-c.json')),
      rank,
      steps,
      lr: 1e-4,
      batchSize: batch,
      checkpointEvery: 1e9,
    });
    let stepPeak = 0;
    const opts = {
      config,
      data,
      out: path.join(tmp, 'run'),
      progress: 'none',
      log: () => undefined,
      onStep: () => (stepPeak = peakRss()),
    };
    const trainer = mode === 'lora' ? new train.PriorLoraTrainer(opts, { rank }) : new train.StageCTrainer(opts);
    trainer.init();
    const setupPeak = peakRss();
    const tfBytes = tf.memory().numBytes;
    const trained = (
      mode === 'lora' ? trainer.adapters.network.parameters() : trainer.prior.trainableParameters()
    ).reduce((a, [, p]) => a + p.size, 0);
    await trainer.run();
    const out = {
      mode,
      backend: tf.getBackend(),
      prior: {
        c: trainer.prior.config.c,
        depth: trainer.prior.config.depth,
        parameters: trainer.prior.numParameters(),
      },
      rank: mode === 'lora' ? rank : null,
      batch,
      steps,
      trained_parameters: trained,
      tf_mb_after_setup: mb(tfBytes),
      peak_rss_mb_after_setup: mb(setupPeak),
      peak_rss_mb_after_steps: mb(stepPeak),
    };
    trainer.dispose();
    process.stdout.write(JSON.stringify(out) + '\n');
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
})().catch((e) => {
  process.stderr.write(`lora-memory: ${e.stack ?? e}\n`);
  process.exit(1);
});
