import * as tf from '@tensorflow/tfjs';
import { Module } from '../module';
import { FusedKernel, hasFusedKernel, runFused } from './fused';

const SQRT1_2 = Math.SQRT1_2;

/** Exact GELU: 0.5·x·(1 + erf(x/√2)) (`nn.GELU()`, CLIP `hidden_act="gelu"`). */
export function gelu(x: tf.Tensor): tf.Tensor {
  if (hasFusedKernel(FusedKernel.Gelu, x)) return runFused(FusedKernel.Gelu, { x });
  return tf.tidy(() => tf.mul(tf.mul(x, 0.5), tf.add(tf.erf(tf.mul(x, SQRT1_2)), 1)));
}

/** CLIP `quick_gelu`: x·σ(1.702x). */
export function quickGelu(x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => tf.mul(x, tf.sigmoid(tf.mul(x, 1.702))));
}

/** SiLU: x·σ(x). */
export function silu(x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => tf.mul(x, tf.sigmoid(x)));
}

export type ActivationName = 'gelu' | 'quick_gelu' | 'silu' | 'relu' | 'leaky_relu' | 'identity';

export function activation(name: ActivationName, alpha = 0.01): (x: tf.Tensor) => tf.Tensor {
  switch (name) {
    case 'gelu':
      return gelu;
    case 'quick_gelu':
      return quickGelu;
    case 'silu':
      return silu;
    case 'relu':
      return (x) => tf.relu(x);
    case 'leaky_relu':
      return (x) => tf.leakyRelu(x, alpha);
    case 'identity':
      return (x) => x;
    default:
      throw new Error(`unknown activation "${name as string}"; expected gelu, quick_gelu, silu, relu, leaky_relu`);
  }
}

/** A parameter-free activation as a module, so it can take its slot in a Sequential. */
export class Activation extends Module {
  private readonly fn: (x: tf.Tensor) => tf.Tensor;
  constructor(
    readonly name: ActivationName,
    alpha = 0.01,
  ) {
    super();
    this.fn = activation(name, alpha);
  }
  forward(x: tf.Tensor): tf.Tensor {
    return this.fn(x);
  }
}

export class GELU extends Activation {
  constructor() {
    super('gelu');
  }
}
export class SiLU extends Activation {
  constructor() {
    super('silu');
  }
}
export class LeakyReLU extends Activation {
  constructor(alpha = 0.01) {
    super('leaky_relu', alpha);
  }
}
export class Identity extends Activation {
  constructor() {
    super('identity');
  }
}

/** `nn.Dropout(p)`: identity in eval mode. */
export class Dropout extends Module {
  /** Seed of the next mask (a trainer sets this for replayable runs); unseeded when absent. */
  seed?: () => number;
  constructor(readonly p: number) {
    super();
  }
  forward(x: tf.Tensor): tf.Tensor {
    return this.training && this.p > 0 ? tf.dropout(x, this.p, undefined, this.seed?.()) : x;
  }
}
