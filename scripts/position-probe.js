#!/usr/bin/env node
/**
 * Does the prior know where each of its pixels is? A linear probe of absolute position on its features.
 *
 * The WuerstchenPrior has no positional embedding: a pixel can learn its place only from the zero padding of
 * its depthwise convolutions, one pixel further in per block. A prompt's position words can only be followed
 * where the features say where a pixel is. This script runs the prior on pure noise at noise level t (where
 * the noisy latent shows nothing) with fixed prompts, fits a ridge classifier from each pixel's features to
 * its column (and its row) on half of the pixels, and reports the accuracy on the other half: overall, and
 * for the inner columns (not touching the border), which only depth can tell apart.
 *
 *   node scripts/position-probe.js [--model DIR] [--prior PRIOR_FOLDER] [--t 0.995] [--n 96]
 *
 * Prints one JSON line per feature (`x_projected`: after the input projection; `blocks_out`: after the last
 * block) and axis.
 */
'use strict';
const path = require('path');
const tf = require('@tensorflow/tfjs');
const { useBackend } = require('@wuerstchen/core');
const w = require('wuerstchen');
const { flag } = require('./lib/flags');
const { fitRidge } = require('./lib/ridge');

const PROMPTS = [
  'a small red circle on the left on a blue background',
  'a large white square at the top on a black background',
  'a small green triangle in the middle on a orange background',
];

/**
 * Accuracy of a ridge classifier (one-hot targets, bias feature) trained on the first half of `rows` and
 * tested on the second. `features` is [rows, dims]; `label(i)` in [0, classes).
 */
function probe(features, rows, dims, classes, label, inner) {
  const half = rows >> 1;
  const classify = fitRidge((i, j) => features[i * dims + j], half, dims, classes, label, 1e-3 * half);
  let right = 0;
  let innerRight = 0;
  let innerCount = 0;
  for (let i = half; i < rows; i++) {
    const ok = classify(i) === label(i);
    right += ok;
    if (inner(label(i))) [innerRight, innerCount] = [innerRight + ok, innerCount + 1];
  }
  return { accuracy: right / (rows - half), inner: innerCount ? innerRight / innerCount : null };
}

(async () => {
  await useBackend(flag('backend', 'auto'));
  const pipe = w.WuerstchenPriorPipeline.fromPretrained(
    path.join(path.resolve(flag('model', w.TINY_MODEL_DIR)), 'wuerstchen-prior'),
  );
  const prior = flag('prior') ? w.loadModel(path.resolve(flag('prior')), 'WuerstchenPrior') : pipe.prior.get();
  const t = Number(flag('t', '0.995'));
  const n = Number(flag('n', '96'));
  const [h, wd] = pipe.latentSize(w.TINY_MODEL.height, w.TINY_MODEL.width);
  const captions = Array.from({ length: n }, (_, i) => PROMPTS[i % PROMPTS.length]);
  const traced = {};
  tf.tidy(() => {
    const c = prior.config.c_in;
    const noise = tf.tensor(new w.Generator(3).randnArray(n * h * wd * c), [n, h, wd, c]);
    prior.forward(noise, tf.fill([n], t), pipe.encodePrompt(captions, 1, false), (name, v) => {
      if (name === 'x_projected' || name === 'blocks_out') traced[name] = v.dataSync().slice();
    });
  });
  const dims = prior.config.c;
  for (const [name, features] of Object.entries(traced)) {
    for (const [axis, side, index] of [
      ['column', wd, (p) => p % wd],
      ['row', h, (p) => Math.floor(p / wd)],
    ]) {
      const label = (i) => index(i % (h * wd));
      const r = probe(features, n * h * wd, dims, side, label, (l) => l > 0 && l < side - 1);
      const line = {
        t,
        features: name,
        axis,
        classes: side,
        accuracy: Number(r.accuracy.toFixed(3)),
        inner_accuracy: r.inner === null ? null : Number(r.inner.toFixed(3)),
        chance: Number((1 / side).toFixed(3)),
      };
      process.stdout.write(JSON.stringify(line) + '\n');
    }
  }
})().catch((e) => {
  process.stderr.write(`position-probe: ${e.message}\n`);
  process.exit(1);
});
