import * as tf from '@tensorflow/tfjs';

/** Keys cubic kernel with a = −0.5 (PIL / PyTorch antialias); zero outside ±2. */
function cubic(x: number): number {
  const a = -0.5;
  const t = Math.abs(x);
  if (t < 1) return ((a + 2) * t - (a + 3)) * t * t + 1;
  if (t < 2) return (((t - 5) * t + 8) * t - 4) * a;
  return 0;
}

/** Sparse `[nOut, nIn]` resize weights: output `i` reads inputs `start[i] … start[i] + size[i] − 1` with taps `w[i·maxSize + j]`. */
export interface AAWeights {
  start: Int32Array;
  size: Int32Array;
  w: Float32Array;
  maxSize: number;
}

/**
 * One axis of PyTorch's antialiased separable interpolation (`_compute_indices_weights_aa`, as in PIL): output `i`
 * is centred at `scale·(i + 0.5)` in input coordinates, `kernel` (zero outside ±`kernelSupport`) is widened by
 * `scale` when downscaling, and each output's taps are normalised to sum 1. `scale` is `nIn/nOut`, or
 * `(nIn − 1)/(nOut − 1)` for align_corners=True.
 */
export function antialiasWeights(
  nIn: number,
  nOut: number,
  scale: number,
  kernel: (x: number) => number,
  kernelSupport: number,
): AAWeights {
  const support = scale >= 1 ? kernelSupport * scale : kernelSupport;
  const invscale = scale >= 1 ? 1 / scale : 1;
  const maxSize = Math.ceil(support) * 2 + 1;
  const start = new Int32Array(nOut);
  const size = new Int32Array(nOut);
  const w = new Float32Array(nOut * maxSize);
  for (let i = 0; i < nOut; i++) {
    const center = scale * (i + 0.5);
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xsize = Math.min(Math.max(Math.min(Math.trunc(center + support + 0.5), nIn) - xmin, 0), maxSize);
    let total = 0;
    const row = new Float64Array(xsize);
    for (let j = 0; j < xsize; j++) {
      row[j] = kernel((j + xmin - center + 0.5) * invscale);
      total += row[j];
    }
    start[i] = xmin;
    size[i] = xsize;
    for (let j = 0; j < xsize; j++) w[i * maxSize + j] = total !== 0 ? row[j] / total : row[j];
  }
  return { start, size, w, maxSize };
}

/**
 * The `[nOut, nIn]` weight matrix of PyTorch's antialiased bicubic resize with
 * align_corners=True along one axis (PyTorch aten/src/ATen/native/cpu/UpSampleKernel.cpp, golden README
 * "Bicubic antialias").
 */
export function bicubicAAWeights(nIn: number, nOut: number): Float32Array {
  const { start, size, w, maxSize } = antialiasWeights(nIn, nOut, nOut > 1 ? (nIn - 1) / (nOut - 1) : 0, cubic, 2);
  const m = new Float32Array(nOut * nIn);
  for (let i = 0; i < nOut; i++) m.set(w.subarray(i * maxSize, i * maxSize + size[i]), i * nIn + start[i]);
  return m;
}

/** Apply an `[nOut, nIn]` matrix along `axis` (1 = H, 2 = W) of an NHWC tensor. */
function resizeAxis(x: tf.Tensor4D, axis: 1 | 2, nOut: number): tf.Tensor4D {
  const nIn = x.shape[axis];
  if (nIn === nOut) return x;
  const m = tf.tensor2d(bicubicAAWeights(nIn, nOut), [nOut, nIn]);
  const perm = axis === 1 ? [1, 0, 2, 3] : [2, 0, 1, 3];
  const moved = tf.transpose(x, perm);
  const rest = moved.shape.slice(1);
  const out = tf.matMul(m, moved.reshape([nIn, -1])).reshape([nOut, ...rest]);
  return tf.transpose(out, axis === 1 ? [1, 0, 2, 3] : [1, 2, 0, 3]) as tf.Tensor4D;
}

/**
 * `F.interpolate(x, size, mode='bicubic', antialias=True, align_corners=True)` on NHWC input:
 * separable, width first, then height. Differentiable (two matmuls).
 */
export function resizeBicubicAA(x: tf.Tensor4D, size: [number, number]): tf.Tensor4D {
  return tf.tidy(() => resizeAxis(resizeAxis(x, 2, size[1]), 1, size[0]));
}
