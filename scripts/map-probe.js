#!/usr/bin/env node
/**
 * What a tiny model's compressor (`effnet/`) puts in its semantic map, read with linear probes. Rendered scenes
 * (all colour–shape pairs) are encoded as the variation pipeline does; three quarters train a ridge regression
 * onto one-hot labels, the last quarter is scored (chance: shape 33 %, position 20 %, size 50 %, colours 12.5 %).
 *  - `global`: each attribute from the whole map;
 *  - `local_cell_colour`: the palette colour that covers most of a cell's patch of the picture, from that cell's
 *    features alone, with one probe shared by all cells. Stage B reads the map cell by cell (its effnet mapper
 *    is a 1×1 convolution), so a map whose cells do not say what lies under them is hard for it to draw from.
 *  - `map_rms`: the root mean square of the map's values.
 *
 *   node scripts/map-probe.js [--model DIR] [--n 2000] [--backend NAME]
 */
'use strict';
const path = require('path');
const tf = require('@tensorflow/tfjs');
const { useBackend } = require('@wuerstchen/core');
const w = require('wuerstchen');
const { COLOURS, POSITIONS, SHAPES, SIZES, nearestColour, randomScene, renderScene } = require('wuerstchen/internal');
const { flag } = require('./lib/flags');
const { fitRidge } = require('./lib/ridge');

const SIDE = w.TINY_MODEL.width;
const ATTRS = { shape: SHAPES, position: POSITIONS, size: SIZES, colour: COLOURS, background: COLOURS };

/** For each of the gh × gw cells of an RGB picture, the index (in COLOURS) of the palette colour nearest most of its pixels. */
function cellColours(px, gh, gw) {
  const ch = SIDE / gh;
  const cw = SIDE / gw;
  const out = [];
  for (let cy = 0; cy < gh; cy++)
    for (let cx = 0; cx < gw; cx++) {
      const count = new Array(COLOURS.length).fill(0);
      for (let y = cy * ch; y < (cy + 1) * ch; y++)
        for (let x = cx * cw; x < (cx + 1) * cw; x++) {
          const o = (y * SIDE + x) * 3;
          count[COLOURS.indexOf(nearestColour([px[o], px[o + 1], px[o + 2]], COLOURS))]++;
        }
      out.push(count.indexOf(Math.max(...count)));
    }
  return out;
}

/** Accuracy on the last quarter of a ridge classifier (λ = 1, standardised features) fitted on the rest. */
function probe(rows, labels, classes) {
  const split = Math.floor(rows.length * 0.75);
  const d = rows[0].length;
  const mean = new Float64Array(d);
  const sd = new Float64Array(d);
  for (let i = 0; i < split; i++) rows[i].forEach((v, j) => (mean[j] += v / split));
  for (let i = 0; i < split; i++) rows[i].forEach((v, j) => (sd[j] += (v - mean[j]) ** 2 / split));
  sd.forEach((v, j) => (sd[j] = Math.sqrt(v) + 1e-6));
  const classify = fitRidge(
    (i, j) => (rows[i][j] - mean[j]) / sd[j],
    split,
    d,
    classes,
    (i) => labels[i],
    1,
  );
  let right = 0;
  for (let i = split; i < rows.length; i++) if (classify(i) === labels[i]) right++;
  return +((100 * right) / (rows.length - split)).toFixed(1);
}

(async () => {
  await useBackend(flag('backend', 'auto'), { quiet: true });
  const n = Number(flag('n', 2000));
  const model = path.resolve(flag('model', w.TINY_MODEL_DIR));
  const vary = w.WuerstchenVariationPipeline.fromPretrained(model);
  const [gh, gw] = vary.pipe.priorPipe.latentSize(SIDE, SIDE);
  const rng = new w.Generator(7);
  const scenes = [];
  const maps = [];
  const cells = [];
  for (let i = 0; i < n; i++) {
    const scene = randomScene(rng, 'any');
    const px = renderScene(scene, rng, { side: SIDE });
    const map = tf.tidy(() => vary.encodeImage(tf.div(tf.tensor4d(px, [1, SIDE, SIDE, 3], 'float32'), 255), gh, gw));
    maps.push(map.dataSync().slice());
    map.dispose();
    scenes.push(scene);
    cells.push(cellColours(px, gh, gw));
  }
  vary.release();
  const global = Object.fromEntries(
    Object.entries(ATTRS).map(([attr, values]) => [
      attr,
      probe(
        maps,
        scenes.map((s) => values.indexOf(s[attr])),
        values.length,
      ),
    ]),
  );
  const c = maps[0].length / (gh * gw);
  const cellRows = maps.flatMap((m) => Array.from({ length: gh * gw }, (_, k) => m.subarray(k * c, (k + 1) * c)));
  const localCellColour = probe(cellRows, cells.flat(), COLOURS.length);
  const rms = Math.sqrt(maps.reduce((s, m) => s + m.reduce((a, v) => a + v * v, 0), 0) / (n * maps[0].length));
  console.log(JSON.stringify({ model, n, global, local_cell_colour: localCellColour, map_rms: +rms.toFixed(2) }));
})();
