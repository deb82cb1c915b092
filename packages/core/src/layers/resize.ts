import * as tf from '@tensorflow/tfjs';

/** Keys cubic kernel with a = −0.5 (PIL / PyTorch antialias). */
function cubic(x: number): number {
  const a = -0.5;
  const t = Math.abs(x);
  if (t < 1) return ((a + 2) * t - (a + 3)) * t * t + 1;
  if (t < 2) return (((t - 5) * t + 8) * t - 4) * a;
  return 0;
}

/**
 * The `[nOut, nIn]` weight matrix of PyTorch's antialiased bicubic resize with
 * align_corners=True along one axis (spec inference.md §2.10, golden README "Bicubic antialias").
 */
export function bicubicAAWeights(nIn: number, nOut: number): Float32Array {
  const w = new Float32Array(nOut * nIn);
  const scale = nOut > 1 ? (nIn - 1) / (nOut - 1) : 0;
  const support = scale >= 1 ? 2 * scale : 2;
  const invscale = scale >= 1 ? 1 / scale : 1;
  const maxSize = Math.ceil(support) * 2 + 1;
  for (let i = 0; i < nOut; i++) {
    const center = scale * (i + 0.5);
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xsize = Math.min(Math.max(Math.min(Math.trunc(center + support + 0.5), nIn) - xmin, 0), maxSize);
    let total = 0;
    const row = new Float64Array(xsize);
    for (let j = 0; j < xsize; j++) {
      row[j] = cubic((j + xmin - center + 0.5) * invscale);
      total += row[j];
    }
    for (let j = 0; j < xsize; j++) w[i * nIn + xmin + j] = total !== 0 ? row[j] / total : row[j];
  }
  return w;
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
