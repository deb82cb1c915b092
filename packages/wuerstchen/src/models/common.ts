/**
 * Blocks shared by the Stage C prior and the Stage B decoder (diffusers
 * src/diffusers/pipelines/wuerstchen/modeling_wuerstchen_common.py). Activations are NHWC.
 */
import * as tf from '@tensorflow/tfjs';
import {
  Attention,
  ChannelLayerNorm,
  Conv2d,
  Dropout,
  GELU,
  GlobalResponseNorm,
  Linear,
  Module,
  Sequential,
  SiLU,
} from '@wuerstchen/core';
import { pipe } from '@wuerstchen/core/internal';

/** Channel LayerNorm of an NHWC image tensor, no affine, eps 1e-6 (`WuerstchenLayerNorm`). */
export class WuerstchenLayerNorm extends ChannelLayerNorm {}

/** `x·(1 + a) + b` with `a, b = chunk(mapper(t), 2)` (`TimestepBlock`). */
export class TimestepBlock extends Module {
  readonly mapper: Linear;
  constructor(
    readonly c: number,
    cR: number,
  ) {
    super();
    this.mapper = this.child('mapper', new Linear(cR, 2 * c));
  }
  /** x: `[B, H, W, c]`, t: `[B, c_r]`. */
  forward(x: tf.Tensor, t: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const ab = this.mapper.forward(t);
      const [a, b] = tf.split(ab, 2, 1);
      const shape = [ab.shape[0], 1, 1, this.c];
      return tf.add(tf.mul(x, tf.add(a.reshape(shape), 1)), b.reshape(shape));
    });
  }
}

/** Linear(c_in → 4c) → GELU → GRN(4c) → Dropout → Linear(4c → c), per pixel (the ConvNeXt-V2 MLP). */
function channelwiseMlp(cIn: number, c: number, dropout: number): Sequential {
  return new Sequential([
    new Linear(cIn, 4 * c),
    new GELU(),
    new GlobalResponseNorm(4 * c),
    new Dropout(dropout),
    new Linear(4 * c, c),
  ]);
}

/**
 * Prior `ResBlock`: the skip is concatenated BEFORE the grouped depthwise conv
 * `Conv2d(c + c_skip → c, groups=c)`, then LN_C, then the channel-wise MLP; residual add.
 */
export class ResBlock extends Module {
  readonly depthwise: Conv2d;
  readonly norm: WuerstchenLayerNorm;
  readonly channelwise: Sequential;
  constructor(
    readonly c: number,
    readonly cSkip = 0,
    kernelSize = 3,
    dropout = 0,
  ) {
    super();
    this.depthwise = this.child(
      'depthwise',
      new Conv2d(c + cSkip, c, kernelSize, { padding: kernelSize >> 1, groups: c }),
    );
    this.norm = this.child('norm', new WuerstchenLayerNorm(c));
    this.channelwise = this.child('channelwise', channelwiseMlp(c, c, dropout));
  }
  forward(x: tf.Tensor, xSkip?: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const h = xSkip ? tf.concat([x, xSkip], 3) : x;
      return pipe(
        h,
        (t) => this.depthwise.forward(t),
        (t) => this.norm.forward(t),
        (t) => this.channelwise.forward(t),
        (t) => tf.add(t, x),
      );
    });
  }
}

/**
 * Decoder `ResBlockStageB` (modeling_wuerstchen_diffnext.py): depthwise conv → LN_C, THEN concatenate the skip, then the
 * channel-wise MLP from c + c_skip; residual add.
 */
export class ResBlockStageB extends Module {
  readonly depthwise: Conv2d;
  readonly norm: WuerstchenLayerNorm;
  readonly channelwise: Sequential;
  constructor(
    readonly c: number,
    readonly cSkip = 0,
    kernelSize = 3,
    dropout = 0,
  ) {
    super();
    this.depthwise = this.child('depthwise', new Conv2d(c, c, kernelSize, { padding: kernelSize >> 1, groups: c }));
    this.norm = this.child('norm', new WuerstchenLayerNorm(c));
    this.channelwise = this.child('channelwise', channelwiseMlp(c + cSkip, c, dropout));
  }
  forward(x: tf.Tensor, xSkip?: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      return pipe(
        x,
        (t) => this.depthwise.forward(t),
        (t) => this.norm.forward(t),
        (t) => (xSkip ? tf.concat([t, xSkip], 3) : t),
        (t) => this.channelwise.forward(t),
        (t) => tf.add(t, x),
      );
    });
  }
}

/**
 * `AttnBlock`: kv = Linear(SiLU(cond)); with self_attn the normed image tokens come first
 * in the key/value sequence; y = x + Attention(LN_C(x) tokens, kv).
 */
export class AttnBlock extends Module {
  readonly norm: WuerstchenLayerNorm;
  readonly attention: Attention;
  readonly kvMapper: Sequential;
  constructor(
    readonly c: number,
    cCond: number,
    readonly nhead: number,
    readonly selfAttn = true,
    dropout = 0,
  ) {
    super();
    this.norm = this.child('norm', new WuerstchenLayerNorm(c));
    this.attention = this.child(
      'attention',
      new Attention(c, { heads: nhead, dimHead: Math.floor(c / nhead), bias: true, dropout }),
    );
    this.kvMapper = this.child('kv_mapper', new Sequential([new SiLU(), new Linear(cCond, c)]));
  }
  /** x: `[B, H, W, c]`; cond: `[B, S, c_cond]`. */
  forward(x: tf.Tensor, cond: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const [b, h, w, c] = x.shape;
      const kv = this.kvMapper.forward(cond);
      const tokens = pipe(
        x,
        (t) => this.norm.forward(t),
        (t) => t.reshape([b, h * w, c]),
      );
      const context = this.selfAttn ? tf.concat([tokens, kv], 1) : kv;
      return pipe(
        tokens,
        (t) => this.attention.forward(t, context),
        (t) => t.reshape([b, h, w, c]),
        (t) => tf.add(x, t),
      );
    });
  }
}

/**
 * Sinusoidal embedding of the noise ratio r ∈ [0, 1] (the models' `gen_r_embedding`): sin then cos of r·10000·f_k with
 * f_k = exp(−k·ln(10000)/(half − 1)) computed in float32; odd widths get one zero column.
 */
export function genREmbedding(r: tf.Tensor, cR: number, maxPositions = 10000): tf.Tensor2D {
  return tf.tidy(() => {
    const half = Math.floor(cR / 2);
    const e = Math.log(maxPositions) / (half - 1);
    const freqs = tf.exp(tf.mul(tf.range(0, half, 1, 'float32'), -e));
    const args = tf.mul(tf.mul(r.reshape([-1, 1]), maxPositions), freqs.reshape([1, half]));
    const emb = tf.concat([tf.sin(args), tf.cos(args)], 1) as tf.Tensor2D;
    return cR % 2 === 1
      ? (tf.pad(emb, [
          [0, 0],
          [0, 1],
        ]) as tf.Tensor2D)
      : emb;
  });
}
