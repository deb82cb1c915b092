import * as tf from '@tensorflow/tfjs';
import { Module, ModuleList, pipe } from '../module';
import { Linear } from './linear';
import { Dropout } from './activation';
import { FusedKernel, hasFusedKernel, runFused } from './fused';

/** Split `[B, L, heads·d]` into `[B·heads, L, d]` (head h = channels [h·d, (h+1)·d)). */
function splitHeads(t: tf.Tensor, heads: number): tf.Tensor3D {
  const [b, l, c] = t.shape;
  return t
    .reshape([b, l, heads, c / heads])
    .transpose([0, 2, 1, 3])
    .reshape([b * heads, l, c / heads]);
}

function mergeHeads(t: tf.Tensor, batch: number, heads: number): tf.Tensor3D {
  const [, l, d] = t.shape;
  return t
    .reshape([batch, heads, l, d])
    .transpose([0, 2, 1, 3])
    .reshape([batch, l, heads * d]);
}

/**
 * Scaled dot-product attention over `[B, L, C]` queries and `[B, S, C]` keys/values with
 * `heads` heads: softmax(q·kᵀ·scale + mask)·v. `mask` is additive and broadcasts to `[B·heads, L, S]`.
 */
export function multiHeadAttention(
  q: tf.Tensor,
  k: tf.Tensor,
  v: tf.Tensor,
  heads: number,
  scale: number,
  mask?: tf.Tensor,
): tf.Tensor3D {
  return tf.tidy(() => {
    const batch = q.shape[0];
    const [kh, vh] = [splitHeads(k, heads), splitHeads(v, heads)];
    // Each [B·heads, L, S] score tensor is freed as soon as the next one exists.
    return pipe(
      q,
      (t) => splitHeads(tf.mul(t, scale), heads),
      (t) => tf.matMul(t, kh, false, true),
      (t) => (mask ? tf.add(t, mask) : t),
      (t) =>
        hasFusedKernel(FusedKernel.Softmax, t) ? runFused(FusedKernel.Softmax, { logits: t }) : tf.softmax(t, -1),
      (t) => tf.matMul(t, vh),
      (t) => mergeHeads(t, batch, heads),
    ) as tf.Tensor3D;
  });
}

export interface AttentionOptions {
  heads: number;
  dimHead: number;
  bias?: boolean;
  /** width of `encoder_hidden_states`; defaults to queryDim. */
  crossAttentionDim?: number;
  dropout?: number;
}

/**
 * diffusers `Attention` with `AttnProcessor` (src/diffusers/models/attention_processor.py): parameters `to_q`, `to_k`, `to_v`,
 * `to_out.0`; scale = dim_head^-0.5. Takes token sequences `[B, L, C]`.
 */
export class Attention extends Module {
  readonly heads: number;
  readonly toQ: Linear;
  readonly toK: Linear;
  readonly toV: Linear;
  readonly toOut: ModuleList<Linear | Dropout>;
  readonly scale: number;

  constructor(
    readonly queryDim: number,
    opts: AttentionOptions,
  ) {
    super();
    this.heads = opts.heads;
    const inner = opts.heads * opts.dimHead;
    const bias = opts.bias ?? true;
    const kvDim = opts.crossAttentionDim ?? queryDim;
    this.scale = opts.dimHead ** -0.5;
    this.toQ = this.child('to_q', new Linear(queryDim, inner, bias));
    this.toK = this.child('to_k', new Linear(kvDim, inner, bias));
    this.toV = this.child('to_v', new Linear(kvDim, inner, bias));
    this.toOut = this.child(
      'to_out',
      new ModuleList<Linear | Dropout>([new Linear(inner, queryDim, true), new Dropout(opts.dropout ?? 0)]),
    );
  }

  /** x: `[B, L, C]`; context: `[B, S, C_kv]` (defaults to x, self-attention). */
  forward(x: tf.Tensor, context?: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const kv = context ?? x;
      const o = multiHeadAttention(
        this.toQ.forward(x),
        this.toK.forward(kv),
        this.toV.forward(kv),
        this.heads,
        this.scale,
      );
      return (this.toOut.at(1) as Dropout).forward((this.toOut.at(0) as Linear).forward(o));
    });
  }
}
