'use strict';
/**
 * The benchmark definitions, shared by bench/worker.js (which runs one of them in a fresh process)
 * and bench/run.js (which lists and filters them). The same names and shapes are in
 * bench/torch_reference.py, except those marked `torch: false` (the bundled tiny model exists only here).
 *
 * A definition:
 *   name, shape (string, as printed), flops (number | null: matmul/conv FLOPs of one run),
 *   kernels: kernels the backend must have (checked before anything is allocated),
 *   weightBytes(W): fp32 weight bytes, for the wasm 4 GiB heap check,
 *   probe: { what, flops, setup } — a smaller run used to estimate the full run's time before it
 *          is attempted (skipped when warm-up + 1 timed run would exceed --max-seconds),
 *   setup(tf, W) → { run(), dispose() } where run() does one timed unit of work.
 * W is the lazily loaded model code: { core, coreInternal, common, prior, diffnext, wuerstchen, train, paella }.
 */
const F = require('./flops');
const fs = require('fs');
const os = require('os');
const path = require('path');

const PRIOR_CONFIG = { c_in: 16, c: 1536, c_cond: 1280, c_r: 64, depth: 32, nhead: 24 };
const FP32 = 4;

/** Allocate every parameter of a module tree (random weights from each Parameter's init). */
function allocate(modules) {
  const vars = [];
  for (const m of modules) for (const [, p] of m.namedParameters()) vars.push(p.value);
  return vars;
}

function disposeAll(...things) {
  for (const t of things) {
    if (!t) continue;
    if (typeof t.dispose === 'function') t.dispose();
  }
}

/** run `f` in a tidy scope and free everything it made. */
function tidyRun(tf, f) {
  tf.tidy(() => {
    f();
    return undefined;
  });
}

// ---------------------------------------------------------------------------------------------
// Stage C block triple

function blockSetup(tf, W, { B = 2, H = 24, Wd = 24, c = 1536, nhead = 24, cR = 64, S = 77, backward = false } = {}) {
  const { ResBlock, TimestepBlock, AttnBlock } = W.common;
  const res = new ResBlock(c, 0, 3, 0);
  const ts = new TimestepBlock(c, cR);
  const attn = new AttnBlock(c, c, nhead, true, 0);
  const vars = allocate([res, ts, attn]);
  const x = tf.randomNormal([B, H, Wd, c]);
  const r = tf.randomNormal([B, cR]);
  const cond = tf.randomNormal([B, S, c]);
  const fwd = () => attn.forward(ts.forward(res.forward(x), r), cond);
  const run = backward
    ? () =>
        tidyRun(tf, () => {
          // loss = mean(out²); gradients of all 20 parameters (the input needs none), as the trainers take them
          W.coreInternal.variableGrads(() => tf.mean(tf.square(fwd())), vars);
        })
    : () => tidyRun(tf, fwd);
  return {
    run,
    dispose: () => {
      disposeAll(x, r, cond);
      [res, ts, attn].forEach((m) => m.dispose());
    },
  };
}

const blockProbe = (backward) => ({
  what: `Stage C block ${backward ? 'forward+backward' : 'forward'} at 8×8`,
  flops: (backward ? 3 : 1) * F.stagecBlock({ H: 8, W: 8 }),
  setup: (tf, W) => blockSetup(tf, W, { H: 8, Wd: 8, backward }),
});

// ---------------------------------------------------------------------------------------------
// conv 3×3 backward: the two kernels tfjs's conv2d gradient runs

function convBackwardSetup(tf, { n = 1, h = 64, w = 64, cin = 320, cout = 320 } = {}) {
  const x = tf.randomNormal([n, h, w, cin]);
  const filter = tf.randomNormal([3, 3, cin, cout], 0, 0.02);
  const dy = tf.randomNormal([n, h, w, cout]);
  const common = { strides: [1, 1], pad: 'same', dataFormat: 'NHWC', dimRoundingMode: undefined };
  return {
    run: () =>
      tidyRun(tf, () => {
        tf.engine().runKernel('Conv2DBackpropInput', { dy, filter }, { ...common, inputShape: x.shape });
        tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, { ...common, filterShape: filter.shape });
      }),
    dispose: () => disposeAll(x, filter, dy),
  };
}

// ---------------------------------------------------------------------------------------------
// full models

function priorModel(W) {
  return new W.prior.WuerstchenPrior(PRIOR_CONFIG);
}

function priorSetup(tf, W) {
  const model = priorModel(W);
  allocate([model]);
  const x = tf.randomNormal([2, 24, 24, 16]);
  const r = tf.randomUniform([2]);
  const c = tf.randomNormal([2, 77, 1280]);
  return {
    run: () => tidyRun(tf, () => model.forward(x, r, c)),
    dispose: () => {
      disposeAll(x, r, c);
      model.dispose();
    },
  };
}

function decoderSetup(tf, W, { latent, effnet }) {
  const model = new W.diffnext.WuerstchenDiffNeXt();
  allocate([model]);
  const x = tf.randomNormal([1, latent, latent, 4]);
  const r = tf.randomUniform([1]);
  const eff = tf.randomNormal([1, effnet, effnet, 16]);
  const clip = tf.randomNormal([1, 77, 1024]);
  return {
    // no effnet cache: each step resizes the effnet map 6 times, as diffusers does
    run: () => tidyRun(tf, () => model.forward(x, r, eff, clip)),
    dispose: () => {
      disposeAll(x, r, eff, clip);
      model.dispose();
    },
  };
}

function vqSetup(tf, W, { side }) {
  if (!W.paella)
    throw new Error(
      'PaellaVQModel is not built (packages/wuerstchen/dist/models/paella_vq.js missing; run npm run build)',
    );
  const model = new W.paella.PaellaVQModel();
  // decode touches only the up/out blocks, so only those are allocated
  allocate([model.upBlocks, model.outBlock]);
  const latents = tf.randomNormal([1, side, side, 4]);
  return {
    run: () => tidyRun(tf, () => model.decode(latents)),
    dispose: () => {
      latents.dispose();
      model.dispose();
    },
  };
}

/** `steps` model calls from `start` (not consumed) at t = 1, 1 − 1/steps, …, each output the next input,
 *  each intermediate freed once used; returns the last output. */
function denoise(tf, start, steps, step) {
  let z = tf.clone(start);
  for (let i = 0; i < steps; i++) {
    const next = tf.tidy(() => step(z, 1 - i / steps));
    z.dispose();
    z = next;
  }
  return z;
}

/**
 * A 1024² generation with 2 steps per stage: the prior (batch 2, as with guidance) and the decoder at the
 * published configs, then the VQGAN decode, all three resident as in the combined pipeline. The text encoders
 * are left out (torch's side has none either). For peak memory of the whole chain in the time limit.
 */
function generateSetup(tf, W, { steps = 2 } = {}) {
  const prior = priorModel(W);
  const decoder = new W.diffnext.WuerstchenDiffNeXt();
  const vq = new W.paella.PaellaVQModel();
  allocate([prior, decoder, vq.upBlocks, vq.outBlock]);
  const inputs = {
    x: tf.randomNormal([2, 24, 24, 16]),
    c: tf.randomNormal([2, 77, 1280]),
    latents: tf.randomNormal([1, 256, 256, 4]),
    clip: tf.randomNormal([1, 77, 1024]),
  };
  return {
    run: () => {
      const { x, c, latents, clip } = inputs;
      const effnet = denoise(tf, x, steps, (e, t) => prior.forward(e, tf.fill([2], t), c));
      const cond = tf.tidy(() => tf.slice(effnet, [0, 0, 0, 0], [1, 24, 24, 16]));
      effnet.dispose();
      const z = denoise(tf, latents, steps, (zt, t) => decoder.forward(zt, tf.fill([1], t), cond, clip));
      cond.dispose();
      tidyRun(tf, () => vq.decode(z));
      z.dispose();
    },
    dispose: () => {
      disposeAll(...Object.values(inputs));
      [prior, decoder, vq].forEach((m) => m.dispose());
    },
  };
}

/** The bundled tiny model (packages/wuerstchen/models/wuerstchen-tiny): one image at its native size and default
 *  steps, through the combined pipeline (text encoder, prior, decoder, VQGAN). */
async function tinySetup(W) {
  const w = W.wuerstchen;
  const pipe = w.WuerstchenCombinedPipeline.fromPretrained();
  const t = w.TINY_MODEL;
  const opts = {
    width: t.width,
    height: t.height,
    priorNumInferenceSteps: t.priorSteps,
    numInferenceSteps: t.decoderSteps,
    priorGuidanceScale: t.priorGuidance,
    seed: 1,
  };
  return {
    run: async () => (await pipe(t.examplePrompt, opts)).images?.dispose(),
    dispose: () => pipe.release(),
  };
}

/**
 * One optimizer update of the bundled tiny model's `stage` with its committed config (configs/tiny-{a,b,c}.json)
 * and batch, on 32 shapes pictures made for the run. Stage B decodes through the bundled VQGAN and Stage C encodes
 * through the bundled compressor. Every update sees the same batch, so after the warm-up the per-sample caches
 * of the frozen networks hit, as from a run's second epoch on.
 */
function tinyTrainSetup(W, stage) {
  const T = W.train;
  const root = path.join(__dirname, '..');
  const bundle = path.join(root, 'packages/wuerstchen/models/wuerstchen-tiny');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `wuerstchen-bench-${stage}-`));
  const data = path.join(tmp, 'data');
  T.makeShapes({ out: data, n: 32, seed: 1 });
  const config = T.loadConfig(path.join(root, 'configs', `tiny-${stage}.json`), stage);
  if (stage === 'b') config.vqgan = { ...config.vqgan, from: path.join(bundle, 'wuerstchen') };
  if (stage === 'c') config.effnet = { ...config.effnet, from: path.join(bundle, 'effnet') };
  const trainer = T.createTrainer({ config, data, out: path.join(tmp, 'run'), progress: 'none', log: () => {} }).init();
  // Stage B's first phase that trains the decoder (a compressor-only phase before it trains no decoder)
  const phase = config.phases.find((p) => !p.compressor_only);
  const batch = Array.from({ length: phase.batch_size }, () => trainer.dataset.next());
  return {
    run: () => trainer.update(batch, phase, phase.grad_accum),
    dispose: () => {
      trainer.dispose();
      fs.rmSync(tmp, { recursive: true, force: true });
    },
  };
}

// ---------------------------------------------------------------------------------------------

const MEASUREMENTS = [
  {
    name: 'matmul',
    shape: '[1536,1536] @ [1536,6144]',
    flops: 2 * 1536 * 1536 * 6144,
    setup: (tf) => {
      const a = tf.randomNormal([1536, 1536]);
      const b = tf.randomNormal([1536, 6144]);
      return { run: () => tidyRun(tf, () => tf.matMul(a, b)), dispose: () => disposeAll(a, b) };
    },
  },
  {
    name: 'bmm_attention',
    shape: '[48,576,64] @ [48,64,1152]',
    flops: 2 * 48 * 576 * 64 * 1152,
    setup: (tf) => {
      const a = tf.randomNormal([48, 576, 64]);
      const b = tf.randomNormal([48, 64, 1152]);
      return { run: () => tidyRun(tf, () => tf.matMul(a, b)), dispose: () => disposeAll(a, b) };
    },
  },
  {
    name: 'dwconv',
    shape: 'depthwise 3x3 [2,24,24,1536] (NHWC)',
    flops: 2 * 2 * 24 * 24 * 1536 * 9,
    setup: (tf) => {
      const x = tf.randomNormal([2, 24, 24, 1536]);
      const w = tf.randomNormal([3, 3, 1536, 1], 0, 0.3);
      return { run: () => tidyRun(tf, () => tf.depthwiseConv2d(x, w, 1, 'same')), dispose: () => disposeAll(x, w) };
    },
  },
  {
    name: 'conv3x3',
    shape: '[1,64,64,320] * 3x3x320x320 (NHWC, same)',
    flops: F.conv(1, 64, 64, 320, 320, 3),
    setup: (tf) => {
      const x = tf.randomNormal([1, 64, 64, 320]);
      const w = tf.randomNormal([3, 3, 320, 320], 0, 0.02);
      return { run: () => tidyRun(tf, () => tf.conv2d(x, w, 1, 'same')), dispose: () => disposeAll(x, w) };
    },
  },
  {
    name: 'conv3x3_backward',
    shape: 'grads wrt input and filter of [1,64,64,320] * 3x3x320x320',
    flops: 2 * F.conv(1, 64, 64, 320, 320, 3),
    kernels: ['Conv2DBackpropInput', 'Conv2DBackpropFilter'],
    probe: {
      what: 'the same two kernels at [1,8,8,320]',
      flops: 2 * F.conv(1, 8, 8, 320, 320, 3),
      setup: (tf) => convBackwardSetup(tf, { h: 8, w: 8 }),
    },
    setup: (tf) => convBackwardSetup(tf),
  },
  {
    name: 'stagec_block_fwd',
    shape: 'ResBlock+TimestepBlock+AttnBlock c=1536 nhead=24 c_r=64, x [2,24,24,1536], cond [2,77,1536]',
    flops: F.stagecBlock(),
    weightBytes: (W) => blockParams(W) * FP32,
    probe: blockProbe(false),
    setup: (tf, W) => blockSetup(tf, W),
  },
  {
    name: 'stagec_block_fwd_bwd',
    shape: 'same block, loss = mean(out^2), grads of all parameters',
    flops: 3 * F.stagecBlock(),
    flopsNote: 'forward+backward counted as 3x forward',
    kernels: ['DepthwiseConv2dNativeBackpropFilter', 'DepthwiseConv2dNativeBackpropInput'],
    weightBytes: (W) => blockParams(W) * FP32,
    probe: blockProbe(true),
    setup: (tf, W) => blockSetup(tf, W, { backward: true }),
  },
  {
    name: 'prior_step_full',
    shape: 'WuerstchenPrior(c_in 16, c 1536, c_cond 1280, c_r 64, depth 32, nhead 24), x [2,24,24,16], c [2,77,1280]',
    flops: F.prior(),
    weightBytes: (W) => priorModel(W).numParameters() * FP32,
    probe: { ...blockProbe(false), what: 'Stage C block forward at 8×8 (rate proxy)' },
    setup: (tf, W) => priorSetup(tf, W),
  },
  {
    name: 'decoder_step_512',
    shape: 'WuerstchenDiffNeXt (published config), x [1,128,128,4], effnet [1,12,12,16], clip [1,77,1024]',
    flops: F.diffnext({ H: 128, W: 128 }),
    weightBytes: (W) => new W.diffnext.WuerstchenDiffNeXt().numParameters() * FP32,
    probe: { ...blockProbe(false), what: 'Stage C block forward at 8×8 (rate proxy)' },
    setup: (tf, W) => decoderSetup(tf, W, { latent: 128, effnet: 12 }),
  },
  {
    name: 'decoder_step_1024',
    shape: 'WuerstchenDiffNeXt (published config), x [1,256,256,4], effnet [1,24,24,16], clip [1,77,1024]',
    flops: F.diffnext({ H: 256, W: 256 }),
    weightBytes: (W) => new W.diffnext.WuerstchenDiffNeXt().numParameters() * FP32,
    probe: { ...blockProbe(false), what: 'Stage C block forward at 8×8 (rate proxy)' },
    setup: (tf, W) => decoderSetup(tf, W, { latent: 256, effnet: 24 }),
  },
  {
    name: 'vqgan_decode_1024',
    shape: 'PaellaVQModel.decode, latents [1,256,256,4] -> image [1,1024,1024,3]',
    flops: F.vqDecode({ h: 256, w: 256 }),
    probe: {
      what: 'PaellaVQModel.decode of [1,32,32,4] latents',
      flops: F.vqDecode({ h: 32, w: 32 }),
      setup: (tf, W) => vqSetup(tf, W, { side: 32 }),
    },
    setup: (tf, W) => vqSetup(tf, W, { side: 256 }),
  },
  {
    name: 'generate_1024',
    shape: 'prior 2 steps [2,24,24,16] + decoder 2 steps [1,256,256,4] + VQGAN decode to [1,1024,1024,3], all resident',
    flops: null,
    weightBytes: (W) => (priorModel(W).numParameters() + new W.diffnext.WuerstchenDiffNeXt().numParameters()) * FP32,
    setup: (tf, W) => generateSetup(tf, W),
  },
  {
    name: 'tiny_generate',
    shape: 'bundled tiny model, one 64×64 image: 30 prior steps (guidance 4), 12 decoder steps, text encoder and VQGAN',
    flops: null,
    torch: false,
    setup: (tf, W) => tinySetup(W),
  },
  ...['a', 'b', 'c'].map((stage) => ({
    name: `tiny_train_step_${stage}`,
    shape: `one update of the bundled tiny model's Stage ${stage.toUpperCase()} (configs/tiny-${stage}.json, its batch)`,
    flops: null,
    torch: false,
    setup: (tf, W) => tinyTrainSetup(W, stage),
  })),
];

function blockParams(W) {
  const { ResBlock, TimestepBlock, AttnBlock } = W.common;
  return [new ResBlock(1536, 0, 3, 0), new TimestepBlock(1536, 64), new AttnBlock(1536, 1536, 24, true, 0)].reduce(
    (a, m) => a + m.numParameters(),
    0,
  );
}

module.exports = { MEASUREMENTS, PRIOR_CONFIG, blockSetup };
