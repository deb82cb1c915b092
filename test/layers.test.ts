import * as tf from '@tensorflow/tfjs';
import {
  Attention,
  BatchNorm2d,
  ChannelLayerNorm,
  Conv2d,
  ConvTranspose2d,
  Embedding,
  GlobalResponseNorm,
  HostTensor,
  LayerNorm,
  Linear,
  Module,
  Sequential,
  StateDictError,
} from '@wuerstchen/core';
import {
  gelu,
  pixelShuffle,
  pixelUnshuffle,
  quickGelu,
  replicatePad,
  resizeBicubicAA,
} from '@wuerstchen/core/internal';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

const rand = (shape: number[], seed = 1) => tf.randomNormal(shape, 0, 1, 'float32', seed);

/** Run `fn` a few times and check no tensor survives a call. */
function expectNoLeak(fn: () => tf.Tensor | tf.Tensor[]): void {
  const dispose = (r: tf.Tensor | tf.Tensor[]) => (Array.isArray(r) ? r.forEach((t) => t.dispose()) : r.dispose());
  dispose(fn()); // first call allocates lazily-initialised parameters
  const before = tf.memory().numTensors;
  for (let i = 0; i < 3; i++) dispose(fn());
  expect(tf.memory().numTensors).toBe(before);
}

describe('layers do not leak tensors over repeated forward calls', () => {
  const x = rand([2, 6, 5, 8]);
  const cases: [string, () => tf.Tensor][] = [];
  const lin = new Linear(8, 4);
  cases.push(['Linear', () => lin.forward(x)]);
  const conv = new Conv2d(8, 6, 3, { padding: 1 });
  cases.push(['Conv2d', () => conv.forward(x)]);
  const convS2 = new Conv2d(8, 6, 4, { stride: 2, padding: 1 });
  cases.push(['Conv2d stride 2', () => convS2.forward(x)]);
  const dw = new Conv2d(8, 8, 3, { padding: 1, groups: 8, paddingMode: 'replicate' });
  cases.push(['depthwise replicate', () => dw.forward(x)]);
  const grouped = new Conv2d(8, 4, 3, { padding: 1, groups: 4 });
  cases.push(['grouped m=2', () => grouped.forward(x)]);
  const convT = new ConvTranspose2d(8, 3, 4, { stride: 2, padding: 1 });
  cases.push(['ConvTranspose2d', () => convT.forward(x)]);
  const ln = new LayerNorm(8);
  cases.push(['LayerNorm', () => ln.forward(x)]);
  const cln = new ChannelLayerNorm(8);
  cases.push(['ChannelLayerNorm', () => cln.forward(x)]);
  const bn = new BatchNorm2d(8);
  cases.push(['BatchNorm2d eval', () => bn.forward(x)]);
  const grn = new GlobalResponseNorm(8);
  cases.push(['GlobalResponseNorm', () => grn.forward(x)]);
  const attn = new Attention(8, { heads: 2, dimHead: 4 });
  const tokens = rand([2, 5, 8], 2);
  cases.push(['Attention', () => attn.forward(tokens)]);
  const emb = new Embedding(10, 4);
  const ids = tf.tensor2d([[1, 2, 3]], [1, 3], 'int32');
  cases.push(['Embedding', () => emb.forward(ids)]);
  cases.push(['gelu', () => gelu(x)]);
  cases.push(['quickGelu', () => quickGelu(x)]);
  cases.push([
    'pixelShuffle',
    () => tf.tidy(() => pixelShuffle(pixelUnshuffle(rand([1, 4, 6, 3]) as tf.Tensor4D, 2), 2)),
  ]);
  cases.push(['resizeBicubicAA', () => resizeBicubicAA(x as tf.Tensor4D, [9, 3])]);
  test.each(cases)('%s', (_, fn) => expectNoLeak(fn));

  test('BatchNorm2d train mode updates statistics without leaking', () => {
    bn.train();
    expectNoLeak(() => bn.forward(x));
    expect(Number(bn.numBatchesTracked.value.dataSync()[0])).toBe(4);
    bn.eval();
  });
});

describe('Sequential frees each intermediate as soon as the next layer has used it', () => {
  /** A layer that adds 1 and records how many tensors are alive when it runs. */
  class Probe extends Module {
    alive: number[] = [];
    forward(h: tf.Tensor): tf.Tensor {
      this.alive.push(tf.memory().numTensors);
      return tf.add(h, 1);
    }
  }

  test('inside one tf.tidy, a chain of 4 layers holds at most one intermediate at a time', () => {
    const probes = [new Probe(), new Probe(), new Probe(), new Probe()];
    const seq = new Sequential(probes);
    const x = tf.ones([3]);
    const before = tf.memory().numTensors;
    const y = tf.tidy(() => seq.forward(x));
    // Each add creates a scalar 1 and its result; the previous result is gone by the time the next layer runs.
    const alive = probes.map((p) => p.alive[0] - before);
    expect(alive[0]).toBe(0);
    expect(Math.max(...alive.slice(1))).toBeLessThanOrEqual(alive[1]);
    expect(alive[3]).toBe(alive[1]);
    expect(Array.from(y.dataSync())).toEqual([5, 5, 5]);
    expect(x.isDisposed).toBe(false);
    tf.dispose([x, y]);
    expect(tf.memory().numTensors).toBe(before - 1);
  });

  test('gradients through a Sequential are unchanged by the early frees', () => {
    const [a, b] = [new Linear(4, 6), new Linear(6, 3)];
    const seq = new Sequential([a, b]);
    const x = rand([2, 4], 3);
    const vars = [a.weight.value, a.bias!.value, b.weight.value, b.bias!.value];
    const diffs = tf.tidy(() => {
      const viaSeq = tf.variableGrads(() => seq.forward(x).square().sum() as tf.Scalar, vars).grads;
      const direct = tf.variableGrads(() => b.forward(a.forward(x)).square().sum() as tf.Scalar, vars).grads;
      expect(Object.keys(viaSeq).length).toBe(4);
      return Object.keys(direct).map((k) => tf.max(tf.abs(tf.sub(viaSeq[k], direct[k]))).dataSync()[0]);
    });
    diffs.forEach((d) => expect(d).toBe(0));
    tf.dispose([x]);
    seq.dispose();
  });
});

describe('PyTorch semantics', () => {
  test('pixelUnshuffle uses torch channel order c·r² + i·r + j', () => {
    // x[n, h, w, c] = 100c + 10h + w, 2 channels, 4×4
    const vals: number[] = [];
    for (let h = 0; h < 4; h++) for (let w = 0; w < 4; w++) for (let c = 0; c < 2; c++) vals.push(100 * c + 10 * h + w);
    const y = pixelUnshuffle(tf.tensor4d(vals, [1, 4, 4, 2]), 2);
    const first = Array.from(y.slice([0, 0, 0, 0], [1, 1, 1, 8]).dataSync());
    expect(first).toEqual([0, 1, 10, 11, 100, 101, 110, 111]);
  });

  test('replicatePad copies edges', () => {
    const y = replicatePad(tf.tensor4d([1, 2, 3, 4], [1, 2, 2, 1]), 1);
    expect(Array.from(y.dataSync())).toEqual([1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4]);
  });

  test('ConvTranspose2d output size follows (in−1)·s − 2p + k', () => {
    const m = new ConvTranspose2d(3, 2, 4, { stride: 2, padding: 1 });
    expect(m.forward(rand([1, 5, 7, 3])).shape).toEqual([1, 10, 14, 2]);
    m.dispose();
  });

  test("GlobalResponseNorm has torch.norm's gradient: x/‖x‖, and 0 (not NaN) for a channel that is zero everywhere", () => {
    const grn = new GlobalResponseNorm(3);
    grn.gamma.value.assign(tf.ones([1, 1, 1, 3]));
    const x = tf.tensor4d([1, 0, 2, -1, 0, 3, 0.5, 0, 1, 2, 0, -2], [1, 2, 2, 3]);
    const w = tf.range(1, 13).reshape([1, 2, 2, 3]);
    const f = (xx: tf.Tensor) => tf.sum(tf.mul(grn.forward(xx), w));
    const gx = tf.grad(f)(x);
    const grads = tf.variableGrads(() => f(x) as tf.Scalar, [grn.gamma.value, grn.beta.value]).grads;
    for (const g of [gx, ...Object.values(grads)]) expect(Array.from(g.dataSync()).every(Number.isFinite)).toBe(true);
    // the zero channel only passes through the residual: d/dx = w
    expect(Array.from(gx.dataSync()).filter((_, i) => i % 3 === 1)).toEqual([2, 5, 8, 11]);
    // elsewhere the custom gradient equals finite differences
    const eps = 1e-2;
    const xv = Array.from(x.dataSync());
    for (const i of [0, 2, 5]) {
      const up = xv.slice();
      const dn = xv.slice();
      up[i] += eps;
      dn[i] -= eps;
      const fd =
        (f(tf.tensor4d(up, [1, 2, 2, 3])).dataSync()[0] - f(tf.tensor4d(dn, [1, 2, 2, 3])).dataSync()[0]) / (2 * eps);
      expect(gx.dataSync()[i]).toBeCloseTo(fd, 2);
    }
  });

  test('state dict round-trips through PyTorch layouts', () => {
    const a = new Conv2d(3, 4, 3);
    const b = new Conv2d(3, 4, 3);
    b.loadStateDict(a.stateDict());
    const x = rand([1, 5, 5, 3]);
    expect(tf.max(tf.abs(tf.sub(a.forward(x), b.forward(x)))).dataSync()[0]).toBe(0);
    expect(a.stateDict().get('weight')!.shape).toEqual([4, 3, 3, 3]);
  });
});

describe('loadStateDict errors', () => {
  class Two extends Module {
    readonly a = this.child('a', new Linear(2, 3));
    readonly b = this.child('b', new Linear(3, 1));
  }
  test('reports every missing, unexpected and mismatched key at once', () => {
    const src = new Two().stateDict();
    src.delete('a.bias');
    src.set('c.weight', { dtype: 'F32', shape: [1], data: new Float32Array(1) });
    src.set('b.weight', { dtype: 'F32', shape: [3, 1], data: new Float32Array(3) });
    let err: StateDictError | undefined;
    try {
      new Two().loadStateDict(src, { source: 'model.safetensors' });
    } catch (e) {
      err = e as StateDictError;
    }
    expect(err).toBeInstanceOf(StateDictError);
    expect(err!.missing).toEqual(['a.bias']);
    expect(err!.unexpected).toEqual(['c.weight']);
    expect(err!.mismatched).toEqual([{ key: 'b.weight', expected: [1, 3], found: [3, 1] }]);
    expect(err!.message).toBe(
      'model.safetensors: the weights do not match a Two with 4 tensors:\n' +
        '  missing keys (1): a.bias\n  unexpected keys (1): c.weight\n  b.weight: shape [3, 1], but the model needs [1, 3]',
    );
  });

  test('the loader and loadStateDict share one check: long lists are cut, a config is named', () => {
    const src = new Map<string, HostTensor>();
    for (let i = 0; i < 10; i++) src.set(`extra.${i}`, { dtype: 'F32', shape: [1], data: new Float32Array(1) });
    const two = new Two();
    for (const [k, t] of two.stateDict()) src.set(k, t);
    expect(() =>
      two.checkStateDict(src, { source: 'w.safetensors', against: 'config.json', preface: 'a first line' }),
    ).toThrow(
      'w.safetensors: the weights do not match config.json (a Two with 4 tensors):\n' +
        '  a first line\n  unexpected keys (10): extra.0, extra.1, extra.2, extra.3, extra.4, extra.5, extra.6, extra.7, ... (2 more)',
    );
    expect(two.checkStateDict(src, { ignore: (k) => k.startsWith('extra.') })).toEqual([
      'a.weight',
      'a.bias',
      'b.weight',
      'b.bias',
    ]);
  });

  test('wrong input width names the layer and shape', () => {
    expect(() => new Linear(4, 2).forward(rand([2, 3]))).toThrow(/Linear\(4→2\).*3 features/);
  });
});
