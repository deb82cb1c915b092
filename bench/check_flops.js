#!/usr/bin/env node
'use strict';
/**
 * Cross-checks the analytic FLOP formulas of bench/flops.js against the matmul/conv kernels tfjs
 * actually runs (tf.profile), on reduced configurations so it finishes in seconds:
 *   node bench/check_flops.js [--backend cpu]
 * Exit code 1 when any formula is off by more than 0.1%.
 */
const path = require('path');
const tf = require('@tensorflow/tfjs');
const F = require('./flops');

const ROOT = path.join(__dirname, '..');
const core = require(path.join(ROOT, 'packages/core/dist/index.js'));
const common = require(path.join(ROOT, 'packages/wuerstchen/dist/models/common.js'));
const { WuerstchenPrior } = require(path.join(ROOT, 'packages/wuerstchen/dist/models/prior.js'));
const { WuerstchenDiffNeXt } = require(path.join(ROOT, 'packages/wuerstchen/dist/models/diffnext.js'));

async function counted(f) {
  const prof = await tf.profile(() => {
    f();
    return [];
  });
  return F.flopsFromProfile(prof.kernels).total;
}

async function main() {
  const i = process.argv.indexOf('--backend');
  await core.useBackend(i > 0 ? process.argv[i + 1] : 'cpu', { quiet: true });
  const cases = [];

  {
    const c = 96;
    const res = new common.ResBlock(c, 0, 3, 0);
    const ts = new common.TimestepBlock(c, 64);
    const attn = new common.AttnBlock(c, c, 4, true, 0);
    const x = tf.randomNormal([2, 6, 5, c]);
    const r = tf.randomNormal([2, 64]);
    const cond = tf.randomNormal([2, 77, c]);
    const got = await counted(() => tf.tidy(() => attn.forward(ts.forward(res.forward(x), r), cond)));
    cases.push(['stage C block (c 96, 6×5)', F.stagecBlock({ H: 6, W: 5, c }), got]);
  }
  {
    const cfg = { c_in: 16, c: 96, c_cond: 80, c_r: 64, depth: 3, nhead: 4 };
    const model = new WuerstchenPrior(cfg);
    const x = tf.randomNormal([2, 6, 6, 16]);
    const got = await counted(() =>
      tf.tidy(() => model.forward(x, tf.randomUniform([2]), tf.randomNormal([2, 77, 80]))),
    );
    cases.push(['prior (c 96, depth 3, 6×6)', F.prior({ H: 6, W: 6, ...cfg }), got]);
  }
  {
    const config = {
      c_hidden: [32, 64, 64, 96],
      nhead: [-1, 2, 4, 4],
      blocks: [2, 1, 3, 1],
      c_cond: 48,
      clip_embd: 40,
    };
    const model = new WuerstchenDiffNeXt(config);
    const x = tf.randomNormal([1, 32, 32, 4]);
    const got = await counted(() =>
      tf.tidy(() =>
        model.forward(x, tf.randomUniform([1]), tf.randomNormal([1, 6, 6, 16]), tf.randomNormal([1, 77, 40])),
      ),
    );
    cases.push(['decoder (reduced widths, 32×32)', F.diffnext({ H: 32, W: 32, config }), got]);
  }
  try {
    const { PaellaVQModel } = require(path.join(ROOT, 'packages/wuerstchen/dist/models/paella_vq.js'));
    const model = new PaellaVQModel({ embed_dim: 64, bottleneck_blocks: 3 });
    const z = tf.randomNormal([1, 8, 8, 4]);
    const got = await counted(() => tf.tidy(() => model.decode(z)));
    cases.push([
      'vqgan decode (embed 64, 3 blocks, 8×8)',
      F.vqDecode({ h: 8, w: 8, levels: [32, 64], bottleneck: 3 }),
      got,
    ]);
  } catch (e) {
    console.error(`vqgan: ${e.message}`);
  }

  let bad = 0;
  for (const [what, formula, got] of cases) {
    const rel = Math.abs(formula - got) / got;
    if (rel > 1e-3) bad++;
    console.log(
      `${rel > 1e-3 ? 'MISMATCH' : 'ok      '} ${what}: formula ${formula} FLOP, tf.profile ${got} FLOP (${(rel * 100).toFixed(3)}%)`,
    );
    if (got > formula && rel <= 1e-3)
      console.log(
        '         (the small excess: tfjs runs the antialiased bicubic effnet resize as matmuls; the formula leaves resizes out)',
      );
  }
  process.exit(bad ? 1 : 0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
