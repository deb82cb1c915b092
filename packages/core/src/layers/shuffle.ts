import * as tf from '@tensorflow/tfjs';
import { Module } from '../module';

/**
 * `nn.PixelUnshuffle(r)` on NHWC with PyTorch's channel order:
 * out[n, h, w, c·r² + i·r + j] = in[n, h·r + i, w·r + j, c]. (TF's spaceToDepth orders channels differently.)
 */
export function pixelUnshuffle(x: tf.Tensor4D, r: number): tf.Tensor4D {
  return tf.tidy(() => {
    const [n, h, w, c] = x.shape;
    if (h % r !== 0 || w % r !== 0) {
      throw new Error(`PixelUnshuffle(${r}): height ${h} and width ${w} must be multiples of ${r}`);
    }
    return x
      .reshape([n, h / r, r, w / r, r, c])
      .transpose([0, 1, 3, 5, 2, 4])
      .reshape([n, h / r, w / r, c * r * r]);
  });
}

/** `nn.PixelShuffle(r)` on NHWC with PyTorch's channel order (inverse of pixelUnshuffle). */
export function pixelShuffle(x: tf.Tensor4D, r: number): tf.Tensor4D {
  return tf.tidy(() => {
    const [n, h, w, crr] = x.shape;
    if (crr % (r * r) !== 0) throw new Error(`PixelShuffle(${r}): channels ${crr} must be a multiple of ${r * r}`);
    const c = crr / (r * r);
    return x
      .reshape([n, h, w, c, r, r])
      .transpose([0, 1, 4, 2, 5, 3])
      .reshape([n, h * r, w * r, c]);
  });
}

export class PixelUnshuffle extends Module {
  constructor(readonly factor: number) {
    super();
  }
  forward(x: tf.Tensor): tf.Tensor {
    return pixelUnshuffle(x as tf.Tensor4D, this.factor);
  }
}

export class PixelShuffle extends Module {
  constructor(readonly factor: number) {
    super();
  }
  forward(x: tf.Tensor): tf.Tensor {
    return pixelShuffle(x as tf.Tensor4D, this.factor);
  }
}
