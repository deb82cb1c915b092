/**
 * The diffusion objective shared by Stage B and Stage C (dome272/Wuerstchen diffuzz.py, train_stage_C.py):
 * continuous t ∈ [0, 1], cosine ᾱ(t) with s = 0.008 clamped to [1e-4, 0.9999],
 * x_t = √ᾱ·x0 + √(1−ᾱ)·ε, ε-prediction, per-sample MSE weighted by p2 = (k + SNR)^−γ
 * (k = γ = 1 ⇒ 1 − ᾱ), and dome272's t sampler t = clamp(1.08·(1−u) + 0.001, 0.001, 1).
 */
import * as tf from '@tensorflow/tfjs';
import { Generator } from 'wuerstchen';

export const COSINE_S = 0.008;
const INIT_ALPHA = Math.cos((COSINE_S / (1 + COSINE_S)) * Math.PI * 0.5) ** 2;

/** ᾱ(t) of the cosine schedule (`D:diffuzz.py:55-71`), computed in double precision. */
export function alphaCumprod(t: number, s = COSINE_S): number {
  const init = s === COSINE_S ? INIT_ALPHA : Math.cos((s / (1 + s)) * Math.PI * 0.5) ** 2;
  const a = Math.cos(((t + s) / (1 + s)) * Math.PI * 0.5) ** 2 / init;
  return Math.min(0.9999, Math.max(1e-4, a));
}

export type TSampler = 'dome' | 'uniform' | 'gdf';

/**
 * Training-time t per sample: `dome` = clamp(1.08·(1−u) + 0.001, 0.001, 1) (7.5% at t = 1;
 * dome272 Stage B/C, default), `gdf` = clamp((1−u) + 0.001, 0.001, 1), `uniform` = u (HF example).
 */
export function sampleT(n: number, rng: Generator, kind: TSampler = 'dome'): number[] {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const u = rng.nextFloat();
    if (kind === 'uniform') out.push(u);
    else if (kind === 'gdf') out.push(Math.min(1, Math.max(0.001, 1 - u + 0.001)));
    else out.push(Math.min(1, Math.max(0.001, 1.08 * (1 - u) + 0.001)));
  }
  return out;
}

/**
 * Caption dropout (the CFG "unconditional"): with probability `p` every caption of the batch becomes ""
 * (`mode` 'batch', dome272), or each caption independently ('sample').
 */
export function dropCaptions(captions: string[], p: number, mode: 'batch' | 'sample', rng: Generator): string[] {
  if (mode === 'batch') return rng.nextFloat() < p ? captions.map(() => '') : captions;
  return captions.map((c) => (rng.nextFloat() < p ? '' : c));
}

/** p2 weight `(k + ᾱ/(1−ᾱ))^−γ` (dome272/Wuerstchen diffuzz.py `p2_weight`); with k = γ = 1 this is 1 − ᾱ. */
export function p2Weight(alpha: number, k = 1, gamma = 1): number {
  return (k + alpha / (1 - alpha)) ** -gamma;
}

/**
 * Per-sample weight of the ε-MSE at ᾱ: `p2` (the paper's), `x0` = 1/SNR = (1−ᾱ)/ᾱ capped at
 * `max` (the ε-loss turned into the x0-loss, which keeps the high-noise steps, where only the
 * text can tell what the picture holds, from being weighted to nothing), or `none`.
 */
export type LossWeighting = { kind: 'p2'; k: number; gamma: number } | { kind: 'x0'; max: number } | { kind: 'none' };

export function lossWeight(alpha: number, w: LossWeighting): number {
  if (w.kind === 'p2') return p2Weight(alpha, w.k, w.gamma);
  if (w.kind === 'x0') return Math.min(w.max, (1 - alpha) / alpha);
  return 1;
}

export interface NoisedBatch {
  /** x_t, same shape as x0. */
  xt: tf.Tensor;
  /** the noise ε (the target). */
  noise: tf.Tensor;
  /** t per sample, `[B]` (what the network is conditioned on). */
  t: tf.Tensor1D;
  /** p2 weights per sample, `[B]`. */
  weights: tf.Tensor1D;
}

/** Draw ε ~ N(0, I) from `rng` and form x_t for the given t (all tensors are new; caller disposes). */
export function addNoise(
  x0: tf.Tensor,
  t: number[],
  rng: Generator,
  weighting: LossWeighting = { kind: 'p2', k: 1, gamma: 1 },
): NoisedBatch {
  return tf.tidy(() => {
    const b = x0.shape[0];
    const noise = rng.randn(x0.shape);
    const alphas = t.map((ti) => alphaCumprod(ti));
    const bshape = [b, ...x0.shape.slice(1).map(() => 1)];
    const sa = tf.tensor(alphas.map(Math.sqrt), bshape, 'float32');
    const sb = tf.tensor(
      alphas.map((a) => Math.sqrt(1 - a)),
      bshape,
      'float32',
    );
    const xt = tf.add(tf.mul(x0, sa), tf.mul(noise, sb));
    return {
      xt,
      noise,
      t: tf.tensor1d(t, 'float32'),
      weights: tf.tensor1d(
        alphas.map((a) => lossWeight(a, weighting)),
        'float32',
      ),
    };
  });
}

/**
 * Per-sample MSE `[B]` and the weighted loss `mean_i(L_i·w_i)` (train_stage_C.py). Returns both; the caller
 * backpropagates `weighted` (divided by the accumulation count) and logs `mean(perSample)`.
 */
export function diffusionLoss(
  pred: tf.Tensor,
  noise: tf.Tensor,
  weights: tf.Tensor1D,
): { perSample: tf.Tensor1D; weighted: tf.Scalar } {
  return tf.tidy(() => {
    const axes = pred.shape.slice(1).map((_, i) => i + 1);
    const perSample = tf.mean(tf.squaredDifference(pred, noise), axes) as tf.Tensor1D;
    const weighted = tf.mean(tf.mul(perSample, weights)) as tf.Scalar;
    return { perSample, weighted };
  });
}

/** x0 from x_t and ε̂ (`D:diffuzz.py:42`): (x_t − √(1−ᾱ)·ε̂)/√ᾱ. */
export function predictX0(xt: tf.Tensor, eps: tf.Tensor, t: number[]): tf.Tensor {
  return tf.tidy(() => {
    const b = xt.shape[0];
    const bshape = [b, ...xt.shape.slice(1).map(() => 1)];
    const a = t.map((ti) => alphaCumprod(ti));
    return tf.div(
      tf.sub(
        xt,
        tf.mul(
          eps,
          tf.tensor(
            a.map((x) => Math.sqrt(1 - x)),
            bshape,
          ),
        ),
      ),
      tf.tensor(a.map(Math.sqrt), bshape),
    );
  });
}

/**
 * DDPM sampler of dome272/Wuerstchen diffuzz.py / diffusers `DDPMWuerstchenScheduler` for previews: t on
 * linspace(1, 0, steps+1); `model(x, t)` returns ε̂. Noise comes from `rng`.
 */
export function sampleDDPM(
  shape: number[],
  steps: number,
  rng: Generator,
  model: (x: tf.Tensor, t: number) => tf.Tensor,
): tf.Tensor {
  let x = rng.randn(shape);
  for (let i = 0; i < steps; i++) {
    const t = 1 - i / steps;
    const tPrev = 1 - (i + 1) / steps;
    const next = tf.tidy(() => {
      const eps = model(x, t);
      const a = alphaCumprod(t);
      const ap = alphaCumprod(tPrev);
      const alpha = a / ap;
      const mu = tf.mul(tf.sub(x, tf.mul(eps, (1 - alpha) / Math.sqrt(1 - a))), Math.sqrt(1 / alpha));
      const z = rng.randn(x.shape);
      const sigma = Math.sqrt(((1 - alpha) * (1 - ap)) / (1 - a));
      return tPrev !== 0 ? tf.add(mu, tf.mul(z, sigma)) : mu;
    });
    x.dispose();
    x = next;
  }
  return x;
}
