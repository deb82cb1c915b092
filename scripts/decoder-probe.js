#!/usr/bin/env node
/**
 * What the bundled model's Stage B takes from its inputs. Rendered scenes (seen colour–shape pairs) are
 * encoded by Stage A and by the compressor (`effnet/`), noised to t, and given to Stage B with each scene's
 * own map and caption. For each t it prints one JSON line with
 *  - `shape_kept`: the share of scenes whose one-step x0 prediction, decoded by Stage A, has the right shape
 *    (`judgeImage`); at high t only the conditioning can tell the shape;
 *  - `eps_change`: the root mean square change of the ε prediction when the caption is emptied, when its
 *    shape or colour word is swapped, and when the map is zeroed (the prediction's std is about 1).
 *
 *   node scripts/decoder-probe.js [--model DIR] [--n 48] [--t 0.1,0.3,0.5,0.7,0.9] [--backend NAME]
 */
'use strict';
const path = require('path');
const tf = require('@tensorflow/tfjs');
const { useBackend } = require('@wuerstchen/core');
const w = require('wuerstchen');
const { COLOURS, SHAPES, judgeImage, randomScene, renderScene, sceneCaption } = require('wuerstchen/internal');
const { flag } = require('./lib/flags');

const SIDE = w.TINY_MODEL.width;

/** The scene with `attr` set to the next valid value. */
function swapped(scene, attr) {
  const values = attr === 'shape' ? SHAPES : COLOURS.filter((c) => c !== scene.background);
  return { ...scene, [attr]: values[(values.indexOf(scene[attr]) + 1) % values.length] };
}

(async () => {
  await useBackend(flag('backend', 'auto'), { quiet: true });
  const n = Number(flag('n', 48));
  const ts = flag('t', '0.1,0.3,0.5,0.7,0.9').split(',').map(Number);
  const vary = w.WuerstchenVariationPipeline.fromPretrained(path.resolve(flag('model', w.TINY_MODEL_DIR)));
  const pipe = vary.pipe.decoderPipe;
  const [vqgan, decoder] = [pipe.vqgan.get(), pipe.decoder.get()];
  const [h, wd] = vary.pipe.priorPipe.latentSize(SIDE, SIDE);
  const rng = new w.Generator(11);
  const scenes = Array.from({ length: n }, () => randomScene(rng, 'exclude'));
  const pixels = new Float32Array(n * SIDE * SIDE * 3);
  scenes.forEach((s, i) => pixels.set(renderScene(s, rng, { side: SIDE }), i * SIDE * SIDE * 3));
  const images = tf.div(tf.tensor4d(pixels, [n, SIDE, SIDE, 3]), 255);
  const maps = tf.tidy(() => tf.concat(scenes.map((_, i) => vary.encodeImage(images.slice(i, 1), h, wd))));
  const x0 = tf.tidy(() => tf.div(vqgan.encode(images), pipe.vqScaleFactor));
  const text = (list) => tf.tidy(() => tf.concat(list.map((s) => pipe.encodePrompt([s], 1, false, undefined))));
  const clip = text(scenes.map(sceneCaption));
  const variants = {
    empty_caption: text(scenes.map(() => '')),
    shape_swapped: text(scenes.map((s) => sceneCaption(swapped(s, 'shape')))),
    colour_swapped: text(scenes.map((s) => sceneCaption(swapped(s, 'colour')))),
  };
  const noise = tf.tensor(new w.Generator(7).randnArray(x0.size), x0.shape);
  for (const t of ts) {
    const r = tf.fill([n], t);
    const a = tf.tidy(() => pipe.scheduler.alphaCumprod(tf.tensor1d([t])).dataSync()[0]);
    const xt = tf.tidy(() => tf.add(tf.mul(x0, Math.sqrt(a)), tf.mul(noise, Math.sqrt(1 - a))));
    const eps = decoder.forward(xt, r, maps, clip);
    /** RMS change of the ε prediction when `predict` replaces the own map and caption. */
    const rmsChange = (predict) =>
      +tf.tidy(() => tf.sqrt(tf.mean(tf.squaredDifference(predict(), eps))).dataSync()[0]).toFixed(4);
    const change = {};
    for (const [name, c] of Object.entries(variants)) change[name] = rmsChange(() => decoder.forward(xt, r, maps, c));
    change.map_zeroed = rmsChange(() => decoder.forward(xt, r, tf.zerosLike(maps), clip));
    const x0Hat = tf.tidy(() => tf.div(tf.sub(xt, tf.mul(eps, Math.sqrt(1 - a))), Math.sqrt(a)));
    const decodedImages = pipe.decodeLatents(x0Hat);
    const decoded = await w.tensorToImages(decodedImages);
    const kept = scenes.filter((s, k) => {
      const img = decoded[k];
      return judgeImage(img.data, img.width, img.height, img.channels, 40, COLOURS).shape === s.shape;
    }).length;
    process.stdout.write(
      JSON.stringify({
        t,
        shape_kept: +(kept / n).toFixed(3),
        eps_std: +tf.tidy(() => tf.moments(eps).variance.sqrt().dataSync()[0]).toFixed(4),
        eps_change: change,
      }) + '\n',
    );
    tf.dispose([r, xt, eps, x0Hat, decodedImages]);
  }
})().catch((e) => {
  process.stderr.write(`decoder-probe: ${e.message}\n`);
  process.exit(1);
});
