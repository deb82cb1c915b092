#!/usr/bin/env node
/**
 * Times the native backend's kernels (docs/native.md has the numbers) or, with --block, times and
 * profiles a Würstchen Stage C block triple (ResBlock, TimestepBlock, AttnBlock at c=1536) forward+backward.
 *
 *   npm run build && node scripts/bench-native.js [--cpu] [--block]
 *
 * --cpu also times the stock cpu backend (several minutes; its matmul runs at about 1 GFLOP/s) except for
 * the conv gradients, whose cpu Conv2DBackpropFilter (0.02 GFLOP/s) would take about 10 minutes.
 */
'use strict';
const tf = require('@tensorflow/tfjs');
const { registerNativeBackend, nativeInfo } = require('../packages/core/dist/backends/native.js');

tf.enableProdMode(); // no "install the node backend" banner: this times the native backend on purpose

/** Median wall time in ms of f (tidied, outputs read back) after one warm-up; n runs, fewer if slow. */
function time(f, n = 5) {
  const once = () => {
    const t0 = process.hrtime.bigint();
    tf.tidy(() => [f()].flat().forEach((t) => t.dataSync()));
    return Number(process.hrtime.bigint() - t0) / 1e6;
  };
  const warm = once();
  const runs = warm > 20000 ? [warm] : Array.from({ length: n }, once);
  return { ms: runs.sort((a, b) => a - b)[Math.floor(runs.length / 2)], n: runs.length };
}

const run = (name, inputs, attrs) => tf.engine().runKernel(name, inputs, attrs);

/** [label, GFLOP (multiply-add = 2), function, 'native only'?]. "Gradients" run the two backprop kernels
 *  tfjs's gradient functions call, with a random upstream gradient. */
function cases() {
  const r = (shape) => tf.randomUniform(shape, -1, 1);
  const a = r([1536, 1536]),
    b = r([1536, 6144]),
    bt = r([6144, 1536]),
    g = r([1536, 6144]);
  const q = r([48, 576, 64]),
    k = r([48, 64, 1152]);
  const dx = r([2, 24, 24, 1536]),
    dwf = r([3, 3, 1536, 1]),
    ddy = r([2, 24, 24, 1536]);
  const cx = r([1, 64, 64, 320]),
    cw = r([3, 3, 320, 320]),
    cdy = r([1, 64, 64, 320]);
  const conv = { strides: 1, pad: 'same', dataFormat: 'NHWC', dimRoundingMode: undefined };
  const depth = { ...conv, dilations: 1 };
  return [
    ['matmul 1536x1536 @ 1536x6144', (2 * 1536 * 1536 * 6144) / 1e9, () => tf.matMul(a, b)],
    ['matmul, B stored transposed', (2 * 1536 * 1536 * 6144) / 1e9, () => tf.matMul(a, bt, false, true)],
    [
      'matmul gradients (dA, dB)',
      (4 * 1536 * 1536 * 6144) / 1e9,
      () => [tf.matMul(g, b, false, true), tf.matMul(a, g, true, false)],
    ],
    ['batched [48,576,64] @ [48,64,1152]', (2 * 48 * 576 * 64 * 1152) / 1e9, () => tf.matMul(q, k)],
    ['depthwise 3x3 [2,24,24,1536]', (2 * 2 * 24 * 24 * 1536 * 9) / 1e9, () => tf.depthwiseConv2d(dx, dwf, 1, 'same')],
    [
      'depthwise gradients (dx, dw)',
      (4 * 2 * 24 * 24 * 1536 * 9) / 1e9,
      () => [
        run('DepthwiseConv2dNativeBackpropInput', { dy: ddy, filter: dwf }, { ...depth, inputShape: dx.shape }),
        run('DepthwiseConv2dNativeBackpropFilter', { x: dx, dy: ddy }, { ...depth, filterShape: dwf.shape }),
      ],
    ],
    ['conv 3x3 [1,64,64,320] -> 320', (2 * 64 * 64 * 320 * 320 * 9) / 1e9, () => tf.conv2d(cx, cw, 1, 'same')],
    [
      'conv gradients (dx, dw)',
      (4 * 64 * 64 * 320 * 320 * 9) / 1e9,
      () => [
        run('Conv2DBackpropInput', { dy: cdy, filter: cw }, { ...conv, inputShape: cx.shape }),
        run('Conv2DBackpropFilter', { x: cx, dy: cdy }, { ...conv, filterShape: cw.shape }),
      ],
      'native only',
    ],
  ];
}

/** Stage C block triple (diffusers WuerstchenPrior layout), batch 2, 24x24, 77 text tokens; loss = mean square. */
function stageCBlock() {
  const c = 1536,
    heads = 24,
    r = (shape, s = 0.02) => tf.variable(tf.randomNormal(shape, 0, s));
  const lin = (i, o) => ({ w: r([i, o]), b: r([o]) });
  const p = {
    dw: r([3, 3, c, 1]),
    dwb: r([c]),
    fc1: lin(c, 4 * c),
    gamma: r([4 * c]),
    beta: r([4 * c]),
    fc2: lin(4 * c, c),
    mod: lin(64, 2 * c),
    kv: lin(c, c),
    q: lin(c, c),
    k: lin(c, c),
    v: lin(c, c),
    o: lin(c, c),
  };
  const x = tf.randomNormal([2, 24, 24, c]),
    t = tf.randomNormal([2, 64]),
    cond = tf.randomNormal([2, 77, c]);
  const dense = (h, l) =>
    tf.add(tf.matMul(h.reshape([-1, l.w.shape[0]]), l.w), l.b).reshape([...h.shape.slice(0, -1), -1]);
  const ln = (h) => {
    const m = tf.moments(h, -1, true);
    return h.sub(m.mean).div(m.variance.add(1e-6).sqrt());
  };
  const gelu = (h) => h.mul(tf.erf(h.div(Math.SQRT2)).add(1)).mul(0.5);
  const grn = (h) => {
    // h: [b, hw, 4c]
    const g = h.square().sum(1, true).sqrt();
    return h
      .mul(g.div(g.mean(-1, true).add(1e-6)))
      .mul(p.gamma)
      .add(p.beta)
      .add(h);
  };
  const attn = (h, kv) => {
    // [b, n, c], [b, m, c]
    const split = (z) => z.reshape([2, -1, heads, c / heads]).transpose([0, 2, 1, 3]);
    const [Q, K, V] = [split(dense(h, p.q)), split(dense(kv, p.k)), split(dense(kv, p.v))];
    const att = tf.softmax(tf.matMul(Q, K, false, true).mul(1 / Math.sqrt(c / heads)));
    return dense(tf.matMul(att, V).transpose([0, 2, 1, 3]).reshape([2, -1, c]), p.o);
  };
  const forward = () => {
    let h = tf.add(tf.depthwiseConv2d(x, p.dw, 1, 'same'), p.dwb).reshape([2, 576, c]);
    h = dense(grn(gelu(dense(ln(h), p.fc1))), p.fc2).add(x.reshape([2, 576, c])); // ResBlock
    const [a, b] = tf.split(dense(t, p.mod).reshape([2, 1, 2 * c]), 2, -1); // TimestepBlock
    h = h.mul(a.add(1)).add(b);
    const n = ln(h); // AttnBlock (self-attention over image + mapped text tokens)
    h = h.add(attn(n, tf.concat([n, dense(tf.relu(cond), p.kv)], 1)));
    return h.square().mean();
  };
  return () => Object.values(tf.variableGrads(forward).grads);
}

async function main() {
  if (!registerNativeBackend()) {
    console.error('native addon not built: npm run build:native');
    process.exit(1);
  }
  console.log('native:', nativeInfo(), 'OPENBLAS_CORETYPE =', process.env.OPENBLAS_CORETYPE ?? '(unset)');
  const backends = process.argv.includes('--block')
    ? []
    : process.argv.includes('--cpu')
      ? ['native', 'cpu']
      : ['native'];
  for (const backend of backends) {
    await tf.setBackend(backend);
    tf.tidy(() => {
      for (const [label, gflop, f, nativeOnly] of cases()) {
        if (nativeOnly && backend === 'cpu') continue;
        const { ms, n } = time(f);
        console.log(
          `${backend.padEnd(6)} ${label.padEnd(40)} ${ms.toFixed(1).padStart(9)} ms  ${((gflop / ms) * 1e3).toFixed(1).padStart(6)} GFLOP/s  (n=${n})`,
        );
      }
    });
  }
  if (process.argv.includes('--block')) {
    await tf.setBackend('native');
    const step = stageCBlock();
    const { ms, n } = time(step, 3);
    console.log(`native Stage C block forward+backward: ${ms.toFixed(0)} ms (n=${n})`);
    const profile = await tf.profile(() =>
      tf.tidy(() => {
        step();
        return tf.scalar(0);
      }),
    );
    const byKernel = {};
    for (const k of profile.kernels) byKernel[k.name] = (byKernel[k.name] ?? 0) + k.kernelTimeMs;
    const total = Object.values(byKernel).reduce((s, v) => s + v, 0);
    console.log(`kernel time ${total.toFixed(0)} ms, by kernel:`);
    for (const [name, t] of Object.entries(byKernel)
      .sort((u, v) => v[1] - u[1])
      .slice(0, 25)) {
      console.log(
        `  ${name.padEnd(40)} ${t.toFixed(1).padStart(8)} ms  ${((100 * t) / total).toFixed(1).padStart(5)}%`,
      );
    }
  }
}

main();
