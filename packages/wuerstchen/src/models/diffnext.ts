/**
 * Stage B: `WuerstchenDiffNeXt` (diffusers
 * src/diffusers/pipelines/wuerstchen/modeling_wuerstchen_diffnext.py). A 4-level U-Net of ResBlockStageB / TimestepBlock / AttnBlock that
 * denoises Stage A latents conditioned on the Stage C embedding (injected per level through the
 * antialiased bicubic resize and 1×1 mappers) and CLIP-H text.
 */
import * as tf from '@tensorflow/tfjs';
import {
  Conv2d,
  ConvTranspose2d,
  LayerNorm,
  Linear,
  Module,
  ModuleList,
  PixelShuffle,
  PixelUnshuffle,
  Sequential,
} from '@wuerstchen/core';
import { resizeBicubicAA } from '@wuerstchen/core/internal';
import { AttnBlock, ResBlockStageB, TimestepBlock, WuerstchenLayerNorm, genREmbedding } from './common';
import { ConfigSchema, convCount, linearCount, parseConfig } from './config_schema';
import { Trace } from './trace';

/** `decoder/config.json` fields; the defaults are the published checkpoint's (warp-ai/wuerstchen). */
export interface WuerstchenDiffNeXtConfig {
  c_in: number;
  c_out: number;
  c_r: number;
  patch_size: number;
  c_cond: number;
  c_hidden: number[];
  nhead: number[];
  blocks: number[];
  level_config: string[];
  inject_effnet: boolean[];
  effnet_embd: number;
  clip_embd: number;
  kernel_size: number;
  dropout: number;
}

export const DIFFNEXT_DEFAULTS: WuerstchenDiffNeXtConfig = {
  c_in: 4,
  c_out: 4,
  c_r: 64,
  patch_size: 2,
  c_cond: 1024,
  c_hidden: [320, 640, 1280, 1280],
  nhead: [-1, 10, 20, 20],
  blocks: [4, 4, 14, 4],
  level_config: ['CT', 'CTA', 'CTA', 'CTA'],
  inject_effnet: [false, true, true, true],
  effnet_embd: 16,
  clip_embd: 1024,
  kernel_size: 3,
  dropout: 0.1,
};

/** Widths, levels and blocks are capped far above the published checkpoint (c_hidden ≤ 1280, 4 levels, ≤ 14 blocks). */
export const DIFFNEXT_SCHEMA: ConfigSchema<WuerstchenDiffNeXtConfig> = {
  name: 'WuerstchenDiffNeXt',
  defaults: DIFFNEXT_DEFAULTS,
  maxListLength: 8,
  fields: {
    c_in: { kind: 'int', min: 1, max: 1024, counted: true },
    c_out: { kind: 'int', min: 1, max: 1024, counted: true },
    // gen_r_embedding divides by c_r/2 − 1
    c_r: { kind: 'int', min: 4, max: 4096, counted: true },
    patch_size: { kind: 'int', min: 1, max: 16, counted: true },
    c_cond: { kind: 'int', min: 1, max: 16384, counted: true },
    c_hidden: { kind: 'int[]', min: 1, max: 16384, counted: true },
    // -1 (or 0) marks a level without attention
    nhead: { kind: 'int[]', min: -1, max: 1024 },
    blocks: { kind: 'int[]', min: 1, max: 64, counted: true },
    level_config: { kind: 'string[]', pattern: /^[CTA]+$/, maxLength: 8 },
    inject_effnet: { kind: 'bool[]' },
    effnet_embd: { kind: 'int', min: 1, max: 16384, counted: true },
    clip_embd: { kind: 'int', min: 1, max: 16384, counted: true },
    kernel_size: { kind: 'int', min: 1, max: 31, counted: true },
    dropout: { kind: 'number', min: 0, max: 1, maxOpen: true },
  },
  check(cfg, fail) {
    const n = cfg.c_hidden.length;
    for (const k of ['nhead', 'blocks', 'level_config', 'inject_effnet'] as const) {
      if (cfg[k].length !== n) fail(k, `has ${cfg[k].length} entries but "c_hidden" has ${n}`);
    }
    cfg.level_config.forEach((types, i) => {
      if (types.includes('A') && !(cfg.nhead[i] > 0 && cfg.c_hidden[i] % cfg.nhead[i] === 0)) {
        fail(
          `nhead[${i}]`,
          `= ${cfg.nhead[i]} does not divide c_hidden[${i}] = ${cfg.c_hidden[i]}, and level ${i} has attention`,
        );
      }
    });
    // an even kernel would shift the feature maps (padding is kernel_size // 2)
    if (cfg.kernel_size % 2 === 0) fail('kernel_size', `must be odd, got ${cfg.kernel_size}`);
  },
  count(cfg) {
    const { c_hidden: ch, c_cond, c_r, kernel_size: k, patch_size: p } = cfg;
    const levels = ch.length;
    const block = (type: string, c: number, nhead: number, cSkip: number): number => {
      if (type === 'C')
        return convCount(c, c, k, c) + linearCount(c + cSkip, 4 * c) + 2 * 4 * c + linearCount(4 * c, c);
      if (type === 'T') return linearCount(c_r, 2 * c);
      const inner = nhead > 0 ? Math.floor(c / nhead) * nhead : c;
      return 3 * linearCount(c, inner) + linearCount(inner, c) + linearCount(c_cond, c);
    };
    let total =
      linearCount(cfg.clip_embd, c_cond) +
      convCount(cfg.c_in * p * p, ch[0], 1) +
      convCount(ch[0], cfg.c_out * 2 * p * p, 1);
    total += 2 * cfg.inject_effnet.filter(Boolean).length * convCount(cfg.effnet_embd, c_cond, 1);
    for (let i = 0; i < levels; i++) {
      const inject = cfg.inject_effnet[i] ? c_cond : 0;
      // down: the stride-2 conv from the level above, then the blocks; up: the blocks (the first takes the level
      // skip, except on the deepest level), then the stride-2 transposed conv to the level above
      if (i > 0) total += convCount(ch[i - 1], ch[i], 2) + ch[i] * ch[i - 1] * 4 + ch[i - 1];
      for (let b = 0; b < cfg.blocks[i]; b++) {
        [...cfg.level_config[i]].forEach((type, t) => {
          const levelSkip = i < levels - 1 && b === 0 && t === 0 ? ch[i] : 0;
          total += block(type, ch[i], cfg.nhead[i], inject) + block(type, ch[i], cfg.nhead[i], levelSkip + inject);
        });
      }
    }
    return total;
  },
};

/** Validates a `decoder/config.json` (or a partial config) and fills the defaults; errors name `file` and the field. */
export function parseDiffNeXtConfig(
  json: Record<string, unknown>,
  file = 'WuerstchenDiffNeXtConfig',
): WuerstchenDiffNeXtConfig {
  return parseConfig(DIFFNEXT_SCHEMA, json, file);
}

type LevelBlock = ResBlockStageB | TimestepBlock | AttnBlock | Sequential;

/** Resized effnet maps by `HxW`, computed once per effnet tensor (they are constant over sampling). */
export type EffnetCache = Map<string, tf.Tensor>;

/**
 * `next`, after disposing `prev` unless it is one of `keep` (the input, the level outputs the skips need): the
 * U-Net's block chain freed as it goes, as torch frees a tensor when its last reference goes (see `pipe`).
 */
function freeing(prev: tf.Tensor, next: tf.Tensor, keep: tf.Tensor[]): tf.Tensor {
  if (prev !== next && !keep.includes(prev)) prev.dispose();
  return next;
}

export class WuerstchenDiffNeXt extends Module {
  readonly config: WuerstchenDiffNeXtConfig;
  readonly clipMapper: Linear;
  readonly effnetMappers: ModuleList<Conv2d | null>;
  readonly seqNorm: LayerNorm;
  readonly embedding: Sequential;
  readonly downBlocks: ModuleList<ModuleList<LevelBlock>>;
  readonly upBlocks: ModuleList<ModuleList<LevelBlock>>;
  readonly clf: Sequential;

  constructor(config: Partial<WuerstchenDiffNeXtConfig> = {}) {
    super();
    const cfg = (this.config = parseDiffNeXtConfig(config as Record<string, unknown>));
    const levels = cfg.c_hidden.length;
    this.clipMapper = this.child('clip_mapper', new Linear(cfg.clip_embd, cfg.c_cond));
    const inject = [...cfg.inject_effnet, ...[...cfg.inject_effnet].reverse()];
    this.effnetMappers = this.child(
      'effnet_mappers',
      new ModuleList(inject.map((on) => (on ? new Conv2d(cfg.effnet_embd, cfg.c_cond, 1) : null))),
    );
    this.seqNorm = this.child('seq_norm', new LayerNorm(cfg.c_cond, 1e-6, false));
    const p = cfg.patch_size;
    this.embedding = this.child(
      'embedding',
      new Sequential([
        new PixelUnshuffle(p),
        new Conv2d(cfg.c_in * p * p, cfg.c_hidden[0], 1),
        new WuerstchenLayerNorm(cfg.c_hidden[0]),
      ]),
    );

    const block = (type: string, c: number, nhead: number, cSkip: number): LevelBlock => {
      if (type === 'C') return new ResBlockStageB(c, cSkip, cfg.kernel_size, cfg.dropout);
      if (type === 'A') return new AttnBlock(c, cfg.c_cond, nhead, true, cfg.dropout);
      if (type === 'T') return new TimestepBlock(c, cfg.c_r);
      throw new Error(`WuerstchenDiffNeXt: unknown block type "${type}" in level_config (expected C, T or A)`);
    };

    const down: ModuleList<LevelBlock>[] = [];
    for (let i = 0; i < levels; i++) {
      const items: LevelBlock[] = [];
      if (i > 0) {
        items.push(
          new Sequential([
            new WuerstchenLayerNorm(cfg.c_hidden[i - 1]),
            new Conv2d(cfg.c_hidden[i - 1], cfg.c_hidden[i], 2, { stride: 2 }),
          ]),
        );
      }
      for (let b = 0; b < cfg.blocks[i]; b++) {
        for (const type of cfg.level_config[i])
          items.push(block(type, cfg.c_hidden[i], cfg.nhead[i], cfg.inject_effnet[i] ? cfg.c_cond : 0));
      }
      down.push(new ModuleList(items));
    }
    this.downBlocks = this.child('down_blocks', new ModuleList(down));

    const up: ModuleList<LevelBlock>[] = [];
    for (let i = levels - 1; i >= 0; i--) {
      const items: LevelBlock[] = [];
      for (let b = 0; b < cfg.blocks[i]; b++) {
        [...cfg.level_config[i]].forEach((type, k) => {
          const levelSkip = i < levels - 1 && b === 0 && k === 0 ? cfg.c_hidden[i] : 0;
          items.push(block(type, cfg.c_hidden[i], cfg.nhead[i], levelSkip + (cfg.inject_effnet[i] ? cfg.c_cond : 0)));
        });
      }
      if (i > 0) {
        items.push(
          new Sequential([
            new WuerstchenLayerNorm(cfg.c_hidden[i]),
            new ConvTranspose2d(cfg.c_hidden[i], cfg.c_hidden[i - 1], 2, { stride: 2 }),
          ]),
        );
      }
      up.push(new ModuleList(items));
    }
    this.upBlocks = this.child('up_blocks', new ModuleList(up));

    this.clf = this.child(
      'clf',
      new Sequential([
        new WuerstchenLayerNorm(cfg.c_hidden[0]),
        new Conv2d(cfg.c_hidden[0], cfg.c_out * 2 * p * p, 1),
        new PixelShuffle(p),
      ]),
    );
  }

  /**
   * The latent side must be a multiple of patch_size·2^(levels−1) (16 for the published config)
   * so that the unshuffle, the stride-2 convs and the skip concatenations line up.
   */
  get sizeMultiple(): number {
    return this.config.patch_size * 2 ** (this.config.c_hidden.length - 1);
  }

  /** The effnet map resized (bicubic AA) to `[h, w]`, cached by size when a cache is given. */
  private resizedEffnet(
    effnet: tf.Tensor4D,
    h: number,
    w: number,
    cache: EffnetCache | undefined,
    trace?: Trace,
  ): tf.Tensor {
    const key = `${h}x${w}`;
    const hit = cache?.get(key);
    if (hit) return hit;
    const resized = resizeBicubicAA(effnet, [h, w]);
    trace?.(`effnet_resized_${key}`, resized);
    if (cache) cache.set(key, tf.keep(resized));
    return resized;
  }

  private effnetC(
    slot: number,
    effnet: tf.Tensor4D,
    x: tf.Tensor,
    cache: EffnetCache | undefined,
    trace?: Trace,
  ): tf.Tensor | null {
    const mapper = this.effnetMappers.at(slot);
    if (!mapper) return null;
    return mapper.forward(this.resizedEffnet(effnet, x.shape[1]!, x.shape[2]!, cache, trace));
  }

  private runBlock(
    block: LevelBlock,
    x: tf.Tensor,
    rEmbed: tf.Tensor,
    clip: tf.Tensor,
    skip: tf.Tensor | null,
  ): tf.Tensor {
    if (block instanceof ResBlockStageB) return block.forward(x, skip ?? undefined);
    if (block instanceof AttnBlock) return block.forward(x, clip);
    if (block instanceof TimestepBlock) return block.forward(x, rEmbed);
    return block.forward(x);
  }

  /** `_down_encode`: returns the level outputs deepest first. */
  private downEncode(
    x: tf.Tensor,
    rEmbed: tf.Tensor,
    effnet: tf.Tensor4D,
    clip: tf.Tensor,
    cache?: EffnetCache,
    trace?: Trace,
  ): tf.Tensor[] {
    const levels: tf.Tensor[] = [];
    const input = x;
    this.downBlocks.items.forEach((level, i) => {
      let effnetC: tf.Tensor | null = null;
      for (const block of level.items) {
        if (block instanceof ResBlockStageB && !effnetC) effnetC = this.effnetC(i, effnet, x, cache, trace);
        x = freeing(x, this.runBlock(block, x, rEmbed, clip, effnetC), [input, ...levels]);
      }
      effnetC?.dispose();
      levels.unshift(x);
    });
    return levels;
  }

  /** `_up_decode`: level skips enter the first ResBlockStageB of each level except the deepest. */
  private upDecode(
    levels: tf.Tensor[],
    rEmbed: tf.Tensor,
    effnet: tf.Tensor4D,
    clip: tf.Tensor,
    cache?: EffnetCache,
    trace?: Trace,
  ): tf.Tensor {
    let x = levels[0];
    const slots = this.effnetMappers.length / 2;
    this.upBlocks.items.forEach((level, u) => {
      let effnetC: tf.Tensor | null = null;
      for (const [j, block] of level.items.entries()) {
        let skip: tf.Tensor | null = null;
        let joined: tf.Tensor | null = null;
        if (block instanceof ResBlockStageB) {
          effnetC ??= this.effnetC(slots + u, effnet, x, cache, trace);
          const levelSkip = j === 0 && u > 0 ? levels[u] : null;
          if (levelSkip && effnetC) skip = joined = tf.concat([levelSkip, effnetC], 3);
          else skip = levelSkip ?? effnetC;
        }
        x = freeing(x, this.runBlock(block, x, rEmbed, clip, skip), levels);
        joined?.dispose();
      }
      effnetC?.dispose();
    });
    return x;
  }

  /**
   * x: `[B, H, W, c_in]` noisy Stage A latents (NHWC); r: `[B]`; effnet: `[B, h, w, effnet_embd]`;
   * clip: `[B, S, clip_embd]` → predicted noise `(x − a) / (σ(b)·(1 − 2·eps) + eps)`.
   * `effnetCache` reuses the resized effnet maps across calls with the same effnet tensor.
   */
  forward(
    x: tf.Tensor,
    r: tf.Tensor,
    effnet: tf.Tensor,
    clip: tf.Tensor,
    opts: { eps?: number; effnetCache?: EffnetCache; trace?: Trace } = {},
  ): tf.Tensor {
    const { trace, effnetCache } = opts;
    const eps = opts.eps ?? 1e-3;
    const m = this.sizeMultiple;
    if (x.rank !== 4 || x.shape[1]! % m !== 0 || x.shape[2]! % m !== 0) {
      throw new Error(
        `WuerstchenDiffNeXt: latent height and width must be multiples of ${m}, got x of shape [${x.shape}] (NHWC)`,
      );
    }
    return tf.tidy(() => {
      const rEmbed = genREmbedding(r, this.config.c_r);
      const clipEmbed = this.seqNorm.forward(this.clipMapper.forward(clip));
      trace?.('r_embed', rEmbed);
      trace?.('clip_embed', clipEmbed);
      const h = this.embedding.forward(x);
      trace?.('x_embedded', h);
      const levels = this.downEncode(h, rEmbed, effnet as tf.Tensor4D, clipEmbed, effnetCache, trace);
      levels.forEach((l, i) => trace?.(`level_output_${i}`, l));
      const out = this.upDecode(levels, rEmbed, effnet as tf.Tensor4D, clipEmbed, effnetCache, trace);
      trace?.('up_out', out);
      const [a, bRaw] = tf.split(this.clf.forward(out), 2, 3);
      const b = tf.add(tf.mul(tf.sigmoid(bRaw), 1 - 2 * eps), eps);
      trace?.('a', a);
      trace?.('b', b);
      return tf.div(tf.sub(x, a), b);
    });
  }
}
