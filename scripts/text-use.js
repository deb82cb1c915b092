#!/usr/bin/env node
/**
 * What the bundled model's prior takes from its caption, attribute by attribute: the prior's x0
 * error at noise level t on training pictures with their own captions, and how much it grows when
 * one attribute of the caption is swapped for another value (or the caption is emptied). A prior
 * that ignores, say, the position words scores the same with them swapped (+0 %).
 *
 *   node scripts/text-use.js --data DIR [--model DIR] [--prior PRIOR_FOLDER] [--n 64] [--t 0.5,0.9]
 *
 * `--prior` evaluates another prior (for example a run's checkpoints/step-N/prior_ema) with the
 * model's compressor, text encoder and latent scaling. Prints one JSON line per t.
 */
'use strict';
const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');
const { useBackend } = require('@wuerstchen/core');
const w = require('wuerstchen');
const { COLOURS, POSITIONS, SHAPES, SIZES, parseCaption, sceneCaption } = require('wuerstchen/internal');
const { flag } = require('./lib/flags');

const ATTRIBUTES = { background: COLOURS, colour: COLOURS, shape: SHAPES, position: POSITIONS, size: SIZES };

/** The caption with `attr` replaced by another valid value (cycling through them by `i`). */
function swapAttribute(scene, attr, i) {
  const clash = (v) => (attr === 'colour' && v === scene.background) || (attr === 'background' && v === scene.colour);
  const others = ATTRIBUTES[attr].filter((v) => v !== scene[attr] && !clash(v));
  return sceneCaption({ ...scene, [attr]: others[i % others.length] });
}

function readPictures(dir, n) {
  const pngs = fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.png'))
    .sort()
    .slice(0, n);
  if (pngs.length === 0) throw new Error(`${dir}: no .png pictures (make them with wuerstchen-train make-shapes)`);
  return pngs.map((f) => {
    const caption = fs.readFileSync(path.join(dir, f.replace(/\.png$/, '.txt')), 'utf8').trim();
    const scene = parseCaption(caption);
    if (!scene) throw new Error(`${path.join(dir, f)}: its caption does not follow the shapes grammar`);
    return { image: w.decodePng(fs.readFileSync(path.join(dir, f))), caption, scene };
  });
}

(async () => {
  await useBackend(flag('backend', 'auto'));
  const data = flag('data');
  if (!data) throw new Error('--data DIR is required (a make-shapes folder)');
  const pics = readPictures(path.resolve(data), Number(flag('n', 64)));
  const vary = w.WuerstchenVariationPipeline.fromPretrained(path.resolve(flag('model', w.TINY_MODEL_DIR)));
  const pipe = vary.pipe.priorPipe;
  const prior = flag('prior') ? w.loadModel(path.resolve(flag('prior')), 'WuerstchenPrior') : pipe.prior.get();
  const [h, wd] = pipe.latentSize(w.TINY_MODEL.height, w.TINY_MODEL.width);
  const x0 = tf.tidy(() => {
    const maps = pics.map(({ image }) =>
      vary.encodeImage(
        tf.div(
          tf
            .tensor4d(Float32Array.from(image.data), [1, image.height, image.width, image.channels])
            .slice([0, 0, 0, 0], [1, -1, -1, 3]),
          255,
        ),
        h,
        wd,
      ),
    );
    return tf.div(tf.add(tf.concat(maps), pipe.config.latentStd), pipe.config.latentMean);
  });
  const captions = pics.map((p) => p.caption);
  for (const t of flag('t', '0.5,0.9').split(',').map(Number)) {
    const a = pipe.scheduler.alphaCumprod(tf.tensor1d([t])).dataSync()[0];
    const xt = tf.tidy(() =>
      tf.add(
        tf.mul(x0, Math.sqrt(a)),
        tf.mul(tf.tensor(new w.Generator(7).randnArray(x0.size), x0.shape), Math.sqrt(1 - a)),
      ),
    );
    const x0Error = (caps) =>
      tf.tidy(() => {
        const eps = prior.forward(xt, tf.fill([caps.length], t), pipe.encodePrompt(caps, 1, false));
        const x0hat = tf.div(tf.sub(xt, tf.mul(eps, Math.sqrt(1 - a))), Math.sqrt(a));
        return tf.mean(tf.squaredDifference(x0hat, x0)).dataSync()[0];
      });
    const own = x0Error(captions);
    const growth = (caps) => Number(((x0Error(caps) / own - 1) * 100).toFixed(1));
    const row = { t, n: pics.length, x0_mse_own: Number(own.toFixed(5)) };
    for (const attr of Object.keys(ATTRIBUTES))
      row[`${attr}_swapped_pct`] = growth(pics.map((p, i) => swapAttribute(p.scene, attr, i)));
    row.empty_pct = growth(captions.map(() => ''));
    process.stdout.write(JSON.stringify(row) + '\n');
    xt.dispose();
  }
})().catch((e) => {
  process.stderr.write(`text-use: ${e.message}\n`);
  process.exit(1);
});
