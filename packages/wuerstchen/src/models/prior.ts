/**
 * Stage C: `WuerstchenPrior` (diffusers src/diffusers/pipelines/wuerstchen/modeling_wuerstchen_prior.py).
 * Maps a noisy 16-channel semantic latent, the noise ratio r and CLIP-bigG text embeddings to
 * the predicted noise.
 */
import * as tf from '@tensorflow/tfjs';
import { Conv2d, LeakyReLU, Linear, Module, ModuleList, Sequential } from '@wuerstchen/core';
import { pipe } from '@wuerstchen/core/internal';
import { AttnBlock, ResBlock, TimestepBlock, WuerstchenLayerNorm, genREmbedding } from './common';
import { ConfigSchema, convCount, linearCount, parseConfig } from './config_schema';
import { Trace } from './trace';

/** `prior/config.json` fields (class defaults; the published checkpoint uses c 1536, c_cond 1280, depth 32, nhead 24). */
export interface WuerstchenPriorConfig {
  c_in: number;
  c: number;
  c_cond: number;
  c_r: number;
  depth: number;
  nhead: number;
  dropout: number;
}

export const PRIOR_DEFAULTS: WuerstchenPriorConfig = {
  c_in: 16,
  c: 1280,
  c_cond: 1024,
  c_r: 64,
  depth: 16,
  nhead: 16,
  dropout: 0.1,
};

/** Widths and depth are capped far above the published checkpoint (c 1536, depth 32). */
export const PRIOR_SCHEMA: ConfigSchema<WuerstchenPriorConfig> = {
  name: 'WuerstchenPrior',
  defaults: PRIOR_DEFAULTS,
  fields: {
    c_in: { kind: 'int', min: 1, max: 1024, counted: true },
    c: { kind: 'int', min: 1, max: 16384, counted: true },
    c_cond: { kind: 'int', min: 1, max: 16384, counted: true },
    // gen_r_embedding divides by c_r/2 − 1
    c_r: { kind: 'int', min: 4, max: 4096, counted: true },
    depth: { kind: 'int', min: 1, max: 256, counted: true },
    nhead: { kind: 'int', min: 1, max: 1024 },
    dropout: { kind: 'number', min: 0, max: 1, maxOpen: true },
  },
  check(cfg, fail) {
    if (cfg.c % cfg.nhead !== 0) fail('c', `(${cfg.c}) must be divisible by "nhead" (${cfg.nhead})`);
  },
  count({ c_in, c, c_cond, c_r, depth, nhead }) {
    const inner = Math.floor(c / nhead) * nhead;
    const resBlock = convCount(c, c, 3, c) + linearCount(c, 4 * c) + 2 * 4 * c + linearCount(4 * c, c);
    const attnBlock = 3 * linearCount(c, inner) + linearCount(inner, c) + linearCount(c, c);
    const block = resBlock + linearCount(c_r, 2 * c) + attnBlock;
    return (
      convCount(c_in, c, 1) + linearCount(c_cond, c) + linearCount(c, c) + depth * block + convCount(c, 2 * c_in, 1)
    );
  },
};

/** Validates a `prior/config.json` (or a partial config) and fills the defaults; errors name `file` and the field. */
export function parsePriorConfig(json: Record<string, unknown>, file = 'WuerstchenPriorConfig'): WuerstchenPriorConfig {
  return parseConfig(PRIOR_SCHEMA, json, file);
}

type PriorBlock = ResBlock | TimestepBlock | AttnBlock;

export class WuerstchenPrior extends Module {
  readonly config: WuerstchenPriorConfig;
  readonly projection: Conv2d;
  readonly condMapper: Sequential;
  readonly blocks: ModuleList<PriorBlock>;
  readonly out: Sequential;

  constructor(config: Partial<WuerstchenPriorConfig> = {}) {
    super();
    const cfg = (this.config = parsePriorConfig(config as Record<string, unknown>));
    this.projection = this.child('projection', new Conv2d(cfg.c_in, cfg.c, 1));
    this.condMapper = this.child(
      'cond_mapper',
      new Sequential([new Linear(cfg.c_cond, cfg.c), new LeakyReLU(0.2), new Linear(cfg.c, cfg.c)]),
    );
    const blocks: PriorBlock[] = [];
    for (let i = 0; i < cfg.depth; i++) {
      blocks.push(
        new ResBlock(cfg.c, 0, 3, cfg.dropout),
        new TimestepBlock(cfg.c, cfg.c_r),
        new AttnBlock(cfg.c, cfg.c, cfg.nhead, true, cfg.dropout),
      );
    }
    this.blocks = this.child('blocks', new ModuleList(blocks));
    this.out = this.child('out', new Sequential([new WuerstchenLayerNorm(cfg.c), new Conv2d(cfg.c, 2 * cfg.c_in, 1)]));
  }

  /**
   * x: `[B, h, w, c_in]` (NHWC), r: `[B]`, c: `[B, S, c_cond]` → predicted noise `[B, h, w, c_in]`:
   * `(x − a) / (|1 − b| + 1e-5)`.
   */
  forward(x: tf.Tensor, r: tf.Tensor, c: tf.Tensor, trace?: Trace): tf.Tensor {
    return tf.tidy(() => {
      const rEmbed = genREmbedding(r, this.config.c_r);
      const cEmbed = this.condMapper.forward(c);
      trace?.('r_embed', rEmbed);
      trace?.('c_embed', cEmbed);
      const projected = this.projection.forward(x);
      trace?.('x_projected', projected);
      const h = pipe(
        projected,
        ...this.blocks.items.map((block) => (v: tf.Tensor) => {
          if (block instanceof ResBlock) return block.forward(v);
          if (block instanceof TimestepBlock) return block.forward(v, rEmbed);
          return block.forward(v, cEmbed);
        }),
      );
      trace?.('blocks_out', h);
      const [a, b] = tf.split(this.out.forward(h), 2, 3);
      trace?.('a', a);
      trace?.('b', b);
      return tf.div(tf.sub(x, a), tf.add(tf.abs(tf.sub(1, b)), 1e-5));
    });
  }
}
