/**
 * Optimisation over our Parameters, as dome272/Wuerstchen train_stage_B.py / train_stage_C.py set it up:
 *  - AdamW with PyTorch semantics (decoupled decay `θ ← θ·(1 − lr·wd)` first, then
 *    `θ ← θ − lr/(1−β1^k) · m / (√v/√(1−β2^k) + eps)`), moments held as tf.Variables so they can
 *    be saved and restored bit for bit;
 *  - linear warm-up `lr·min(u, W)/W` on the update count u (GradualWarmupScheduler: the first
 *    update runs at lr 0);
 *  - global-norm gradient clipping (`clip_grad_norm_`: coef = max/(norm + 1e-6), clamped to 1);
 *  - EMA (dome272 Stage C: every N updates, copy while u < start, else ema = β·ema + (1−β)·θ).
 */
import * as tf from '@tensorflow/tfjs';
import { HostTensor, Parameter } from '@wuerstchen/core';
import { AdamWStep, adamwUpdate } from '@wuerstchen/core/internal';

/** Where saved optimizer / EMA tensors are read from; `get` throws for a missing key. */
export interface HostTensorSource {
  get(key: string): HostTensor;
}

export interface AdamWOptions {
  lr: number;
  betas: [number, number];
  eps: number;
  weightDecay: number;
}

export class AdamW {
  /** number of updates applied so far (the bias-correction step). */
  step = 0;
  private readonly m = new Map<string, tf.Variable>();
  private readonly v = new Map<string, tf.Variable>();

  constructor(
    readonly params: [string, Parameter][],
    readonly opts: AdamWOptions,
  ) {
    for (const [k, p] of params) {
      this.m.set(k, tf.variable(tf.zeros(p.shape), false, undefined));
      this.v.set(k, tf.variable(tf.zeros(p.shape), false, undefined));
    }
  }

  /** Apply one update with learning rate `lr` to every parameter that has a gradient. */
  apply(grads: Map<string, tf.Tensor>, lr: number): void {
    this.step++;
    const [b1, b2] = this.opts.betas;
    const bc1 = 1 - b1 ** this.step;
    const bc2 = 1 - b2 ** this.step;
    const step: AdamWStep = {
      beta1: b1,
      beta2: b2,
      decay: 1 - lr * this.opts.weightDecay,
      stepSize: lr / bc1,
      bc2Sqrt: Math.sqrt(bc2),
      eps: this.opts.eps,
    };
    for (const [k, p] of this.params) {
      const g = grads.get(k);
      if (!g) continue;
      const m = this.m.get(k)!;
      const v = this.v.get(k)!;
      const [p1, m1, v1] = adamwUpdate(p.value, m, v, g, step);
      m.assign(m1);
      v.assign(v1);
      p.value.assign(p1);
      tf.dispose([p1, m1, v1]);
    }
  }

  /** Moments as host tensors (tfjs layout), keyed `exp_avg.<param>` / `exp_avg_sq.<param>`. */
  stateTensors(prefix = ''): Map<string, HostTensor> {
    const out = new Map<string, HostTensor>();
    for (const [k, p] of this.params) {
      out.set(`${prefix}exp_avg.${k}`, {
        dtype: 'F32',
        shape: p.shape,
        data: Float32Array.from(this.m.get(k)!.dataSync() as Float32Array),
      });
      out.set(`${prefix}exp_avg_sq.${k}`, {
        dtype: 'F32',
        shape: p.shape,
        data: Float32Array.from(this.v.get(k)!.dataSync() as Float32Array),
      });
    }
    return out;
  }

  loadStateTensors(tensors: HostTensorSource, step: number, prefix = ''): void {
    for (const [k, p] of this.params) {
      for (const [name, store] of [
        ['exp_avg', this.m],
        ['exp_avg_sq', this.v],
      ] as const) {
        const h = tensors.get(`${prefix}${name}.${k}`);
        if (h.shape.join(',') !== p.shape.join(','))
          throw new Error(`optimizer state ${prefix}${name}.${k}: shape [${h.shape}] does not match [${p.shape}]`);
        const t = tf.tensor(h.data as Float32Array, h.shape, 'float32');
        store.get(k)!.assign(t);
        t.dispose();
      }
    }
    this.step = step;
  }

  dispose(): void {
    for (const t of [...this.m.values(), ...this.v.values()]) t.dispose();
    this.m.clear();
    this.v.clear();
  }
}

/** Linear warm-up over `warmup` updates; `u` is the number of updates already applied. */
export function warmupLR(base: number, warmup: number, u: number): number {
  return warmup > 0 ? (base * Math.min(u, warmup)) / warmup : base;
}

/**
 * torch `OneCycleLR(max_lr, total, pct_start, div_factor, final_div_factor, anneal='linear')`
 * (the Stage A proxy recipe: dome272/Paella ongoing_research/text-to-video/train_vivq.py).
 */
export function oneCycleLR(maxLr: number, total: number, u: number, pctStart = 0.1, div = 25, finalDiv = 1e4): number {
  const initial = maxLr / div;
  const min = initial / finalDiv;
  const up = Math.max(1, pctStart * total - 1);
  const down = Math.max(1, total - 1 - up);
  if (u <= up) return initial + (maxLr - initial) * (u / up);
  return maxLr + (min - maxLr) * Math.min(1, (u - up) / down);
}

/** Global L2 norm of all gradients (a JS number; non-finite when any gradient is). */
export function globalNorm(grads: Map<string, tf.Tensor>): number {
  if (grads.size === 0) return 0;
  const sq = tf.tidy(() => tf.addN([...grads.values()].map((g) => tf.sum(tf.square(g)))));
  const total = sq.dataSync()[0];
  sq.dispose();
  return Math.sqrt(total);
}

/** Scale every gradient in place by `min(1, max/(norm + 1e-6))` (returns the coefficient). */
export function clipGrads(grads: Map<string, tf.Tensor>, norm: number, maxNorm: number): number {
  const coef = Math.min(1, maxNorm / (norm + 1e-6));
  if (coef < 1) {
    for (const [k, g] of grads) {
      grads.set(k, tf.mul(g, coef));
      g.dispose();
    }
  }
  return coef;
}

/** Exponential moving average of a model's trainable parameters (keyed like the model). */
export class EMA {
  readonly shadow = new Map<string, tf.Variable>();
  constructor(readonly params: [string, Parameter][]) {
    for (const [k, p] of params) this.shadow.set(k, tf.variable(p.value.clone(), false));
  }
  /** dome272: copy while `u < start`, else `ema = β·ema + (1−β)·θ`. */
  update(beta: number, copy: boolean): void {
    for (const [k, p] of this.params) {
      const s = this.shadow.get(k)!;
      tf.tidy(() => s.assign(copy ? p.value : tf.add(tf.mul(s, beta), tf.mul(p.value, 1 - beta))));
    }
  }
  stateTensors(prefix = 'ema.'): Map<string, HostTensor> {
    const out = new Map<string, HostTensor>();
    for (const [k, p] of this.params)
      out.set(prefix + k, {
        dtype: 'F32',
        shape: p.shape,
        data: Float32Array.from(this.shadow.get(k)!.dataSync() as Float32Array),
      });
    return out;
  }
  load(tensors: HostTensorSource, prefix = 'ema.'): void {
    for (const [k] of this.params) {
      const h = tensors.get(prefix + k);
      const t = tf.tensor(h.data as Float32Array, h.shape, 'float32');
      this.shadow.get(k)!.assign(t);
      t.dispose();
    }
  }
  dispose(): void {
    for (const v of this.shadow.values()) v.dispose();
    this.shadow.clear();
  }
}
