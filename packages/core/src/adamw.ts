/**
 * One AdamW update of one parameter, with PyTorch's semantics (decoupled decay, then the bias-corrected step):
 *   m' = β1·m + (1 − β1)·g,  v' = β2·v + (1 − β2)·g²,
 *   θ' = θ·(1 − lr·wd) − m' / (√v' / √(1 − β2^k) + eps) · lr / (1 − β1^k).
 * The native backend runs it as one kernel (one pass over memory, three outputs); elsewhere it is composed from
 * tfjs ops in the same order, fourteen parameter-sized temporaries.
 */
import * as tf from '@tensorflow/tfjs';
import { FusedKernel, hasFusedKernel } from './layers/fused';

/** The scalars of update k (1-based) at learning rate lr. */
export interface AdamWStep {
  beta1: number;
  beta2: number;
  /** 1 − lr·weight_decay */
  decay: number;
  /** lr / (1 − β1^k) */
  stepSize: number;
  /** √(1 − β2^k) */
  bc2Sqrt: number;
  eps: number;
}

/** [θ', m', v'] for parameter θ, moments m and v, and gradient g (new tensors; the inputs are left as they are). */
export function adamwUpdate(param: tf.Tensor, m: tf.Tensor, v: tf.Tensor, grad: tf.Tensor, s: AdamWStep): tf.Tensor[] {
  if (hasFusedKernel(FusedKernel.AdamW, param) && [m, v, grad].every((t) => t.dtype === 'float32'))
    return tf.engine().runKernel(FusedKernel.AdamW, { param, m, v, grad }, { ...s }) as tf.Tensor[];
  return tf.tidy(() => {
    const theta = s.decay !== 1 ? tf.mul(param, s.decay) : param;
    const m1 = tf.add(tf.mul(m, s.beta1), tf.mul(grad, 1 - s.beta1));
    const v1 = tf.add(tf.mul(v, s.beta2), tf.mul(tf.square(grad), 1 - s.beta2));
    const denom = tf.add(tf.div(tf.sqrt(v1), s.bc2Sqrt), s.eps);
    return [tf.sub(theta, tf.mul(tf.div(m1, denom), s.stepSize)), m1, v1];
  });
}
