/**
 * The 'native' tfjs backend: tfjs's cpu backend (tensors live in ordinary JS memory, every cpu kernel
 * works) with the hot kernels replaced by a C++ addon over OpenBLAS, and oneDNN for the convolutions when
 * the build found it (packages/core/native, built by packages/core/scripts/build-native.js at install).
 * See docs/native.md.
 */
import * as path from 'path';
import * as fs from 'fs';
import * as tf from '@tensorflow/tfjs';
import { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import { FusedKernel } from '../layers/fused';

/** Functions of wuerstchen_native.node (native/src/addon.cc). Outputs are zero-filled arrays from JS. */
interface Addon {
  matmul(
    a: Float32Array,
    b: Float32Array,
    out: Float32Array,
    batch: number,
    batchA: number,
    batchB: number,
    m: number,
    n: number,
    k: number,
    transposeA: boolean,
    transposeB: boolean,
  ): void;
  biasActivation(
    y: Float32Array,
    channels: number,
    bias: Float32Array | null,
    activation: number,
    alpha: Float32Array | null,
    leakyAlpha: number,
  ): void;
  conv2d: FusedConvFn;
  conv2dBackpropInput: ConvFn;
  conv2dBackpropFilter: ConvFn;
  depthwise: FusedConvFn;
  depthwiseBackpropInput: ConvFn;
  depthwiseBackpropFilter: ConvFn;
  binary(
    op: number,
    a: Float32Array,
    b: Float32Array,
    out: Float32Array,
    shape: number[],
    aStrides: number[],
    bStrides: number[],
  ): void;
  unary(op: number, x: Float32Array, out: Float32Array): void;
  softmax(x: Float32Array, out: Float32Array, cols: number): void;
  softmaxGrad(dy: Float32Array, y: Float32Array, dx: Float32Array, cols: number): void;
  gelu(x: Float32Array, y: Float32Array): void;
  geluGrad(dy: Float32Array, x: Float32Array, dx: Float32Array): void;
  layerNorm(x: Float32Array, y: Float32Array, cols: number, eps: number): void;
  layerNormGrad(dy: Float32Array, x: Float32Array, dx: Float32Array, cols: number, eps: number): void;
  grn(
    x: Float32Array,
    gamma: Float32Array,
    beta: Float32Array,
    y: Float32Array,
    batch: number,
    positions: number,
    channels: number,
  ): void;
  grnGrad(
    dy: Float32Array,
    x: Float32Array,
    gamma: Float32Array,
    dx: Float32Array,
    dgamma: Float32Array,
    batch: number,
    positions: number,
    channels: number,
  ): void;
  /** scalars: [β1, 1−β1, β2, 1−β2, decay, stepSize, √bc2, eps] */
  adamw(
    p: Float32Array,
    m: Float32Array,
    v: Float32Array,
    g: Float32Array,
    pOut: Float32Array,
    mOut: Float32Array,
    vOut: Float32Array,
    scalars: Float32Array,
  ): void;
  stridedCopy(x: Float32Array, out: Float32Array, offset: number, shape: number[], strides: number[]): void;
  reduceSum(x: Float32Array, out: Float32Array, outer: number, mid: number, inner: number, scale: number): void;
  segmentSum(x: Float32Array, ids: Int32Array, out: Float32Array, rows: number, inner: number, segments: number): void;
  info(): { threads: number; config: string; coreName: string };
  features(): NativeFeatures;
}

/** (in0, in1, out, geometry) where geometry is the output of `geometry()` below. */
type ConvFn = (in0: Float32Array, in1: Float32Array, out: Float32Array, geometry: number[]) => void;
/** A forward convolution, optionally followed by the epilogue y = activation(y + bias) (see EpilogueArgs). */
type FusedConvFn = (
  x: Float32Array,
  filter: Float32Array,
  y: Float32Array,
  geometry: number[],
  ...epilogue: EpilogueArgs | []
) => void;
/** The addon's epilogue arguments: bias | null, activation code, prelu alpha | null, leaky-relu alpha. */
type EpilogueArgs = [Float32Array | null, number, Float32Array | null, number];

/** What the addon was built with. */
export interface NativeFeatures {
  blas: 'OpenBLAS';
  /** oneDNN version running the convolutions, e.g. '2.6.3'; null when not built in or WUERSTCHEN_DNNL=0. */
  dnnl: string | null;
  /** Whether the addon links oneDNN (true even when WUERSTCHEN_DNNL=0 switched it off at run time). */
  dnnlLinked: boolean;
  /** The addon's convolution functions that oneDNN runs (WUERSTCHEN_DNNL: unset = those measured faster
   *  than OpenBLAS, `all`, or 0 = none), e.g. ['conv2d', 'conv2dBackpropInput']. */
  dnnlKernels: string[];
  /** oneDNN primitives cached (at most `capacity`, least recently used evicted), lookups that found (hits) or
   *  built (misses) theirs, and convolutions oneDNN ran; null without oneDNN. */
  dnnlStats: { cached: number; capacity: number; hits: number; misses: number; runs: number } | null;
}

export interface NativeInfo {
  /** Threads OpenBLAS (and the addon's own loops) use; OPENBLAS_NUM_THREADS or all cores. */
  threads: number;
  /** e.g. 'OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY Cooperlake MAX_THREADS=64'. */
  blas: string;
  /** OpenBLAS kernel set in use, e.g. 'Haswell' or 'SkylakeX' (OPENBLAS_CORETYPE can force it). */
  coreType: string;
  /** oneDNN version behind the convolutions, or null (OpenBLAS im2col + sgemm). */
  dnnl: string | null;
}

/** Same place relative to src/backends/native.ts (ts-jest) and dist/backends/native.js (tsc). */
const ADDON_PATH = path.join(__dirname, '..', '..', 'native', 'build', 'Release', 'wuerstchen_native.node');

let addon: Addon | null | undefined;

function loadAddon(): Addon | null {
  if (addon === undefined) {
    addon = null;
    if (fs.existsSync(ADDON_PATH)) {
      try {
        // eslint-disable-next-line @typescript-eslint/no-require-imports -- a .node addon loads only through require
        addon = require(ADDON_PATH) as Addon;
      } catch (e) {
        console.warn(`native backend: cannot load ${ADDON_PATH}: ${(e as Error).message}`);
      }
    }
  }
  return addon;
}

/** Whether the compiled addon is present and loads. */
export function nativeAvailable(): boolean {
  return loadAddon() !== null;
}

/** The BLAS library behind the native backend, or null when the addon is unavailable. */
export function nativeInfo(): NativeInfo | null {
  const native = loadAddon();
  if (!native) return null;
  const info = native.info();
  return { threads: info.threads, blas: info.config, coreType: info.coreName, dnnl: native.features().dnnl };
}

/** What the addon was built with, or null when it is unavailable. */
export function nativeFeatures(): NativeFeatures | null {
  return loadAddon()?.features() ?? null;
}

/**
 * Registers the 'native' backend (a MathBackendCPU with every cpu kernel, the hot ones replaced by
 * native ones) and returns true; returns false, registering nothing, when the addon is not built.
 * Select it with `await tf.setBackend('native')`.
 */
export function registerNativeBackend(): boolean {
  const native = loadAddon();
  if (!native) return false;
  if (tf.findBackendFactory('native')) return true;
  tf.registerBackend('native', () => new MathBackendCPU());
  for (const config of tf.getKernelsForBackend('cpu')) tf.registerKernel({ ...config, backendName: 'native' });
  for (const config of nativeKernels(native)) {
    tf.unregisterKernel(config.kernelName, 'native');
    tf.registerKernel(config);
  }
  for (const config of fusedKernels(native)) tf.registerKernel(config);
  return true;
}

// ---------------------------------------------------------------------------------------------------
// Kernels. Each returns null for a case it does not handle, and the cpu kernel runs instead.

/** Kernel arguments; optional inputs (bias, preluActivationWeights) may be undefined. */
type Inputs = Record<string, tf.TensorInfo>;
type Args = { inputs: Inputs; backend: MathBackendCPU; attrs: Record<string, unknown> };
type NativeKernel = (args: Args, native: Addon) => tf.TensorInfo | tf.TensorInfo[] | null;

function nativeKernels(native: Addon): tf.KernelConfig[] {
  const kernels: Record<string, NativeKernel> = {
    BatchMatMul: batchMatMul,
    _FusedMatMul: fusedMatMul,
    Conv2D: conv2d,
    FusedConv2D: fusedConv2d,
    Conv2DBackpropInput: conv2dBackpropInput,
    Conv2DBackpropFilter: conv2dBackpropFilter,
    DepthwiseConv2dNative: depthwise,
    FusedDepthwiseConv2D: fusedDepthwise,
    DepthwiseConv2dNativeBackpropInput: depthwiseBackpropInput,
    DepthwiseConv2dNativeBackpropFilter: depthwiseBackpropFilter,
    ...Object.fromEntries(BINARY_OPS.map((name, op) => [name, binary(op)])),
    ...Object.fromEntries(UNARY_OPS.map((name, op) => [name, unary(op)])),
    Softmax: softmax,
    Transpose: transpose,
    Slice: slice,
    SplitV: splitV,
    Concat: concat,
    PadV2: padV2,
    Sum: (args, native) => reduceSum(args, native, false),
    Mean: (args, native) => reduceSum(args, native, true),
    UnsortedSegmentSum: unsortedSegmentSum,
  };
  return Object.entries(kernels).map(([kernelName, kernel]) => {
    const cpu = cpuKernel(kernelName);
    const kernelFunc = (args: Args) => kernel(args, native) ?? cpu(args as never);
    return { kernelName, backendName: 'native', kernelFunc: kernelFunc as unknown as tf.KernelFunc };
  });
}

/** The kernels of layers/fused.ts, which have no cpu counterpart: the layers call them only where registered. */
function fusedKernels(native: Addon): tf.KernelConfig[] {
  const lastAxis = (t: tf.TensorInfo) => t.shape[t.shape.length - 1];
  const kernels: Record<string, (args: Args) => tf.TensorInfo | tf.TensorInfo[]> = {
    [FusedKernel.Softmax]: ({ inputs: { logits }, backend }) =>
      output(backend, logits.shape, (y) => {
        if (y.length) native.softmax(float32(backend, logits), y, lastAxis(logits));
      }),
    [FusedKernel.SoftmaxGrad]: ({ inputs: { dy, y }, backend }) =>
      output(backend, y.shape, (dx) => {
        if (dx.length) native.softmaxGrad(float32(backend, dy), float32(backend, y), dx, lastAxis(y));
      }),
    [FusedKernel.Gelu]: ({ inputs: { x }, backend }) =>
      output(backend, x.shape, (y) => native.gelu(float32(backend, x), y)),
    [FusedKernel.GeluGrad]: ({ inputs: { dy, x }, backend }) =>
      output(backend, x.shape, (dx) => native.geluGrad(float32(backend, dy), float32(backend, x), dx)),
    [FusedKernel.LayerNorm]: ({ inputs: { x }, backend, attrs }) =>
      output(backend, x.shape, (y) => {
        if (y.length) native.layerNorm(float32(backend, x), y, lastAxis(x), attrs.eps as number);
      }),
    [FusedKernel.LayerNormGrad]: ({ inputs: { dy, x }, backend, attrs }) =>
      output(backend, x.shape, (dx) => {
        if (dx.length)
          native.layerNormGrad(float32(backend, dy), float32(backend, x), dx, lastAxis(x), attrs.eps as number);
      }),
    [FusedKernel.GlobalResponseNorm]: ({ inputs: { x, gamma, beta }, backend }) =>
      output(backend, x.shape, (y) => {
        const [b, p, c] = grnSizes(FusedKernel.GlobalResponseNorm, x, gamma, beta);
        native.grn(float32(backend, x), float32(backend, gamma), float32(backend, beta), y, b, p, c);
      }),
    [FusedKernel.GlobalResponseNormGrad]: ({ inputs: { dy, x, gamma }, backend }) => {
      const [b, p, c] = grnSizes(FusedKernel.GlobalResponseNormGrad, x, gamma);
      const dx = new Float32Array(b * p * c);
      const dgamma = new Float32Array(c);
      native.grnGrad(float32(backend, dy), float32(backend, x), float32(backend, gamma), dx, dgamma, b, p, c);
      return [backend.makeTensorInfo(x.shape, 'float32', dx), backend.makeTensorInfo([1, 1, 1, c], 'float32', dgamma)];
    },
    [FusedKernel.AdamW]: ({ inputs: { param, m, v, grad }, backend, attrs }) => {
      const n = tf.util.sizeFromShape(param.shape);
      const bad = [m, v, grad].find((t) => tf.util.sizeFromShape(t.shape) !== n);
      if (bad)
        throw new Error(
          `${FusedKernel.AdamW}: expected moments and gradient of shape [${param.shape}], got [${bad.shape}]`,
        );
      const [p1, m1, v1] = [0, 1, 2].map(() => new Float32Array(n));
      const { beta1, beta2, decay, stepSize, bc2Sqrt, eps } = attrs as Record<string, number>;
      const scalars = Float32Array.of(beta1, 1 - beta1, beta2, 1 - beta2, decay, stepSize, bc2Sqrt, eps);
      const [p, mi, vi, g] = [param, m, v, grad].map((t) => float32(backend, t));
      if (n) native.adamw(p, mi, vi, g, p1, m1, v1, scalars);
      return [p1, m1, v1].map((d) => backend.makeTensorInfo(param.shape, 'float32', d));
    },
  };
  return Object.entries(kernels).map(([kernelName, kernelFunc]) => ({
    kernelName,
    backendName: 'native',
    kernelFunc: kernelFunc as unknown as tf.KernelFunc,
  }));
}

/** [batch, positions, channels] of a GlobalResponseNorm input `[B, H, W, C]` whose `[1,1,1,C]` parameters are
 *  `params`; throws naming the kernel when the shapes disagree. */
function grnSizes(kernel: string, x: tf.TensorInfo, ...params: tf.TensorInfo[]): [number, number, number] {
  const [b, h, w, c] = x.shape;
  const bad = params.find((t) => tf.util.sizeFromShape(t.shape) !== c);
  if (x.shape.length !== 4 || bad || b * h * w * c === 0) {
    throw new Error(
      `${kernel}: expected x [B,H,W,C] (non-empty) and [1,1,1,C] parameters, got x [${x.shape}]` +
        (bad ? ` and a parameter of shape [${bad.shape}]` : ''),
    );
  }
  return [b, h * w, c];
}

function cpuKernel(kernelName: string): tf.KernelFunc {
  const config = tf.getKernel(kernelName, 'cpu');
  if (!config) throw new Error(`native backend: no cpu kernel ${kernelName}`);
  return config.kernelFunc;
}

function values(backend: MathBackendCPU, t: tf.TensorInfo): Float32Array {
  return backend.data.get(t.dataId).values as Float32Array;
}

/** t's values as a Float32Array (a copy when the cpu backend kept a cast's Int32Array or Uint8Array). */
function float32(backend: MathBackendCPU, t: tf.TensorInfo): Float32Array {
  const v = backend.data.get(t.dataId).values;
  return v instanceof Float32Array ? v : Float32Array.from(v as ArrayLike<number>);
}

/**
 * Whether every given tensor is float32 and stored as a Float32Array. A cast from bool or int32 to
 * float32 keeps the cpu backend's Uint8Array / Int32Array, which goes to the cpu kernels.
 */
function allFloat32(backend: MathBackendCPU, ...ts: (tf.TensorInfo | undefined)[]): boolean {
  return ts.every(
    (t) => t === undefined || (t.dtype === 'float32' && backend.data.get(t.dataId).values instanceof Float32Array),
  );
}

function output(backend: MathBackendCPU, shape: number[], fill: (out: Float32Array) => void): tf.TensorInfo {
  const out = new Float32Array(tf.util.sizeFromShape(shape));
  fill(out);
  return backend.makeTensorInfo(shape, 'float32', out);
}

// --- matmul ---

function batchMatMul({ inputs, backend, attrs }: Args, native: Addon): tf.TensorInfo | null {
  return matMul(backend, native, inputs.a, inputs.b, attrs.transposeA === true, attrs.transposeB === true);
}

/**
 * tfjs flattens the batch dims of both operands and pairs batch i of the output with a[i % batchA] and
 * b[i % batchB]. That agrees with numpy broadcasting only when each operand's broadcast dims are all
 * in front; other cases go to the cpu kernel so that results stay identical to it.
 */
function matMul(
  backend: MathBackendCPU,
  native: Addon,
  a: tf.TensorInfo,
  b: tf.TensorInfo,
  transposeA: boolean,
  transposeB: boolean,
): tf.TensorInfo | null {
  if (!allFloat32(backend, a, b) || a.shape.length < 2 || b.shape.length < 2) return null;
  const [a0, a1] = a.shape.slice(-2);
  const [b0, b1] = b.shape.slice(-2);
  const [m, k] = transposeA ? [a1, a0] : [a0, a1];
  const [kB, n] = transposeB ? [b1, b0] : [b0, b1];
  const outerA = a.shape.slice(0, -2);
  const outerB = b.shape.slice(0, -2);
  const outer = tf.broadcast_util.assertAndGetBroadcastShape(outerA, outerB);
  const batch = tf.util.sizeFromShape(outer);
  const batchA = tf.util.sizeFromShape(outerA);
  const batchB = tf.util.sizeFromShape(outerB);
  if (k !== kB || m * n * k * batch === 0 || !leadingBroadcast(outerA, outer) || !leadingBroadcast(outerB, outer)) {
    return null;
  }
  return output(backend, [...outer, m, n], (out) =>
    native.matmul(values(backend, a), values(backend, b), out, batch, batchA, batchB, m, n, k, transposeA, transposeB),
  );
}

/** Whether `dims` broadcasts to `out` by repeating only along leading dims. */
function leadingBroadcast(dims: number[], out: number[]): boolean {
  const padded = [...new Array<number>(out.length - dims.length).fill(1), ...dims];
  const first = padded.findIndex((d) => d !== 1);
  return first < 0 || padded.slice(first).every((d, i) => d === out[first + i]);
}

function fusedMatMul({ inputs, backend, attrs }: Args, native: Addon): tf.TensorInfo | null {
  if (!knownActivation(attrs.activation)) return null;
  const y = matMul(backend, native, inputs.a, inputs.b, attrs.transposeA === true, attrs.transposeB === true);
  return y && epilogue(backend, native, y, inputs, attrs);
}

// --- bias + activation of the fused kernels ---

/** Position = activation code in native/src/kernels.h. */
const ACTIVATIONS = ['linear', 'relu', 'relu6', 'elu', 'sigmoid', 'leakyrelu', 'prelu'];
const ACTIVATION_KERNELS: Record<string, string> = {
  relu: 'Relu',
  relu6: 'Relu6',
  elu: 'Elu',
  sigmoid: 'Sigmoid',
  leakyrelu: 'LeakyRelu',
  prelu: 'Prelu',
};

function knownActivation(activation: unknown): boolean {
  return activation === undefined || ACTIVATIONS.includes(activation as string);
}

/** Whether t broadcasts against a y of `shape` as a scalar or a vector over the last dim, without changing
 *  y's shape. */
function channelVector(t: tf.TensorInfo | undefined, shape: number[]): boolean {
  if (!t) return true;
  const size = tf.util.sizeFromShape(t.shape);
  const channels = shape[shape.length - 1];
  return (
    t.shape.length <= shape.length && (size === 1 || (size === channels && t.shape[t.shape.length - 1] === channels))
  );
}

/** The addon's arguments for the epilogue of a fused kernel whose output has `shape`, or null when the
 *  bias or prelu weights are not a scalar or a channel vector (then the cpu kernels apply it). */
function nativeEpilogue(
  backend: MathBackendCPU,
  shape: number[],
  inputs: Inputs,
  attrs: Record<string, unknown>,
): EpilogueArgs | null {
  const bias: tf.TensorInfo | undefined = inputs.bias;
  const alpha: tf.TensorInfo | undefined = inputs.preluActivationWeights;
  if (
    !allFloat32(backend, bias, alpha) ||
    !channelVector(bias, shape) ||
    !channelVector(alpha, shape) ||
    !shape.length
  ) {
    return null;
  }
  const activation = (attrs.activation as string | undefined) ?? 'linear';
  return [
    bias ? values(backend, bias) : null,
    ACTIVATIONS.indexOf(activation),
    alpha ? values(backend, alpha) : null,
    (attrs.leakyreluAlpha as number | undefined) ?? 0.2,
  ];
}

/** y = activation(y + bias), like tfjs's fused kernels; y is a fresh result and may be updated in place. */
function epilogue(
  backend: MathBackendCPU,
  native: Addon,
  y: tf.TensorInfo,
  inputs: Inputs,
  attrs: Record<string, unknown>,
): tf.TensorInfo {
  const args = nativeEpilogue(backend, y.shape, inputs, attrs);
  if (args) {
    native.biasActivation(values(backend, y), y.shape[y.shape.length - 1], ...args);
    return y;
  }
  const bias: tf.TensorInfo | undefined = inputs.bias;
  const alpha: tf.TensorInfo | undefined = inputs.preluActivationWeights;
  const activation = (attrs.activation as string | undefined) ?? 'linear';
  const leakyAlpha = (attrs.leakyreluAlpha as number | undefined) ?? 0.2;
  let result = y;
  const step = (kernelName: string, stepInputs: tf.NamedTensorInfoMap, stepAttrs = {}) => {
    const next = cpuKernel(kernelName)({ inputs: stepInputs, backend, attrs: stepAttrs }) as tf.TensorInfo;
    backend.disposeIntermediateTensorInfo(result);
    result = next;
  };
  if (bias) step('Add', { a: result, b: bias });
  if (activation === 'prelu') step('Prelu', { x: result, alpha });
  else if (activation !== 'linear') step(ACTIVATION_KERNELS[activation], { x: result }, { alpha: leakyAlpha });
  return result;
}

// --- convolutions (NHWC only; NCHW goes to the cpu kernels) ---

type ConvInfo = tf.backend_util.Conv2DInfo;
type Shape4 = [number, number, number, number];

/** The int64 layout of ConvGeom in native/src/kernels.h. */
function geometry(c: ConvInfo): number[] {
  return [
    c.batchSize,
    c.inHeight,
    c.inWidth,
    c.inChannels,
    c.outHeight,
    c.outWidth,
    c.outChannels,
    c.filterHeight,
    c.filterWidth,
    c.strideHeight,
    c.strideWidth,
    c.dilationHeight,
    c.dilationWidth,
    c.padInfo.top,
    c.padInfo.left,
  ];
}

/** computeConv2DInfo for NHWC, or null for NCHW and for empty tensors. */
function convInfo(
  inShape: number[],
  filterShape: number[],
  attrs: Record<string, unknown>,
  depthwise: boolean,
  dilations: unknown = attrs.dilations,
): ConvInfo | null {
  if (attrs.dataFormat === 'NCHW') return null;
  const info = tf.backend_util.computeConv2DInfo(
    inShape as Shape4,
    filterShape as Shape4,
    attrs.strides as [number, number],
    (dilations ?? 1) as [number, number],
    attrs.pad as 'same',
    attrs.dimRoundingMode as 'floor' | undefined,
    depthwise,
  );
  const empty =
    tf.util.sizeFromShape(info.inShape) *
      tf.util.sizeFromShape(info.outShape) *
      tf.util.sizeFromShape(info.filterShape) ===
    0;
  return empty ? null : info;
}

function sameShape(a: number[], b: number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * A forward convolution (fn: the addon's conv2d or depthwise). With `fused`, the epilogue goes to the addon
 * with it (oneDNN applies it as it writes y) when it can, and runs afterwards otherwise.
 */
function forwardConv(
  { inputs, backend, attrs }: Args,
  fn: FusedConvFn,
  info: ConvInfo | null,
  native: Addon,
  fused: boolean,
): tf.TensorInfo | null {
  if (!info) return null;
  const epilogueArgs = fused ? nativeEpilogue(backend, info.outShape, inputs, attrs) : null;
  const y = output(backend, info.outShape, (out) =>
    fn(values(backend, inputs.x), values(backend, inputs.filter), out, geometry(info), ...(epilogueArgs ?? [])),
  );
  return fused && !epilogueArgs ? epilogue(backend, native, y, inputs, attrs) : y;
}

function conv2dInfo({ inputs: { x, filter }, backend, attrs }: Args): ConvInfo | null {
  return allFloat32(backend, x, filter) ? convInfo(x.shape, filter.shape, attrs, false) : null;
}

function conv2d(args: Args, native: Addon): tf.TensorInfo | null {
  return forwardConv(args, native.conv2d, conv2dInfo(args), native, false);
}

function fusedConv2d(args: Args, native: Addon): tf.TensorInfo | null {
  if (!knownActivation(args.attrs.activation)) return null;
  return forwardConv(args, native.conv2d, conv2dInfo(args), native, true);
}

function conv2dBackpropInput({ inputs: { dy, filter }, backend, attrs }: Args, native: Addon): tf.TensorInfo | null {
  const info = allFloat32(backend, dy, filter)
    ? convInfo(attrs.inputShape as number[], filter.shape, attrs, false, 1)
    : null;
  return info && sameShape(dy.shape, info.outShape)
    ? output(backend, info.inShape, (dx) =>
        native.conv2dBackpropInput(values(backend, dy), values(backend, filter), dx, geometry(info)),
      )
    : null;
}

function conv2dBackpropFilter({ inputs: { x, dy }, backend, attrs }: Args, native: Addon): tf.TensorInfo | null {
  const info = allFloat32(backend, x, dy) ? convInfo(x.shape, attrs.filterShape as number[], attrs, false, 1) : null;
  return info && sameShape(dy.shape, info.outShape)
    ? output(backend, info.filterShape, (dw) =>
        native.conv2dBackpropFilter(values(backend, x), values(backend, dy), dw, geometry(info)),
      )
    : null;
}

function depthwiseInfo({ inputs: { x, filter }, backend, attrs }: Args): ConvInfo | null {
  const dilations = attrs.dilations ?? 1;
  if (!tf.backend_util.eitherStridesOrDilationsAreOne(attrs.strides as number, dilations as number)) return null;
  return allFloat32(backend, x, filter) ? convInfo(x.shape, filter.shape, attrs, true) : null;
}

function depthwise(args: Args, native: Addon): tf.TensorInfo | null {
  return forwardConv(args, native.depthwise, depthwiseInfo(args), native, false);
}

function fusedDepthwise(args: Args, native: Addon): tf.TensorInfo | null {
  if (!knownActivation(args.attrs.activation)) return null;
  return forwardConv(args, native.depthwise, depthwiseInfo(args), native, true);
}

/** The cpu kernels for the depthwise gradients ignore dilations, so only dilation 1 is handled here. */
function undilated(attrs: Record<string, unknown>): boolean {
  return tf.backend_util.tupleValuesAreOne((attrs.dilations ?? 1) as number);
}

function depthwiseBackpropInput({ inputs: { dy, filter }, backend, attrs }: Args, native: Addon): tf.TensorInfo | null {
  const ok = allFloat32(backend, dy, filter) && undilated(attrs);
  const info = ok ? convInfo(attrs.inputShape as number[], filter.shape, attrs, true) : null;
  return info && sameShape(dy.shape, info.outShape)
    ? output(backend, info.inShape, (dx) =>
        native.depthwiseBackpropInput(values(backend, dy), values(backend, filter), dx, geometry(info)),
      )
    : null;
}

function depthwiseBackpropFilter({ inputs: { x, dy }, backend, attrs }: Args, native: Addon): tf.TensorInfo | null {
  const ok = allFloat32(backend, x, dy) && undilated(attrs);
  const info = ok ? convInfo(x.shape, attrs.filterShape as number[], attrs, true) : null;
  return info && sameShape(dy.shape, info.outShape)
    ? output(backend, info.filterShape, (dw) =>
        native.depthwiseBackpropFilter(values(backend, x), values(backend, dy), dw, geometry(info)),
      )
    : null;
}

// --- elementwise ---

/** Position = BinaryOp / UnaryOp code in native/src/kernels.h. */
const BINARY_OPS = ['Add', 'Sub', 'Multiply', 'RealDiv'];
const UNARY_OPS = ['Erf', 'Exp', 'Neg', 'Square', 'Sqrt', 'Rsqrt', 'Sigmoid'];

/**
 * Drops unit dims and merges neighbours that every operand steps through as one (row-major), so that
 * the native loops see as few, and as long, dims as possible. strides[i] are operand i's element strides.
 */
function collapse(shape: number[], strides: number[][]): [number[], number[][]] {
  const dims: number[] = [];
  const steps: number[][] = strides.map(() => []);
  shape.forEach((d, i) => {
    if (d === 1) return;
    const last = dims.length - 1;
    if (last >= 0 && strides.every((s, k) => steps[k][last] === s[i] * d)) {
      dims[last] *= d;
      strides.forEach((s, k) => {
        steps[k][last] = s[i];
      });
    } else {
      dims.push(d);
      strides.forEach((s, k) => steps[k].push(s[i]));
    }
  });
  return dims.length ? [dims, steps] : [[1], strides.map(() => [1])];
}

/** Element strides of a row-major `shape` read as `outShape` under numpy broadcasting (0 = repeated). */
function broadcastStrides(shape: number[], outShape: number[]): number[] {
  const strides = new Array<number>(outShape.length).fill(0);
  for (let i = shape.length - 1, step = 1; i >= 0; step *= shape[i], i--) {
    strides[outShape.length - shape.length + i] = shape[i] === 1 ? 0 : step;
  }
  return strides;
}

function binary(op: number): NativeKernel {
  return ({ inputs: { a, b }, backend }, native) => {
    if (!allFloat32(backend, a, b)) return null;
    const shape = tf.backend_util.assertAndGetBroadcastShape(a.shape, b.shape);
    if (tf.util.sizeFromShape(shape) === 0) return null;
    const [dims, [sa, sb]] = collapse(shape, [broadcastStrides(a.shape, shape), broadcastStrides(b.shape, shape)]);
    return output(backend, shape, (out) =>
      native.binary(op, values(backend, a), values(backend, b), out, dims, sa, sb),
    );
  };
}

function unary(op: number): NativeKernel {
  return ({ inputs: { x }, backend }, native) =>
    allFloat32(backend, x) ? output(backend, x.shape, (out) => native.unary(op, values(backend, x), out)) : null;
}

function softmax({ inputs: { logits }, backend, attrs }: Args, native: Addon): tf.TensorInfo | null {
  const rank = logits.shape.length;
  const lastAxis = attrs.dim === -1 || attrs.dim === rank - 1;
  if (!allFloat32(backend, logits) || !lastAxis || tf.util.sizeFromShape(logits.shape) === 0) return null;
  return output(backend, logits.shape, (out) => native.softmax(values(backend, logits), out, logits.shape[rank - 1]));
}

// --- layout and reductions ---

/** x read through `strides` from `offset` into a new dense tensor of `shape`. */
function stridedCopy(
  backend: MathBackendCPU,
  native: Addon,
  x: tf.TensorInfo,
  shape: number[],
  strides: number[],
  offset = 0,
): tf.TensorInfo {
  const [dims, [steps]] = collapse(shape, [strides]);
  return output(backend, shape, (out) => native.stridedCopy(values(backend, x), out, offset, dims, steps));
}

function transposed(backend: MathBackendCPU, native: Addon, x: tf.TensorInfo, perm: number[]): tf.TensorInfo {
  const strides = tf.util.computeStrides(x.shape).concat(1);
  return stridedCopy(
    backend,
    native,
    x,
    perm.map((p) => x.shape[p]),
    perm.map((p) => strides[p]),
  );
}

function transpose({ inputs: { x }, backend, attrs }: Args, native: Addon): tf.TensorInfo | null {
  const ok = allFloat32(backend, x) && tf.util.sizeFromShape(x.shape) > 0;
  return ok ? transposed(backend, native, x, attrs.perm as number[]) : null;
}

/** A slice that is one contiguous run is left to the cpu kernel, which returns a view. */
function sliced(
  backend: MathBackendCPU,
  native: Addon,
  x: tf.TensorInfo,
  begin: number[],
  size: number[],
): tf.TensorInfo {
  if (tf.util.sizeFromShape(size) === 0 || tf.slice_util.isSliceContinous(x.shape, begin, size)) {
    return cpuKernel('Slice')({ inputs: { x }, backend, attrs: { begin, size } }) as tf.TensorInfo;
  }
  const strides = tf.util.computeStrides(x.shape).concat(1);
  return stridedCopy(backend, native, x, size, strides, tf.slice_util.computeFlatOffset(begin, strides));
}

function slice({ inputs: { x }, backend, attrs }: Args, native: Addon): tf.TensorInfo | null {
  if (!allFloat32(backend, x)) return null;
  const [begin, size] = tf.slice_util.parseSliceParams(x as tf.Tensor, attrs.begin as number[], attrs.size as number[]);
  tf.slice_util.assertParamsValid(x as tf.Tensor, begin, size);
  return sliced(backend, native, x, begin, size);
}

function splitV({ inputs: { x }, backend, attrs }: Args, native: Addon): tf.TensorInfo[] | null {
  if (!allFloat32(backend, x)) return null;
  const axis = tf.util.parseAxisParam(attrs.axis as number, x.shape)[0];
  const sizes = tf.backend_util.prepareSplitSize(x, attrs.numOrSizeSplits as number[], axis);
  const begin = new Array<number>(x.shape.length).fill(0);
  return sizes.map((s) => {
    const size = x.shape.map((d, i) => (i === axis ? s : d));
    const piece = sliced(backend, native, x, [...begin], size);
    begin[axis] += s;
    return piece;
  });
}

/** Concat as one typed-array copy per (row before `axis`, input); tfjs's cpu kernel copies element by element. */
function concat({ inputs, backend, attrs }: Args): tf.TensorInfo | null {
  const xs = Object.values(inputs);
  if (!allFloat32(backend, ...xs)) return null;
  const axis = tf.util.parseAxisParam(attrs.axis as number, xs[0].shape)[0];
  const outShape = tf.backend_util.computeOutShape(
    xs.map((t) => t.shape),
    axis,
  );
  const rows = tf.util.sizeFromShape(outShape.slice(0, axis));
  const cols = tf.util.sizeFromShape(outShape.slice(axis));
  return output(backend, outShape, (out) => {
    let offset = 0;
    for (const x of xs) {
      const width = tf.util.sizeFromShape(x.shape.slice(axis));
      const v = values(backend, x);
      for (let r = 0; r < rows && width > 0; r++) out.set(v.subarray(r * width, (r + 1) * width), r * cols + offset);
      offset += width;
    }
  });
}

/** PadV2 as one typed-array copy per row of x down to its innermost padded axis (the axes inside it are copied
 *  whole); tfjs's cpu kernel maps every element's index. */
function padV2({ inputs: { x }, backend, attrs }: Args): tf.TensorInfo | null {
  if (!allFloat32(backend, x) || x.shape.length === 0) return null;
  const paddings = attrs.paddings as [number, number][];
  const outShape = x.shape.map((d, i) => paddings[i][0] + d + paddings[i][1]);
  const outStrides = [...tf.util.computeStrides(outShape), 1];
  let last = x.shape.length - 1;
  while (last > 0 && paddings[last][0] === 0 && paddings[last][1] === 0) last--;
  const rowLength = tf.util.sizeFromShape(x.shape.slice(last));
  const rows = tf.util.sizeFromShape(x.shape.slice(0, last));
  return output(backend, outShape, (out) => {
    const constant = attrs.constantValue as number;
    if (constant !== 0) out.fill(constant);
    const v = values(backend, x);
    if (rowLength === 0) return;
    for (let r = 0; r < rows; r++) {
      let offset = paddings[last][0] * outStrides[last];
      for (let d = last - 1, rest = r; d >= 0; d--) {
        const i = rest % x.shape[d];
        rest = (rest - i) / x.shape[d];
        offset += (i + paddings[d][0]) * outStrides[d];
      }
      out.set(v.subarray(r * rowLength, (r + 1) * rowLength), offset);
    }
  });
}

/**
 * Sum (or mean) over `axis`. The reduced dims are summed in place when they form one run of x's
 * non-unit dims, and are transposed to the end first otherwise.
 */
function reduceSum({ inputs: { x }, backend, attrs }: Args, native: Addon, mean: boolean): tf.TensorInfo | null {
  const axes = tf.util.parseAxisParam(attrs.axis as number[], x.shape);
  const [outShape, reduceShape] = tf.backend_util.computeOutAndReduceShapes(x.shape, axes);
  const mid = tf.util.sizeFromShape(reduceShape);
  const total = tf.util.sizeFromShape(x.shape);
  if (!allFloat32(backend, x) || mid === 1 || total === 0) return null;
  const shape = attrs.keepDims ? tf.backend_util.expandShapeToKeepDim(outShape, axes) : outShape;
  const reduced = x.shape.map((d, i) => (d === 1 ? null : axes.includes(i))).filter((r) => r !== null);
  const oneRun = reduced.slice(reduced.indexOf(true), reduced.lastIndexOf(true) + 1).every((r) => r);
  const perm = tf.backend_util.getAxesPermutation(axes, x.shape.length);
  const src = oneRun || !perm ? x : transposed(backend, native, x, perm);
  const lastAxis = oneRun ? Math.max(...axes.filter((a) => x.shape[a] !== 1)) : x.shape.length - 1;
  const inner = oneRun ? tf.util.sizeFromShape(x.shape.slice(lastAxis + 1)) : 1;
  const result = output(backend, shape, (out) =>
    native.reduceSum(values(backend, src), out, total / mid / inner, mid, inner, mean ? 1 / mid : 1),
  );
  if (src !== x) backend.disposeIntermediateTensorInfo(src);
  return result;
}

/** UnsortedSegmentSum (the gradient of a gather, e.g. of a VQ codebook) as one pass over x's rows; tfjs's cpu
 *  kernel makes a mask, a product and a sum per segment. */
function unsortedSegmentSum({ inputs: { x, segmentIds }, backend, attrs }: Args, native: Addon): tf.TensorInfo | null {
  const ids = backend.data.get(segmentIds.dataId).values;
  const rows = tf.util.sizeFromShape(segmentIds.shape);
  const innerShape = x.shape.slice(segmentIds.shape.length);
  const inner = tf.util.sizeFromShape(innerShape);
  const segments = attrs.numSegments as number;
  const prefixMatches = segmentIds.shape.every((d, i) => x.shape[i] === d);
  if (!allFloat32(backend, x) || !(ids instanceof Int32Array) || !prefixMatches || inner === 0 || segments <= 0)
    return null;
  return output(backend, [segments, ...innerShape], (out) =>
    native.segmentSum(values(backend, x), ids, out, rows, inner, segments),
  );
}
