#!/usr/bin/env node
/**
 * `npm run eval:tiny`: the bundled model's evaluator. Generates a fixed set of prompts (seen and
 * held-out colour–shape pairs, several seeds), judges every PNG from its pixels alone
 * (`judgeImage`: background, colour, shape, position, size), reports Stage A's reconstruction PSNR
 * on held-out images, and times one image per backend. When the folder has the compressor (`effnet/`), the
 * same scenes are also rendered, encoded by it and redrawn by Stage B and A alone: what the model would
 * draw with a perfect prior, which tells a prior's failures from the decoder's. Prints JSON lines, then tables.
 *
 *   node scripts/eval-tiny.js [--model DIR] [--backend NAME] [--time-backends native,wasm,cpu]
 *                             [--seen N] [--held-out N] [--seeds K] [--prior-steps N] [--decoder-steps N]
 *                             [--prior-guidance W] [--images-out DIR] [--lora FILE[:scale],...] [--new-colour NAME [--new N]]
 *
 * `--lora` evaluates the model with LoRA files (prior and/or decoder adapters); `--new-colour pink` adds a split `new` of N
 * (default 24) scenes in that colour, judged with it added to the palette (the other splits are
 * judged and drawn exactly as without it).
 */
'use strict';
const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');
const { useBackend } = require('@wuerstchen/core');
const w = require('wuerstchen');
const { COLOURS, judgeImage, parseLoraSpec, randomScene, renderScene, sceneCaption } = require('wuerstchen/internal');

const { flag } = require('./lib/flags');
const model = path.resolve(flag('model', w.TINY_MODEL_DIR));
const backend = flag('backend', process.env.WUERSTCHEN_BACKEND || 'auto');
const timeBackends = flag('time-backends', '').split(',').filter(Boolean);
const nSeen = Number(flag('seen', 48));
const nHeld = Number(flag('held-out', 24));
const seeds = Array.from({ length: Number(flag('seeds', 2)) }, (_, i) => i + 1);
const imagesOut = flag('images-out');
const lora = flag('lora');
const newColour = flag('new-colour');
const nNew = newColour ? Number(flag('new', 24)) : 0;
const callOpts = {
  width: w.TINY_MODEL.width,
  height: w.TINY_MODEL.height,
  priorNumInferenceSteps: Number(flag('prior-steps', w.TINY_MODEL.priorSteps)),
  numInferenceSteps: Number(flag('decoder-steps', w.TINY_MODEL.decoderSteps)),
  priorGuidanceScale: Number(flag('prior-guidance', w.TINY_MODEL.priorGuidance)),
};
const ATTRS = ['background', 'colour', 'shape', 'position', 'size'];
const emit = (o) => process.stdout.write(JSON.stringify(o) + '\n');

/** The fixed prompt set: scenes drawn from fixed seeds (seen pairs, then held-out pairs). */
function promptSet() {
  const seen = new w.Generator(11);
  const held = new w.Generator(12);
  const fresh = new w.Generator(14);
  return [
    ...Array.from({ length: nSeen }, () => ({ split: 'seen', scene: randomScene(seen, 'exclude') })),
    ...Array.from({ length: nHeld }, () => ({ split: 'held_out', scene: randomScene(held, 'only') })),
    ...Array.from({ length: nNew }, () => ({ split: 'new', scene: randomScene(fresh, 'any', [newColour]) })),
  ];
}

/**
 * Accuracy per split and attribute of the pictures `draw(chunk, seed)` makes for the prompt set (8-bit images,
 * one per item); `name` prefixes the saved PNGs.
 */
async function accuracy(draw, name) {
  const items = promptSet();
  const tally = nNew ? { seen: {}, held_out: {}, new: {} } : { seen: {}, held_out: {} };
  for (const s of Object.keys(tally)) for (const a of [...ATTRS, 'all']) tally[s][a] = [0, 0];
  if (imagesOut) fs.mkdirSync(imagesOut, { recursive: true });
  const batch = 24;
  for (const seed of seeds) {
    for (let i = 0; i < items.length; i += batch) {
      const chunk = items.slice(i, i + batch);
      const raws = await draw(chunk, seed * 1000 + i);
      chunk.forEach((it, k) => {
        const img = raws[k];
        const j = judgeImage(
          img.data,
          img.width,
          img.height,
          img.channels,
          40,
          it.split === 'new' ? [...COLOURS, newColour] : COLOURS,
        );
        let all = true;
        for (const a of ATTRS) {
          const ok = j[a] === it.scene[a];
          all = all && ok;
          tally[it.split][a][0] += ok ? 1 : 0;
          tally[it.split][a][1] += 1;
        }
        tally[it.split].all[0] += all ? 1 : 0;
        tally[it.split].all[1] += 1;
        if (imagesOut)
          fs.writeFileSync(
            path.join(imagesOut, `${name}-${it.split}-${String(i + k).padStart(3, '0')}-s${seed}.png`),
            w.encodePng(img),
          );
        emit({
          kind: 'judgement',
          from: name,
          split: it.split,
          seed,
          prompt: sceneCaption(it.scene),
          judged: Object.fromEntries(ATTRS.map((a) => [a, j[a]])),
        });
      });
    }
  }
  const result = {};
  for (const [split, t] of Object.entries(tally))
    result[split] = Object.fromEntries(Object.entries(t).map(([a, [ok, n]]) => [a, n ? ok / n : null]));
  return { result, counts: Object.fromEntries(Object.entries(tally).map(([split, t]) => [split, t.all[1]])) };
}

/**
 * Stage A reconstruction PSNR (8-bit, unquantised latents, as the pipeline decodes) on 64 rendered held-out scenes:
 * the mean over pictures, and the pooled PSNR of the flat pixels and of the edge pixels (within 2 px of a colour
 * change), where the error concentrates.
 */
function stageAPsnr() {
  const vqgan = w.loadModel(path.join(model, 'wuerstchen', 'vqgan'), 'PaellaVQModel');
  const rng = new w.Generator(13);
  const side = w.TINY_MODEL.width;
  const psnrs = [];
  const sums = { flat: [0, 0], edges: [0, 0] };
  const db = (mse) => 10 * Math.log10((255 * 255) / Math.max(mse, 1e-10));
  for (let i = 0; i < 64; i += 16) {
    const data = new Float32Array(16 * side * side * 3);
    for (let k = 0; k < 16; k++)
      data.set(
        Float32Array.from(renderScene(randomScene(rng, 'only'), rng, { side }), (v) => v / 255),
        k * side * side * 3,
      );
    const r = tf.tidy(() => {
      const x = tf.tensor4d(data, [16, side, side, 3]);
      const y = tf.clipByValue(vqgan.decode(vqgan.encode(x)), 0, 1);
      const se = tf.squaredDifference(tf.round(tf.mul(y, 255)), tf.round(tf.mul(x, 255)));
      const range = tf.sub(tf.maxPool(x, 5, 1, 'same'), tf.neg(tf.maxPool(tf.neg(x), 5, 1, 'same')));
      const edge = tf.cast(tf.greater(tf.max(range, 3, true), 0.1), 'float32');
      const part = (mask) => [tf.sum(tf.mul(se, mask)).arraySync(), tf.sum(mask).arraySync() * 3];
      return { mse: tf.mean(se, [1, 2, 3]).arraySync(), edges: part(edge), flat: part(tf.sub(1, edge)) };
    });
    for (const m of r.mse) psnrs.push(db(m));
    for (const k of ['flat', 'edges']) for (const n of [0, 1]) sums[k][n] += r[k][n];
  }
  vqgan.dispose();
  return {
    psnr: psnrs.reduce((a, b) => a + b, 0) / psnrs.length,
    flat: db(sums.flat[0] / sums.flat[1]),
    edges: db(sums.edges[0] / sums.edges[1]),
  };
}

/** Median seconds for one image at the defaults (after one warm-up), on the current backend. */
async function timeOneImage() {
  const pipe = w.WuerstchenCombinedPipeline.fromPretrained(
    path.join(model, 'wuerstchen-prior'),
    path.join(model, 'wuerstchen'),
  );
  const times = [];
  for (let i = 0; i < 4; i++) {
    const t0 = Date.now();
    const out = await pipe(w.TINY_MODEL.examplePrompt, { ...callOpts, seed: i });
    out.images.dispose();
    if (i > 0) times.push((Date.now() - t0) / 1000);
  }
  pipe.release();
  return times.sort((a, b) => a - b)[1];
}

/** `accuracy`'s pictures from the captions alone: the whole pipeline. */
const fromCaptions = (pipe) => async (chunk, seed) => {
  const out = await pipe(
    chunk.map((it) => sceneCaption(it.scene)),
    { ...callOpts, seed },
  );
  const raws = await w.tensorToImages(out.images);
  out.images.dispose();
  return raws;
};

/** `accuracy`'s pictures redrawn by Stage B and A from each rendered scene's own compressor map (and its
 *  caption): what the model draws when the prior is perfect. */
const fromCompressorMaps = (variation) => async (chunk, seed) => {
  const rng = new w.Generator(seed);
  const side = callOpts.width;
  const raws = [];
  for (const [k, it] of chunk.entries()) {
    const image = { width: side, height: side, channels: 3, data: renderScene(it.scene, rng, { side }) };
    const out = await variation(image, {
      prompt: sceneCaption(it.scene),
      width: side,
      height: side,
      decoderNumInferenceSteps: callOpts.numInferenceSteps,
      seed: seed + k,
    });
    raws.push(...(await w.tensorToImages(out.images)));
    out.images.dispose();
  }
  return raws;
};

(async () => {
  tf.enableProdMode();
  await useBackend(backend, { quiet: true });
  const mainBackend = tf.getBackend();
  const t0 = Date.now();
  const pipe = w.WuerstchenCombinedPipeline.fromPretrained(
    path.join(model, 'wuerstchen-prior'),
    path.join(model, 'wuerstchen'),
  );
  const loadLoras = (p) => {
    for (const one of lora ? lora.split(',') : []) {
      const spec = parseLoraSpec(one);
      p.loadLora(spec.file, { scale: spec.scale });
    }
  };
  loadLoras(pipe);
  const { result, counts } = await accuracy(fromCaptions(pipe), 'prompt');
  pipe.release();
  let fromMaps = null;
  if (fs.existsSync(path.join(model, 'effnet'))) {
    const variation = w.WuerstchenVariationPipeline.fromPretrained(model);
    loadLoras(variation.pipe);
    fromMaps = await accuracy(fromCompressorMaps(variation), 'map');
    variation.release();
  }
  const psnr = stageAPsnr();
  const timing = {};
  for (const b of timeBackends.length ? timeBackends : [mainBackend]) {
    await useBackend(b, { quiet: true });
    timing[b] = await timeOneImage();
  }
  const summary = {
    kind: 'summary',
    model,
    ...(lora ? { lora } : {}),
    backend: mainBackend,
    steps: {
      prior: callOpts.priorNumInferenceSteps,
      decoder: callOpts.numInferenceSteps,
      prior_guidance: callOpts.priorGuidanceScale,
    },
    images: counts,
    accuracy: result,
    ...(fromMaps ? { accuracy_from_compressor_maps: fromMaps.result } : {}),
    stage_a_psnr_db: +psnr.psnr.toFixed(2),
    stage_a_psnr_flat_edges_db: [+psnr.flat.toFixed(2), +psnr.edges.toFixed(2)],
    seconds_per_image: Object.fromEntries(Object.entries(timing).map(([k, v]) => [k, +v.toFixed(2)])),
    peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024),
    eval_seconds: Math.round((Date.now() - t0) / 1000),
  };
  emit(summary);
  const pct = (v) => (v === null ? '  -  ' : `${(v * 100).toFixed(1).padStart(5)}%`);
  const table = (acc) => [
    `| split | n | ${ATTRS.join(' | ')} | all |`,
    `|---|---|${ATTRS.map(() => '---').join('|')}|---|`,
    ...Object.keys(acc.counts).map(
      (s) =>
        `| ${s} | ${acc.counts[s]} | ${ATTRS.map((a) => pct(acc.result[s][a])).join(' | ')} | ${pct(acc.result[s].all)} |`,
    ),
  ];
  const lines = [
    '',
    ...table({ result, counts }),
    ...(fromMaps
      ? [
          '',
          "Stage B and A from each scene's own compressor map (what a perfect prior would give):",
          '',
          ...table(fromMaps),
        ]
      : []),
    '',
    `Stage A PSNR on held-out images: ${psnr.psnr.toFixed(2)} dB (flat pixels ${psnr.flat.toFixed(1)} dB, edges ${psnr.edges.toFixed(1)} dB)`,
    `seconds per image (${callOpts.priorNumInferenceSteps} prior + ${callOpts.numInferenceSteps} decoder steps): ${Object.entries(
      timing,
    )
      .map(([k, v]) => `${k} ${v.toFixed(2)} s`)
      .join(', ')}; peak RSS ${summary.peak_rss_mb} MB`,
  ];
  process.stderr.write(lines.join('\n') + '\n');
})().catch((e) => {
  process.stderr.write(`eval-tiny: ${e.message}\n`);
  process.exit(1);
});
