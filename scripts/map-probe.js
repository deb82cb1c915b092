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
const { COLOURS, PALETTE, POSITIONS, SHAPES, SIZES, randomScene, renderScene } = require('wuerstchen/internal');
const { flag } = require('./lib/flags');

const SIDE = w.TINY_MODEL.width;
const RGB = COLOURS.map((c) => PALETTE[c]);
const ATTRS = { shape: SHAPES, position: POSITIONS, size: SIZES, colour: COLOURS, background: COLOURS };

/** For each of the gh × gw cells of an RGB picture, the index (in COLOURS) of the palette colour nearest most of its pixels. */
function cellColours(px, gh, gw) {
  const ch = SIDE / gh;
  const cw = SIDE / gw;
  const out = [];
  for (let cy = 0; cy < gh; cy++)
    for (let cx = 0; cx < gw; cx++) {
      const count = new Array(RGB.length).fill(0);
      for (let y = cy * ch; y < (cy + 1) * ch; y++)
        for (let x = cx * cw; x < (cx + 1) * cw; x++) {
          const o = (y * SIDE + x) * 3;
          const d = RGB.map((p) => (p[0] - px[o]) ** 2 + (p[1] - px[o + 1]) ** 2 + (p[2] - px[o + 2]) ** 2);
          count[d.indexOf(Math.min(...d))]++;
        }
      out.push(count.indexOf(Math.max(...count)));
    }
  return out;
}

/** Accuracy on the last quarter of a ridge regression (λ = 1, standardised features, a bias) fitted on the rest. */
function probe(rows, labels, classes) {
  const split = Math.floor(rows.length * 0.75);
  const d = rows[0].length;
  const mean = new Float64Array(d);
  const sd = new Float64Array(d);
  for (let i = 0; i < split; i++) rows[i].forEach((v, j) => (mean[j] += v / split));
  for (let i = 0; i < split; i++) rows[i].forEach((v, j) => (sd[j] += (v - mean[j]) ** 2 / split));
  const feature = (r) => [...Array.from(r, (v, j) => (v - mean[j]) / (Math.sqrt(sd[j]) + 1e-6)), 1];
  // normal equations [XᵀX + λI | XᵀY], solved by Gauss–Jordan elimination with partial pivoting
  const n = d + 1;
  const A = Array.from({ length: n }, (_, i) => {
    const row = new Float64Array(n + classes);
    row[i] = 1;
    return row;
  });
  for (let i = 0; i < split; i++) {
    const x = feature(rows[i]);
    for (let a = 0; a < n; a++) {
      for (let b = 0; b < n; b++) A[a][b] += x[a] * x[b];
      A[a][n + labels[i]] += x[a];
    }
  }
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(A[r][c]) > Math.abs(A[p][c])) p = r;
    [A[c], A[p]] = [A[p], A[c]];
    for (let r = 0; r < n; r++) {
      if (r === c || A[r][c] === 0) continue;
      const f = A[r][c] / A[c][c];
      for (let k = c; k < n + classes; k++) A[r][k] -= f * A[c][k];
    }
  }
  let right = 0;
  for (let i = split; i < rows.length; i++) {
    const x = feature(rows[i]);
    const score = Array.from({ length: classes }, (_, k) => x.reduce((s, v, a) => s + (v * A[a][n + k]) / A[a][a], 0));
    if (score.indexOf(Math.max(...score)) === labels[i]) right++;
  }
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
  const localCellColour = probe(cellRows, cells.flat(), RGB.length);
  const rms = Math.sqrt(maps.reduce((s, m) => s + m.reduce((a, v) => a + v * v, 0), 0) / (n * maps[0].length));
  console.log(JSON.stringify({ model, n, global, local_cell_colour: localCellColour, map_rms: +rms.toFixed(2) }));
})();
