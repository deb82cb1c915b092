import * as tf from '@tensorflow/tfjs';
import { Module, Parameter, init } from '../module';
import { FusedKernel, hasFusedKernel, runFused } from './fused';

/** Normalise over the last axis with the biased variance, eps inside the sqrt. */
export function layerNormLastAxis(x: tf.Tensor, eps: number): tf.Tensor {
  if (hasFusedKernel(FusedKernel.LayerNorm, x)) return runFused(FusedKernel.LayerNorm, { x }, { eps });
  return tf.tidy(() => {
    const axis = x.rank - 1;
    const mean = tf.mean(x, axis, true);
    const centered = tf.sub(x, mean);
    const variance = tf.mean(tf.square(centered), axis, true);
    return tf.mul(centered, tf.rsqrt(tf.add(variance, eps)));
  });
}

/**
 * `nn.LayerNorm(dim, eps, elementwise_affine)` over the last axis. On NHWC tensors this is
 * also Würstchen's channel-wise `WuerstchenLayerNorm` (diffusers modeling_wuerstchen_common.py).
 */
export class LayerNorm extends Module {
  readonly weight: Parameter | null;
  readonly bias: Parameter | null;
  constructor(
    readonly dim: number,
    readonly eps = 1e-5,
    affine = true,
  ) {
    super();
    this.weight = affine ? this.param('weight', [dim], { init: init.ones() }) : null;
    this.bias = affine ? this.param('bias', [dim], { init: init.zeros() }) : null;
  }
  forward(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      if (x.shape[x.rank - 1] !== this.dim) {
        throw new Error(`LayerNorm(${this.dim}): last axis of input [${x.shape}] is not ${this.dim}`);
      }
      const y = layerNormLastAxis(x, this.eps);
      return this.weight && this.bias ? tf.add(tf.mul(y, this.weight.value), this.bias.value) : y;
    });
  }
}

/** `WuerstchenLayerNorm`: channel LayerNorm of an image tensor; NHWC makes it a last-axis LayerNorm (eps 1e-6). */
export class ChannelLayerNorm extends LayerNorm {
  constructor(dim: number, eps = 1e-6, affine = false) {
    super(dim, eps, affine);
  }
}

/**
 * `nn.BatchNorm2d(C, eps, momentum)` on NHWC input. Eval: running statistics. Train: batch
 * statistics (biased variance), and the running statistics are updated with the unbiased variance.
 */
export class BatchNorm2d extends Module {
  readonly weight: Parameter;
  readonly bias: Parameter;
  readonly runningMean: Parameter;
  readonly runningVar: Parameter;
  readonly numBatchesTracked: Parameter;
  constructor(
    readonly numFeatures: number,
    readonly eps = 1e-5,
    readonly momentum = 0.1,
  ) {
    super();
    this.weight = this.param('weight', [numFeatures], { init: init.ones() });
    this.bias = this.param('bias', [numFeatures], { init: init.zeros() });
    this.runningMean = this.param('running_mean', [numFeatures], { init: init.zeros(), trainable: false });
    this.runningVar = this.param('running_var', [numFeatures], { init: init.ones(), trainable: false });
    this.numBatchesTracked = this.param('num_batches_tracked', [], {
      init: init.zeros(),
      trainable: false,
      dtype: 'I64',
    });
  }
  forward(x: tf.Tensor): tf.Tensor {
    if (!this.training) {
      return tf.tidy(() => {
        const scale = tf.mul(this.weight.value, tf.rsqrt(tf.add(this.runningVar.value, this.eps)));
        return tf.add(tf.mul(tf.sub(x, this.runningMean.value), scale), this.bias.value);
      });
    }
    const axes = [0, 1, 2];
    const { mean, variance } = tf.moments(x, axes);
    const count = x.size / this.numFeatures;
    tf.tidy(() => {
      const m = this.momentum;
      const unbiased = tf.mul(variance, count / Math.max(count - 1, 1));
      this.runningMean.value.assign(tf.add(tf.mul(this.runningMean.value, 1 - m), tf.mul(mean, m)));
      this.runningVar.value.assign(tf.add(tf.mul(this.runningVar.value, 1 - m), tf.mul(unbiased, m)));
      this.numBatchesTracked.value.assign(tf.add(this.numBatchesTracked.value, tf.scalar(1, 'int32')));
    });
    const y = tf.tidy(() =>
      tf.add(tf.mul(tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, this.eps))), this.weight.value), this.bias.value),
    );
    mean.dispose();
    variance.dispose();
    return y;
  }
}

/**
 * `torch.norm(x, p=2, dim=(1, 2), keepdim=True)` of NHWC `x`, with torch's gradient: x/‖x‖, and 0
 * where ‖x‖ = 0. (Differentiating sqrt(Σx²) gives 0·∞ = NaN there, and a channel that GELU zeroes
 * over a whole small feature map is common in training.)
 */
export const spatialL2Norm = tf.customGrad(((x: tf.Tensor, save: tf.GradSaveFunc) => {
  const norm = tf.sqrt(tf.sum(tf.square(x), [1, 2], true));
  save([x, norm]);
  return {
    value: norm,
    gradFunc: (dy: tf.Tensor, [xs, n]: tf.Tensor[]) => {
      const positive = tf.greater(n, 0);
      const inv = tf.where(positive, tf.div(1, tf.where(positive, n, tf.onesLike(n))), tf.zerosLike(n));
      return tf.mul(tf.mul(dy, inv), xs);
    },
  };
}) as unknown as Parameters<typeof tf.customGrad>[0]) as (x: tf.Tensor) => tf.Tensor;

/**
 * ConvNeXt-V2 GlobalResponseNorm on channels-last input (diffusers modeling_wuerstchen_common.py):
 * G = ‖x‖₂ over (H, W); N = G / (mean_C G + 1e-6); y = γ·(x·N) + β + x. gamma/beta are `[1,1,1,C]`.
 */
export class GlobalResponseNorm extends Module {
  readonly gamma: Parameter;
  readonly beta: Parameter;
  constructor(readonly dim: number) {
    super();
    this.gamma = this.param('gamma', [1, 1, 1, dim], { init: init.zeros() });
    this.beta = this.param('beta', [1, 1, 1, dim], { init: init.zeros() });
  }
  forward(x: tf.Tensor): tf.Tensor {
    const [gamma, beta] = [this.gamma.value, this.beta.value];
    if (x.rank === 4 && hasFusedKernel(FusedKernel.GlobalResponseNorm, x)) {
      return runFused(FusedKernel.GlobalResponseNorm, { x, gamma, beta });
    }
    return tf.tidy(() => {
      const g = spatialL2Norm(x);
      const n = tf.div(g, tf.add(tf.mean(g, -1, true), 1e-6));
      return tf.add(tf.add(tf.mul(gamma, tf.mul(x, n)), beta), x);
    });
  }
}
