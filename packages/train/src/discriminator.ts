/**
 * Stage A discriminator, `D:vqgan.py:119-144` (= `SC:modules/stage_a.py`):
 * SN-Conv3×3 s2 → LeakyReLU(0.2), then (depth−1)× [SN-Conv3×3 s2, InstanceNorm2d, LeakyReLU(0.2)],
 * then Conv1×1 → 1 (the final Sigmoid is folded into the BCE-with-logits loss). Channel widths
 * follow the reference formula (d = max(depth − 3, 3); c_in(i) = c_hidden/2^max(d−i, 0),
 * c_out(i) = c_hidden/2^max(d−1−i, 0)), which needs depth ≥ 4. Spectral norm keeps torch's
 * one power iteration per training forward (u, v buffers); keys `encoder.<i>.weight_orig`, `bias`,
 * `weight_u`, `weight_v` (v in our flattening order of the kernel, [kh·kw·in]).
 */
import * as tf from '@tensorflow/tfjs';
import { Conv2d, LeakyReLU, Module, ModuleList, Parameter, init } from '@wuerstchen/core';
import { Generator } from 'wuerstchen';

export class SNConv2d extends Module {
  readonly weightOrig: Parameter;
  readonly bias: Parameter;
  readonly u: Parameter;
  readonly v: Parameter;
  /** run the power iteration on the next training forward. */
  powerIteration = false;
  constructor(
    readonly cin: number,
    readonly cout: number,
    readonly k = 3,
    readonly stride = 2,
  ) {
    super();
    this.weightOrig = this.param('weight_orig', [cout, cin, k, k], { layout: 'conv', init: init.zeros() });
    this.bias = this.param('bias', [cout], { init: init.zeros() });
    this.u = this.param('weight_u', [cout], { trainable: false, init: init.zeros() });
    this.v = this.param('weight_v', [k * k * cin], { trainable: false, init: init.zeros() });
  }

  /** Random unit u, v (torch: normal then normalise). */
  initVectors(rng: Generator): void {
    const unit = (n: number) => {
      const d = rng.randnArray(n);
      const norm = Math.sqrt(d.reduce((a, x) => a + x * x, 0)) + 1e-12;
      return d.map((x) => x / norm);
    };
    this.u.load({ dtype: 'F32', shape: [this.cout], data: unit(this.cout) });
    this.v.load({ dtype: 'F32', shape: [this.k * this.k * this.cin], data: unit(this.k * this.k * this.cin) });
  }

  forward(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const w = this.weightOrig.value;
      const m = w.reshape([this.k * this.k * this.cin, this.cout]); // = W_matᵀ up to a row permutation
      if (this.training && this.powerIteration) {
        tf.tidy(() => {
          const mc = m;
          const v = tf.matMul(mc, this.u.value.reshape([this.cout, 1])).reshape([-1]);
          const vn = tf.div(v, tf.add(tf.norm(v, 'euclidean'), 1e-12));
          const u = tf.matMul(vn.reshape([1, -1]), mc).reshape([-1]);
          const un = tf.div(u, tf.add(tf.norm(u, 'euclidean'), 1e-12));
          this.v.value.assign(vn);
          this.u.value.assign(un);
        });
      }
      // sigma = uᵀ W v with u, v constants (gradient flows to W only)
      const sigma = tf.sum(tf.mul(tf.matMul(this.v.value.reshape([1, -1]), m).reshape([-1]), this.u.value));
      const wn = tf.div(w, sigma) as tf.Tensor4D;
      const p = (this.k - 1) >> 1;
      const xp = tf.pad(x as tf.Tensor4D, [
        [0, 0],
        [p, p],
        [p, p],
        [0, 0],
      ]);
      return tf.add(tf.conv2d(xp as tf.Tensor4D, wn, this.stride, 'valid'), this.bias.value);
    });
  }
}

/** InstanceNorm2d(affine=False, eps 1e-5) on NHWC. */
export class InstanceNorm2d extends Module {
  constructor(readonly eps = 1e-5) {
    super();
  }
  forward(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const { mean, variance } = tf.moments(x, [1, 2], true);
      return tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, this.eps)));
    });
  }
}

export interface DiscriminatorConfig {
  c_in: number;
  c_hidden: number;
  depth: number;
}

export class Discriminator extends Module {
  readonly encoder: ModuleList<Module & { forward(x: tf.Tensor): tf.Tensor }>;
  readonly shuffle: Conv2d;
  readonly config: DiscriminatorConfig;
  constructor(config: Partial<DiscriminatorConfig> = {}) {
    super();
    const cfg = (this.config = { c_in: 3, c_hidden: 512, depth: 6, ...config });
    if (cfg.depth < 4)
      throw new Error(
        `Discriminator: depth ${cfg.depth} < 4 does not reach c_hidden with the reference channel formula`,
      );
    const d = Math.max(cfg.depth - 3, 3);
    const layers: (Module & { forward(x: tf.Tensor): tf.Tensor })[] = [
      new SNConv2d(cfg.c_in, cfg.c_hidden >> d),
      new LeakyReLU(0.2),
    ];
    for (let i = 0; i < cfg.depth - 1; i++) {
      const ci = cfg.c_hidden >> Math.max(d - i, 0);
      const co = cfg.c_hidden >> Math.max(d - 1 - i, 0);
      layers.push(new SNConv2d(ci, co), new InstanceNorm2d(), new LeakyReLU(0.2));
    }
    this.encoder = this.child('encoder', new ModuleList(layers));
    this.shuffle = this.child('shuffle', new Conv2d(cfg.c_hidden, 1, 1));
  }

  get convs(): SNConv2d[] {
    return this.encoder.items.filter((m): m is SNConv2d => m instanceof SNConv2d);
  }

  /** Patch logits `[B, H/2^depth, W/2^depth, 1]` (apply sigmoid for probabilities). */
  forward(x: tf.Tensor, powerIteration = false): tf.Tensor {
    for (const c of this.convs) c.powerIteration = powerIteration;
    return tf.tidy(() => this.shuffle.forward(this.encoder.items.reduce((h, m) => m.forward(h), x)));
  }
}

/** mean BCE(σ(logits), target) with a constant target, computed stably from logits. */
export function bceWithLogits(logits: tf.Tensor, target: number): tf.Scalar {
  return tf.tidy(() => {
    // max(l, 0) − l·y + log(1 + exp(−|l|))
    const l = logits;
    return tf.mean(tf.add(tf.sub(tf.relu(l), tf.mul(l, target)), tf.log1p(tf.exp(tf.neg(tf.abs(l)))))) as tf.Scalar;
  });
}
