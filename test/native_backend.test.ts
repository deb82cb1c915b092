/**
 * The 'native' backend (packages/core/src/backends/native.ts) against tfjs's cpu backend: every
 * overridden kernel on random inputs, gradients, fallbacks, and tensor leaks. When the addon is not
 * built this file fails under CI (or WUERSTCHEN_REQUIRE_NATIVE=1) and otherwise reports it in one test.
 * The convolution tests run through oneDNN when the addon links it (WUERSTCHEN_REQUIRE_DNNL=1 insists on
 * that) and through OpenBLAS otherwise; they check which of the two ran.
 */
import { spawnSync } from 'child_process';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {
  nativeAvailable,
  nativeFeatures,
  nativeInfo,
  registerNativeBackend,
} from '../packages/core/src/backends/native';
import { FusedKernel } from '../packages/core/src/layers/fused';
import { adamwUpdate } from '../packages/core/src/adamw';
import { GlobalResponseNorm, gelu, layerNormLastAxis, multiHeadAttention } from '../packages/core/src/layers';

const required = Boolean(process.env.CI) || process.env.WUERSTCHEN_REQUIRE_NATIVE === '1';
const available = registerNativeBackend();
const ADDON = path.join(__dirname, '../packages/core/native/build/Release/wuerstchen_native.node');

if (!available) {
  test('native backend is unavailable (addon not built)', () => {
    const message =
      'native backend unavailable: packages/core/native/build/Release/wuerstchen_native.node is ' +
      'missing; apt-get install libopenblas-dev, then npm run build:native';
    if (required) throw new Error(`${message} (required because CI or WUERSTCHEN_REQUIRE_NATIVE=1 is set)`);
    console.log(message);
    expect(nativeAvailable()).toBe(false);
    expect(nativeInfo()).toBeNull();
    expect(registerNativeBackend()).toBe(false);
  });
} else {
  describe('native backend', () => nativeSuite());
}

function nativeSuite(): void {
  // The addon's exports are writable, so its calls can be counted to tell native runs from fallbacks.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const addon = require(ADDON) as Record<string, (...args: unknown[]) => unknown>;

  let seed = 1;
  /** Deterministic uniform values in [-1, 1). */
  function rand(shape: number[]): { shape: number[]; data: Float32Array } {
    const data = new Float32Array(tf.util.sizeFromShape(shape));
    for (let i = 0; i < data.length; i++) {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      data[i] = (seed / 2147483648) * 2 - 1;
    }
    return { shape, data };
  }
  const T = (r: { shape: number[]; data: Float32Array }) => tf.tensor(r.data, r.shape);

  async function runOn(
    backend: string,
    f: () => tf.Tensor | tf.Tensor[],
  ): Promise<{ shape: number[]; data: Float32Array }[]> {
    await tf.setBackend(backend);
    const out = tf.tidy(() => [f()].flat());
    const result = out.map((t) => ({ shape: t.shape, data: t.dataSync() as Float32Array }));
    tf.dispose(out);
    return result;
  }

  /** Runs f on cpu and on native, checks that the results agree, and returns how often the addon
   *  function `nativeFn` was called (one name: a count; several: a list of counts). */
  async function compare(f: () => tf.Tensor | tf.Tensor[], nativeFn: string): Promise<number>;
  async function compare(f: () => tf.Tensor | tf.Tensor[], nativeFn: string[]): Promise<number[]>;
  async function compare(f: () => tf.Tensor | tf.Tensor[], nativeFn: string | string[]): Promise<number | number[]> {
    const expected = await runOn('cpu', f);
    const spies = [nativeFn].flat().map((name) => jest.spyOn(addon, name));
    try {
      const actual = await runOn('native', f);
      expect(actual.length).toBe(expected.length);
      actual.forEach((a, i) => {
        expect(a.shape).toEqual(expected[i].shape);
        let scale = 1e-6,
          err = 0;
        expected[i].data.forEach((e, j) => {
          scale = Math.max(scale, Math.abs(e));
          err = Math.max(err, Math.abs(e - a.data[j]));
        });
        expect(err / scale).toBeLessThanOrEqual(1e-4);
      });
      const counts = spies.map((spy) => spy.mock.calls.length);
      return Array.isArray(nativeFn) ? counts : counts[0];
    } finally {
      spies.forEach((spy) => spy.mockRestore());
    }
  }

  /** The addon's convolution functions that oneDNN runs (none without it; WUERSTCHEN_DNNL picks them). */
  const dnnlKernels = nativeFeatures()?.dnnlKernels ?? [];
  /** Convolutions oneDNN has run in this process. */
  const dnnlRuns = () => nativeFeatures()?.dnnlStats?.runs ?? 0;
  /** Awaits f and checks that oneDNN ran exactly those of the addon calls `calls` that it is routed. */
  async function viaDnnl<R>(calls: string[], f: () => Promise<R>): Promise<R> {
    const before = dnnlRuns();
    const result = await f();
    expect(dnnlRuns() - before).toBe(calls.filter((name) => dnnlKernels.includes(name)).length);
    return result;
  }

  afterAll(() => tf.setBackend('cpu'));

  test('reports the BLAS library', () => {
    const info = nativeInfo();
    const features = nativeFeatures();
    console.log('native backend:', info, features);
    expect(info?.dnnl).toBe(features?.dnnl);
    if (process.env.WUERSTCHEN_REQUIRE_DNNL === '1') expect(features?.dnnl).toMatch(/^2\./);
    expect(nativeAvailable()).toBe(true);
    expect(info?.threads).toBeGreaterThanOrEqual(1);
    expect(info?.blas).toMatch(/OpenBLAS/);
    expect(typeof info?.coreType).toBe('string');
    const fused = Object.values(FusedKernel).length;
    expect(tf.getKernelsForBackend('native').length).toBe(tf.getKernelsForBackend('cpu').length + fused);
    expect(registerNativeBackend()).toBe(true);
  });

  describe('BatchMatMul', () => {
    const cases: [number[], number[], boolean, boolean][] = [
      [[7, 5], [5, 9], false, false],
      [[5, 7], [5, 9], true, false],
      [[7, 5], [9, 5], false, true],
      [[5, 7], [9, 5], true, true],
      [[33, 65], [65, 47], false, false],
      [[3, 7, 5], [3, 5, 9], false, false],
      [[3, 5, 7], [3, 9, 5], true, true],
      [[2, 3, 7, 5], [5, 9], false, false], // shared right operand
      [[2, 3, 5, 7], [9, 5], true, true],
      [[7, 5], [2, 3, 5, 9], false, false], // shared left operand
      [[1, 7, 5], [4, 5, 9], false, false],
      [[2, 3, 7, 5], [3, 5, 9], false, false], // broadcast over the leading dim
      [[4, 1, 7, 5], [1, 5, 9], false, false],
    ];
    test.each(cases)('%j @ %j transposeA=%s transposeB=%s', async (a, b, ta, tb) => {
      const [x, y] = [rand(a), rand(b)];
      expect(await compare(() => tf.matMul(T(x), T(y), ta, tb), 'matmul')).toBe(1);
    });

    test('batch broadcasting that tfjs does not pair as numpy does falls back to cpu', async () => {
      const [x, y] = [rand([2, 3, 4, 5]), rand([2, 1, 5, 6])];
      expect(await compare(() => tf.matMul(T(x), T(y)), 'matmul')).toBe(0);
    });

    test('gradients', async () => {
      for (const [ta, tb] of [
        [false, false],
        [true, false],
        [false, true],
        [true, true],
      ]) {
        const [x, y] = [rand(ta ? [3, 8, 6] : [3, 6, 8]), rand(tb ? [3, 5, 8] : [3, 8, 5])];
        const dy = rand([3, 6, 5]);
        const f = (p: tf.Tensor, q: tf.Tensor) => tf.matMul(p, q, ta, tb).mul(T(dy)).sum();
        expect(await compare(() => tf.grads(f)([T(x), T(y)]), 'matmul')).toBeGreaterThan(0);
      }
    });
  });

  describe('_FusedMatMul', () => {
    const activations = ['linear', 'relu', 'relu6', 'elu', 'sigmoid', 'leakyrelu', 'prelu'] as const;
    test.each(activations)('bias + %s', async (activation) => {
      const [x, y, bias, alpha] = [rand([2, 7, 5]), rand([5, 9]), rand([9]), rand([9])];
      const f = () =>
        tf.fused.matMul({
          a: T(x),
          b: T(y),
          bias: T(bias),
          activation,
          preluActivationWeights: T(alpha),
          leakyreluAlpha: 0.3,
        });
      expect(await compare(f, 'biasActivation')).toBe(1);
    });

    test('transposed operands, scalar bias, no activation', async () => {
      const [x, y, bias] = [rand([5, 7]), rand([9, 5]), rand([1])];
      const f = () => tf.fused.matMul({ a: T(x), b: T(y), transposeA: true, transposeB: true, bias: T(bias) });
      expect(await compare(f, 'matmul')).toBe(1);
    });

    test('a bias that is not per-channel uses the generic epilogue', async () => {
      const [x, y, bias, alpha] = [rand([7, 5]), rand([5, 9]), rand([7, 9]), rand([7, 1])];
      const f = () =>
        tf.fused.matMul({
          a: T(x),
          b: T(y),
          bias: T(bias),
          activation: 'prelu',
          preluActivationWeights: T(alpha),
        });
      expect(await compare(f, 'biasActivation')).toBe(0);
      expect(await compare(f, 'matmul')).toBe(1);
    });

    test('gradients through bias and relu', async () => {
      const [x, y, bias, dy] = [rand([6, 8]), rand([8, 5]), rand([5]), rand([6, 5])];
      const f = (p: tf.Tensor, q: tf.Tensor, r: tf.Tensor) =>
        tf.fused.matMul({ a: p, b: q, bias: r, activation: 'relu' }).mul(T(dy)).sum();
      expect(await compare(() => tf.grads(f)([T(x), T(y), T(bias)]), 'matmul')).toBeGreaterThan(0);
    });
  });

  type Shape4 = [number, number, number, number];
  type Pad = 'same' | 'valid' | number | [[number, number], [number, number], [number, number], [number, number]];
  const explicit: Pad = [
    [0, 0],
    [1, 2],
    [0, 1],
    [0, 0],
  ];

  /** Compares the x and w gradients of sum(conv(x, w) · g), g random, between backends; returns how often
   *  the two native backprop `kernels` ran, and checks that oneDNN ran those of them and of the `forward`
   *  call (the addon's forward function) that it is routed. */
  async function compareGrads(
    conv: (x: tf.Tensor4D, w: tf.Tensor4D) => tf.Tensor,
    xs: number[],
    fs: number[],
    kernels: [string, string],
    forward: string,
  ): Promise<number[]> {
    const [x, w] = [rand(xs), rand(fs)];
    const dy = tf.tidy(() => conv(tf.zeros(xs as Shape4) as tf.Tensor4D, tf.zeros(fs as Shape4) as tf.Tensor4D));
    const g = rand(dy.shape);
    dy.dispose();
    const f = (p: tf.Tensor, q: tf.Tensor) =>
      conv(p as tf.Tensor4D, q as tf.Tensor4D)
        .mul(T(g))
        .sum();
    return viaDnnl([forward, ...kernels], () => compare(() => tf.grads(f)([T(x), T(w)]), kernels));
  }

  describe('Conv2D', () => {
    const cases: [number[], number[], number | [number, number], Pad, number][] = [
      [[2, 9, 11, 3], [3, 3, 3, 5], 1, 'same', 1],
      [[2, 9, 11, 3], [3, 3, 3, 5], 2, 'same', 1],
      [[2, 9, 11, 3], [3, 3, 3, 5], 1, 'valid', 1],
      [[2, 9, 11, 3], [3, 3, 3, 5], 2, 'valid', 1],
      [[1, 10, 7, 4], [5, 3, 4, 6], [2, 1], explicit, 1],
      [[1, 10, 7, 4], [2, 2, 4, 3], 2, 'same', 1],
      [[1, 10, 7, 4], [3, 3, 4, 3], 1, 1, 1],
      [[2, 8, 8, 6], [1, 1, 6, 5], 1, 'same', 1], // pointwise: a plain sgemm
      [[2, 8, 8, 6], [1, 1, 6, 5], 2, 'valid', 1],
      [[1, 11, 9, 3], [3, 3, 3, 4], 1, 'same', 2], // dilated
      [[3, 12, 13, 5], [3, 3, 5, 7], 1, 'valid', 2],
      [[3, 10, 10, 5], [3, 3, 5, 7], 2, 'valid', 1], // the last input row and column are never read
      [[2, 7, 6, 4], [2, 2, 4, 3], 1, 'same', 1], // even filter: more padding bottom/right than top/left
      [[1, 36, 30, 512], [3, 3, 512, 3], 1, 'same', 1], // patch matrix built in two slices
      [[2, 16, 16, 64], [3, 3, 64, 48], 1, 'same', 1], // channels that fill oneDNN's vector blocks
    ];
    test.each(cases)('x %j filter %j strides %j pad %j dilation %d', async (xs, fs, strides, pad, dilation) => {
      const [x, w] = [rand(xs), rand(fs)];
      expect(
        await viaDnnl(['conv2d'], () =>
          compare(() => tf.conv2d(T(x) as tf.Tensor4D, T(w) as tf.Tensor4D, strides, pad, 'NHWC', dilation), 'conv2d'),
        ),
      ).toBe(1);
    });

    test('NCHW falls back to cpu', async () => {
      const [x, w] = [rand([1, 3, 6, 7]), rand([3, 3, 3, 2])];
      expect(
        await viaDnnl([], () =>
          compare(() => tf.conv2d(T(x) as tf.Tensor4D, T(w) as tf.Tensor4D, 1, 'same', 'NCHW'), 'conv2d'),
        ),
      ).toBe(0);
    });

    const gradCases: [number[], number[], number, Pad][] = [
      [[2, 9, 11, 3], [3, 3, 3, 5], 1, 'same'],
      [[2, 9, 11, 3], [3, 3, 3, 5], 2, 'same'],
      [[2, 9, 11, 3], [3, 3, 3, 5], 2, 'valid'],
      [[1, 10, 7, 4], [5, 3, 4, 6], 1, explicit],
      [[2, 8, 8, 6], [1, 1, 6, 5], 1, 'valid'],
      [[3, 10, 10, 5], [3, 3, 5, 7], 2, 'valid'], // unread last row and column get a zero gradient
      [[3, 9, 7, 5], [5, 5, 5, 4], 2, 'same'],
      [[2, 7, 6, 4], [2, 2, 4, 3], 1, 'same'],
      [[2, 16, 16, 64], [3, 3, 64, 48], 1, 'same'],
      [[4, 36, 30, 512], [3, 3, 512, 1], 2, 'same'], // patch slices that cross images
    ];
    test.each(gradCases)('gradients: x %j filter %j strides %d pad %j', async (xs, fs, strides, pad) => {
      const conv = (x: tf.Tensor4D, w: tf.Tensor4D) => tf.conv2d(x, w, strides, pad);
      expect(await compareGrads(conv, xs, fs, ['conv2dBackpropInput', 'conv2dBackpropFilter'], 'conv2d')).toEqual([
        1, 1,
      ]);
    });

    test.each([
      [1, 'same'],
      [2, 'same'],
      [2, 'valid'],
    ] as [number, 'same' | 'valid'][])('conv2dTranspose and its gradients, strides %d pad %s', async (strides, pad) => {
      const [x, w] = [rand([2, 5, 4, 6]), rand([3, 3, 4, 6])];
      const outShape: [number, number, number, number] =
        pad === 'same' ? [2, 5 * strides, 4 * strides, 4] : [2, (5 - 1) * strides + 3, (4 - 1) * strides + 3, 4];
      const g = rand(outShape);
      const f = (p: tf.Tensor, q: tf.Tensor) =>
        tf
          .conv2dTranspose(p as tf.Tensor4D, q as tf.Tensor4D, outShape, strides, pad)
          .mul(T(g))
          .sum();
      expect(
        await compare(
          () => tf.conv2dTranspose(T(x) as tf.Tensor4D, T(w) as tf.Tensor4D, outShape, strides, pad),
          'conv2dBackpropInput',
        ),
      ).toBe(1);
      expect(await compare(() => tf.grads(f)([T(x), T(w)]), 'conv2dBackpropFilter')).toBe(1);
    });
  });

  describe('FusedConv2D', () => {
    // oneDNN fuses a per-channel bias and every activation but prelu; the addon applies the rest.
    test.each(['linear', 'relu', 'relu6', 'elu', 'sigmoid', 'leakyrelu', 'prelu'] as const)(
      'bias + %s',
      async (activation) => {
        const [x, w, bias, alpha] = [rand([2, 7, 9, 3]), rand([3, 3, 3, 5]), rand([5]), rand([5])];
        const f = () =>
          tf.fused.conv2d({
            x: T(x) as tf.Tensor4D,
            filter: T(w) as tf.Tensor4D,
            strides: 2,
            pad: 'same',
            bias: T(bias),
            activation,
            preluActivationWeights: T(alpha),
            leakyreluAlpha: 0.3,
          });
        const biasActivation = jest.spyOn(addon, 'biasActivation');
        try {
          expect(await viaDnnl(['conv2d'], () => compare(f, 'conv2d'))).toBe(1);
          expect(biasActivation).not.toHaveBeenCalled();
        } finally {
          biasActivation.mockRestore();
        }
      },
    );

    test.each([
      ['a scalar bias', [1], undefined],
      ['no bias, scaled relu6 input', undefined, undefined],
      ['a [1, 1, 1, 5] bias and [5] prelu weights', [1, 1, 1, 5], [5]],
    ] as [string, number[] | undefined, number[] | undefined][])('%s', async (_name, biasShape, alphaShape) => {
      const [x, w] = [rand([3, 6, 5, 4]), rand([3, 3, 4, 5])];
      const [bias, alpha] = [biasShape && rand(biasShape), alphaShape && rand(alphaShape)];
      const f = () =>
        tf.fused.conv2d({
          x: T(x).mul(4) as tf.Tensor4D,
          filter: T(w) as tf.Tensor4D,
          strides: 1,
          pad: 'valid',
          bias: bias && T(bias),
          activation: alpha ? 'prelu' : 'relu6',
          preluActivationWeights: alpha && T(alpha),
        });
      expect(await viaDnnl(['conv2d'], () => compare(f, 'conv2d'))).toBe(1);
    });

    test('a bias that is not per-channel uses the generic epilogue', async () => {
      const [x, w, bias] = [rand([2, 5, 5, 3]), rand([3, 3, 3, 4]), rand([2, 1, 1, 4])];
      const f = () =>
        tf.fused.conv2d({
          x: T(x) as tf.Tensor4D,
          filter: T(w) as tf.Tensor4D,
          strides: 1,
          pad: 'same',
          bias: T(bias),
          activation: 'elu',
        });
      expect(await viaDnnl(['conv2d'], () => compare(f, 'conv2d'))).toBe(1);
    });

    test('gradients through bias and relu', async () => {
      const [x, w, bias, g] = [rand([2, 7, 9, 3]), rand([3, 3, 3, 5]), rand([5]), rand([2, 7, 9, 5])];
      const f = (p: tf.Tensor, q: tf.Tensor, r: tf.Tensor) =>
        tf.fused
          .conv2d({
            x: p as tf.Tensor4D,
            filter: q as tf.Tensor4D,
            strides: 1,
            pad: 'same',
            bias: r,
            activation: 'relu',
          })
          .mul(T(g))
          .sum();
      expect(await compare(() => tf.grads(f)([T(x), T(w), T(bias)]), 'conv2dBackpropFilter')).toBe(1);
    });
  });

  describe('DepthwiseConv2dNative', () => {
    const cases: [number[], number[], number, Pad, number][] = [
      [[2, 9, 10, 4], [3, 3, 4, 1], 1, 'same', 1],
      [[2, 9, 10, 4], [3, 3, 4, 1], 2, 'same', 1],
      [[2, 9, 10, 4], [3, 3, 4, 2], 1, 'valid', 1], // channel multiplier 2
      [[2, 9, 10, 4], [3, 3, 4, 2], 2, 'valid', 1],
      [[1, 10, 7, 5], [5, 3, 5, 1], 1, explicit, 1],
      [[1, 11, 9, 3], [3, 3, 3, 1], 1, 'same', 2], // dilated
      [[2, 24, 24, 32], [3, 3, 32, 1], 1, 'same', 1],
      [[3, 10, 10, 16], [3, 3, 16, 2], 2, 'valid', 1], // unread last row and column
      [[2, 7, 6, 8], [2, 2, 8, 1], 1, 'same', 1], // even filter
    ];
    test.each(cases)('x %j filter %j strides %d pad %j dilation %d', async (xs, fs, strides, pad, dilation) => {
      const [x, w] = [rand(xs), rand(fs)];
      const f = () => tf.depthwiseConv2d(T(x) as tf.Tensor4D, T(w) as tf.Tensor4D, strides, pad, 'NHWC', dilation);
      expect(await viaDnnl(['depthwise'], () => compare(f, 'depthwise'))).toBe(1);
    });

    test.each(cases.filter((c) => c[4] === 1))(
      'gradients: x %j filter %j strides %d pad %j',
      async (xs, fs, strides, pad) => {
        const conv = (x: tf.Tensor4D, w: tf.Tensor4D) => tf.depthwiseConv2d(x, w, strides, pad);
        expect(
          await compareGrads(conv, xs, fs, ['depthwiseBackpropInput', 'depthwiseBackpropFilter'], 'depthwise'),
        ).toEqual([1, 1]);
      },
    );

    test.each(['relu6', 'sigmoid', 'leakyrelu'] as const)('fused with bias + %s', async (activation) => {
      const [x, w, bias] = [rand([2, 9, 10, 4]), rand([3, 3, 4, 2]), rand([8])];
      const f = () =>
        tf.fused.depthwiseConv2d({
          x: T(x) as tf.Tensor4D,
          filter: T(w) as tf.Tensor4D,
          strides: 1,
          pad: 'same',
          bias: T(bias),
          activation,
          leakyreluAlpha: 0.1,
        });
      expect(await viaDnnl(['depthwise'], () => compare(f, 'depthwise'))).toBe(1);
    });
  });

  describe('elementwise', () => {
    const shapes: [number[], number[]][] = [
      [
        [3, 4, 5],
        [3, 4, 5],
      ],
      [[3, 4, 5], [5]], // per-channel
      [
        [3, 4, 5],
        [4, 1],
      ], // per-row
      [
        [3, 1, 5],
        [1, 4, 1],
      ], // both sides broadcast
      [
        [2, 3, 4, 5],
        [2, 1, 4, 1],
      ],
      [[], [3, 4]], // scalar
      [[1], [1]],
      [[3, 40000], [40000]], // rows longer than one task block
    ];
    const ops: [string, (a: tf.Tensor, b: tf.Tensor) => tf.Tensor][] = [
      ['add', tf.add],
      ['sub', tf.sub],
      ['mul', tf.mul],
      ['div', tf.div],
    ];
    test.each(ops)('%s with broadcasting, and its gradients', async (_name, op) => {
      for (const [as, bs] of shapes) {
        const [x, y, g] = [rand(as), rand(bs), rand(tf.backend_util.assertAndGetBroadcastShape(as, bs))];
        expect(await compare(() => op(T(x), T(y)), 'binary')).toBe(1);
        const f = (p: tf.Tensor, q: tf.Tensor) => op(p, q.add(3)).mul(T(g)).sum();
        expect(await compare(() => tf.grads(f)([T(x), T(y)]), 'binary')).toBeGreaterThan(0);
      }
    });

    test('int32 operands, and float32 casts that keep int32/bool storage, fall back to cpu', async () => {
      expect(await compare(() => tf.add(tf.tensor([1, 2, 3], [3], 'int32'), tf.scalar(4, 'int32')), 'binary')).toBe(0);
      const mask = () => tf.cast(tf.tensor([1, 0, 1, 1], [2, 2], 'bool'), 'float32');
      const ints = () => tf.cast(tf.tensor([1, 2, 3, 4], [2, 2], 'int32'), 'float32');
      expect(await compare(() => tf.mul(mask(), tf.ones([2, 2])), 'binary')).toBe(0);
      expect(await compare(() => tf.matMul(ints(), mask()), 'matmul')).toBe(0);
      expect(await compare(() => tf.softmax(ints()), 'softmax')).toBe(0);
    });

    const unaryOps: [string, (x: tf.Tensor) => tf.Tensor][] = [
      ['erf', tf.erf],
      ['exp', tf.exp],
      ['neg', tf.neg],
      ['square', tf.square],
      ['sqrt', (x) => tf.sqrt(x.abs())],
      ['rsqrt', (x) => tf.rsqrt(x.abs().add(0.1))],
      ['sigmoid', tf.sigmoid],
    ];
    test.each(unaryOps)('%s and its gradient', async (_name, op) => {
      const x = rand([3, 17, 5]);
      expect(await compare(() => op(T(x).mul(3)), 'unary')).toBe(1);
      expect(await compare(() => tf.grad((p: tf.Tensor) => op(p).sum())(T(x)), 'unary')).toBeGreaterThan(0);
    });

    test('exp at the edges of float32: overflow, underflow, subnormals, NaN', async () => {
      const xs = [NaN, Infinity, -Infinity, 0, 88.72, 88.8, -87, -100, -110, 1e-8];
      await tf.setBackend('native');
      const spy = jest.spyOn(addon, 'unary');
      const ys = tf.tidy(() => tf.exp(tf.tensor(xs)).dataSync());
      expect(spy).toHaveBeenCalledTimes(1);
      spy.mockRestore();
      xs.forEach((x, i) => {
        const want = Math.fround(Math.exp(Math.fround(x)));
        if (Number.isNaN(want) || !Number.isFinite(want) || want === 0) expect(ys[i]).toBe(want);
        else expect(Math.abs(ys[i] - want)).toBeLessThanOrEqual(want < 1.2e-38 ? 2e-45 : 2.4e-7 * want);
      });
    });

    test('softmax over the last axis, and its gradient', async () => {
      for (const shape of [[7], [3, 11], [2, 4, 33]]) {
        const [x, g] = [rand(shape), rand(shape)];
        expect(await compare(() => tf.softmax(T(x).mul(10)), 'softmax')).toBe(1);
        const f = (p: tf.Tensor) => tf.softmax(p).mul(T(g)).sum();
        expect(await compare(() => tf.grad(f)(T(x)), 'softmax')).toBe(1);
      }
    });
  });

  describe('fused kernels (layers/fused.ts) against the composed ops on cpu', () => {
    test('GELU and its gradient', async () => {
      const [x, g] = [rand([3, 7, 40]), rand([3, 7, 40])];
      expect(await compare(() => gelu(T(x).mul(4)), 'gelu')).toBe(1);
      const f = (p: tf.Tensor) => gelu(p.mul(4)).mul(T(g)).sum();
      expect(await compare(() => tf.grad(f)(T(x)), ['gelu', 'geluGrad', 'unary'])).toEqual([1, 1, 0]);
    });

    test('LayerNorm over the last axis and its gradient, rows far from zero mean', async () => {
      for (const shape of [
        [5, 33],
        [2, 3, 4, 1536],
        [1, 1],
      ]) {
        const [x, g] = [rand(shape), rand(shape)];
        const norm = (p: tf.Tensor) => layerNormLastAxis(p.mul(3).add(7), 1e-6);
        expect(await compare(() => norm(T(x)), 'layerNorm')).toBe(1);
        const f = (p: tf.Tensor) => norm(p).mul(T(g)).sum();
        expect(await compare(() => tf.grad(f)(T(x)), ['layerNorm', 'layerNormGrad'])).toEqual([1, 1]);
      }
    });

    test('attention softmax and its gradient', async () => {
      const [q, k, v, g] = [rand([2, 9, 8]), rand([2, 5, 8]), rand([2, 5, 8]), rand([2, 9, 8])];
      const attend = (p: tf.Tensor) => multiHeadAttention(p.mul(3), T(k), T(v), 2, 0.5);
      expect(await compare(() => attend(T(q)), ['softmax', 'softmaxGrad'])).toEqual([1, 0]);
      const f = (p: tf.Tensor) => attend(p).mul(T(g)).sum();
      expect(await compare(() => tf.grad(f)(T(q)), ['softmax', 'softmaxGrad'])).toEqual([1, 1]);
    });

    test('GlobalResponseNorm and its gradients (x, gamma, beta), a channel all zero included', async () => {
      const [b, h, w, c] = [2, 5, 3, 300];
      const grn = new GlobalResponseNorm(c);
      grn.gamma.value.assign(T(rand([1, 1, 1, c])));
      grn.beta.value.assign(T(rand([1, 1, 1, c])));
      const [x, g] = [rand([b, h, w, c]), rand([b, h, w, c])];
      for (let p = 0; p < h * w; p++) x.data[p * c + 11] = 0; // image 0, channel 11: ‖x‖ = 0
      expect(await compare(() => grn.forward(T(x)), 'grn')).toBe(1);
      const loss = (p: tf.Tensor) => grn.forward(p).mul(T(g)).sum() as tf.Scalar;
      const calls = ['grn', 'grnGrad'];
      expect(await compare(() => tf.grad(loss)(T(x)), calls)).toEqual([1, 1]);
      const params = [grn.gamma.value, grn.beta.value];
      const paramGrads = () => Object.values(tf.variableGrads(() => loss(T(x)), params).grads);
      expect(await compare(paramGrads, calls)).toEqual([1, 1]);
      grn.dispose();
    });

    test('AdamW update: parameter and both moments bit for bit as composed on cpu, with and without decay', async () => {
      const [p, m, v, g] = [rand([37, 5]), rand([37, 5]), rand([37, 5]), rand([37, 5])];
      for (const decay of [1, 1 - 1e-3 * 0.01]) {
        const s = {
          beta1: 0.9,
          beta2: 0.95,
          decay,
          stepSize: 1e-3 / (1 - 0.9 ** 3),
          bc2Sqrt: Math.sqrt(1 - 0.95 ** 3),
          eps: 1e-8,
        };
        const update = () => adamwUpdate(T(p), T(m), tf.abs(T(v)), T(g), s);
        const composed = await runOn('cpu', update);
        const spy = jest.spyOn(addon, 'adamw');
        const fused = await runOn('native', update);
        expect(spy).toHaveBeenCalledTimes(1);
        spy.mockRestore();
        expect(fused.map((t) => Array.from(t.data))).toEqual(composed.map((t) => Array.from(t.data)));
      }
    });
  });

  describe('layout and reductions', () => {
    test.each([
      [
        [2, 3, 4, 5],
        [0, 2, 1, 3],
      ],
      [
        [2, 3, 4, 5],
        [3, 2, 1, 0],
      ],
      [
        [6, 7],
        [1, 0],
      ],
      [
        [2, 1, 5],
        [1, 2, 0],
      ],
    ])('transpose %j by %j', async (shape, perm) => {
      const x = rand(shape);
      expect(await compare(() => tf.transpose(T(x), perm), 'stridedCopy')).toBe(1);
    });

    test('slice and split', async () => {
      const x = rand([4, 6, 10]);
      expect(await compare(() => tf.slice(T(x), [1, 2, 3], [2, 3, 4]), 'stridedCopy')).toBe(1);
      expect(await compare(() => tf.slice(T(x), [1, 0, 0], [2, 6, 10]), 'stridedCopy')).toBe(0); // a view
      expect(await compare(() => tf.split(T(x), [3, 7], 2), 'stridedCopy')).toBe(2);
      expect(await compare(() => tf.split(T(x), 2, 0), 'stridedCopy')).toBe(0);
      const long = rand([2, 40000]);
      expect(await compare(() => tf.slice(T(long), [0, 7], [2, 39990]), 'stridedCopy')).toBe(1);
      const f = (p: tf.Tensor) => tf.split(p, [2, 3, 5], -1)[1].square().sum();
      expect(await compare(() => tf.grad(f)(T(x)), 'stridedCopy')).toBeGreaterThan(0);
    });

    test('concat along each axis, with an empty part, and its gradient', async () => {
      expect(tf.getKernel('Concat', 'native')).toBeDefined();
      const a = rand([2, 3, 4]);
      const parts: [number[], number][] = [
        [[1, 3, 4], 0],
        [[2, 5, 4], 1],
        [[2, 0, 4], 1],
        [[2, 3, 7], 2],
        [[2, 3, 1], -1],
      ];
      for (const [shape, axis] of parts) {
        const b = rand(shape);
        expect(await compare(() => tf.concat([T(a), T(b), T(a)], axis), 'stridedCopy')).toBe(0);
      }
      const b = rand([2, 5, 4]);
      const f = (p: tf.Tensor) =>
        tf
          .concat([p, T(b)], 1)
          .square()
          .sum();
      expect(await compare(() => tf.grad(f)(T(a)), 'stridedCopy')).toBeGreaterThan(0);
    });

    test('pad: inner, outer and no axes padded, a constant, an empty input, and its gradient', async () => {
      expect(tf.getKernel('PadV2', 'native')).toBeDefined();
      const x = rand([2, 5, 4, 3]);
      const cases: [number[][], number][] = [
        [
          [
            [0, 0],
            [1, 1],
            [1, 1],
            [0, 0],
          ],
          0,
        ], // a conv's zero padding (NHWC)
        [
          [
            [0, 0],
            [0, 2],
            [3, 0],
            [0, 0],
          ],
          -1.5,
        ],
        [
          [
            [1, 0],
            [0, 0],
            [0, 0],
            [2, 1],
          ],
          0,
        ], // the innermost axis
        [
          [
            [0, 0],
            [0, 0],
            [0, 0],
            [0, 0],
          ],
          7,
        ],
      ];
      for (const [paddings, value] of cases)
        expect(await compare(() => tf.pad(T(x), paddings as [number, number][], value), 'stridedCopy')).toBe(0);
      expect(
        await compare(
          () =>
            tf.pad(
              tf.zeros([2, 0, 3]),
              [
                [1, 1],
                [0, 0],
                [2, 0],
              ],
              4,
            ),
          'stridedCopy',
        ),
      ).toBe(0);
      const f = (p: tf.Tensor) =>
        tf
          .pad(p, [
            [0, 0],
            [1, 1],
            [1, 1],
            [0, 0],
          ])
          .square()
          .sum();
      // the gradient is a slice of the inner rows, which the native strided copy runs
      expect(await compare(() => tf.grad(f)(T(x)), 'stridedCopy')).toBeGreaterThan(0);
    });

    test('unsorted segment sum: repeated, missing and out-of-range ids, and the gradient of a gather', async () => {
      const x = rand([6, 3, 2]);
      const ids = [4, 0, 4, -1, 9, 2]; // segment 1 and 3 get nothing; -1 and 9 are dropped
      expect(await compare(() => tf.unsortedSegmentSum(T(x), tf.tensor1d(ids, 'int32'), 5), 'segmentSum')).toBe(1);
      const table = rand([7, 4]);
      const f = (p: tf.Tensor) =>
        tf
          .gather(p, tf.tensor1d([3, 1, 3, 6, 3], 'int32'))
          .square()
          .sum();
      expect(await compare(() => tf.grad(f)(T(table)), 'segmentSum')).toBe(1);
    });

    const reductions: [number[], number | number[], boolean][] = [
      [[3, 4, 50], -1, false],
      [[3, 4, 50], [1, 2], true],
      [[3, 4, 50], 0, false],
      [[3, 4, 2000], [0, 1], true], // inner dim wider than one accumulation block
      [[3, 4, 5], 1, true],
      [[3, 4, 5], [0, 2], false], // not one run: transposed first
      [[3, 1, 4, 5], [1, 2], false],
      [[2, 3, 4, 5], [0, 1, 2, 3], false],
    ];
    test.each(reductions)('sum and mean of %j over %j (keepDims %s)', async (shape, axis, keepDims) => {
      const x = rand(shape);
      expect(await compare(() => [tf.sum(T(x), axis, keepDims), tf.mean(T(x), axis, keepDims)], 'reduceSum')).toBe(2);
    });
  });

  describe('oneDNN', () => {
    const run = () =>
      tf.tidy(() => tf.conv2d(T(rand([1, 5, 5, 3])) as tf.Tensor4D, T(rand([3, 3, 3, 2])) as tf.Tensor4D, 1, 'same'));
    const stats = () => nativeFeatures()?.dnnlStats;

    (dnnlKernels.includes('conv2d') ? test : test.skip)(
      'a shape builds its primitive once, and the cache is bounded',
      async () => {
        await tf.setBackend('native');
        const before = stats()!;
        tf.dispose(run());
        tf.dispose(run());
        expect(stats()!.misses - before.misses).toBeLessThanOrEqual(1); // built here, or by an earlier test
        expect(stats()!.hits - before.hits).toBeGreaterThanOrEqual(1);
        // capacity + 8 new shapes evict the least recently used, which is then built again
        const capacity = stats()!.capacity;
        for (let h = 1; h <= capacity + 8; h++) {
          tf.dispose(
            tf.tidy(() =>
              tf.conv2d(tf.ones([1, h, 1, 1]) as tf.Tensor4D, tf.ones([1, 1, 1, 1]) as tf.Tensor4D, 1, 'valid'),
            ),
          );
        }
        expect(stats()!.cached).toBe(capacity);
        const misses = stats()!.misses;
        tf.dispose(run());
        expect(stats()!.misses).toBe(misses + 1);
      },
    );

    test('WUERSTCHEN_DNNL=0 switches oneDNN off at run time and the OpenBLAS kernels agree', () => {
      const script = `const a = require(${JSON.stringify(ADDON)}); const f = a.features();
        const x = new Float32Array(2 * 6 * 5 * 3).map((_, i) => Math.sin(i)), w = new Float32Array(27 * 4).map((_, i) => Math.cos(i));
        const y = new Float32Array(2 * 6 * 5 * 4); a.conv2d(x, w, y, [2, 6, 5, 3, 6, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1]);
        console.log(JSON.stringify({ f, y: Array.from(y) }));`;
      const runWith = (value: string | undefined) => {
        const env = { ...process.env };
        if (value === undefined) delete env.WUERSTCHEN_DNNL;
        else env.WUERSTCHEN_DNNL = value;
        const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env });
        expect(r.stderr).toBe('');
        return JSON.parse(r.stdout) as { f: ReturnType<typeof nativeFeatures> & object; y: number[] };
      };
      const off = runWith('0');
      expect(off.f.dnnl).toBeNull();
      expect(off.f.dnnlKernels).toEqual([]);
      const on = runWith(undefined);
      if (on.f.dnnlLinked) expect(on.f.dnnl).toMatch(/^\d+\.\d+\.\d+$/);
      else expect(on.f.dnnl).toBeNull();
      const scale = Math.max(...off.y.map(Math.abs));
      on.y.forEach((v, i) => expect(Math.abs(v - off.y[i]) / scale).toBeLessThan(1e-5));
    });
  });

  test('no tensors leak over repeated forward and backward passes', async () => {
    await tf.setBackend('native');
    const [x, w, dw, a, b, bias] = [
      T(rand([2, 8, 8, 6])),
      T(rand([3, 3, 6, 4])),
      T(rand([3, 3, 6, 1])),
      T(rand([2, 6, 5])),
      T(rand([5, 7])),
      T(rand([6, 1])),
    ];
    const grn = new GlobalResponseNorm(6);
    const step = () =>
      tf.tidy(() => {
        const f = (p: tf.Tensor, q: tf.Tensor, r: tf.Tensor, s: tf.Tensor) => {
          const c = tf.fused.conv2d({
            x: p as tf.Tensor4D,
            filter: q as tf.Tensor4D,
            strides: 1,
            pad: 'same',
            activation: 'relu',
          });
          const d = tf.depthwiseConv2d(p as tf.Tensor4D, r as tf.Tensor4D, 2, 'same');
          const m = tf.fused.matMul({ a: s, b, bias, activation: 'elu' }); // generic epilogue path
          const n = gelu(layerNormLastAxis(c, 1e-6)).sum().add(grn.forward(d).sum());
          return c.sum().add(d.sum()).add(m.sum()).add(n);
        };
        return tf.grads(f)([x, w, dw, a]);
      });
    tf.dispose(step());
    const before = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) tf.dispose(step());
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([x, w, dw, a, b, bias]);
    grn.dispose();
  });
}
