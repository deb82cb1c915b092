/**
 * Stage A: `PaellaVQModel` (diffusers src/diffusers/pipelines/wuerstchen/modeling_paella_vq_model.py).
 * A VQGAN with a 4× spatial compression: image `[B, H, W, 3]` ↔ latents
 * `[B, H/4, W/4, 4]`. Activations are NHWC.
 */
import * as tf from '@tensorflow/tfjs';
import {
  BatchNorm2d,
  ChannelLayerNorm,
  Conv2d,
  ConvTranspose2d,
  Embedding,
  GELU,
  Layer,
  Linear,
  Module,
  Parameter,
  PixelShuffle,
  PixelUnshuffle,
  Sequential,
  init,
} from '@wuerstchen/core';
import { pipe, replicatePad } from '@wuerstchen/core/internal';
import { ConfigSchema, convCount, linearCount, parseConfig } from './config_schema';

/** `vqgan/config.json` fields (class defaults = the published checkpoint, warp-ai/wuerstchen). */
export interface PaellaVQConfig {
  in_channels: number;
  out_channels: number;
  up_down_scale_factor: number;
  levels: number;
  bottleneck_blocks: number;
  embed_dim: number;
  latent_channels: number;
  num_vq_embeddings: number;
  /** Latent scale the decoder pipeline applies before `decode` (`decode(0.3764·latents)`); unused here. */
  scale_factor: number;
}

export const PAELLA_VQ_DEFAULTS: PaellaVQConfig = {
  in_channels: 3,
  out_channels: 3,
  up_down_scale_factor: 2,
  levels: 2,
  bottleneck_blocks: 12,
  embed_dim: 384,
  latent_channels: 4,
  num_vq_embeddings: 8192,
  scale_factor: 0.3764,
};

/** Level widths: embed_dim halved per level below the top one. */
function levelWidths(cfg: Pick<PaellaVQConfig, 'levels' | 'embed_dim'>): number[] {
  return Array.from({ length: cfg.levels }, (_, i) => Math.floor(cfg.embed_dim / 2 ** (cfg.levels - 1 - i)));
}

/** Sizes are capped far above the published checkpoint (embed_dim 384, 12 bottleneck blocks, 8192 codes). */
export const PAELLA_VQ_SCHEMA: ConfigSchema<PaellaVQConfig> = {
  name: 'PaellaVQModel',
  defaults: PAELLA_VQ_DEFAULTS,
  fields: {
    in_channels: { kind: 'int', min: 1, max: 64, counted: true },
    out_channels: { kind: 'int', min: 1, max: 64, counted: true },
    up_down_scale_factor: { kind: 'int', min: 1, max: 16, counted: true },
    levels: { kind: 'int', min: 1, max: 8, counted: true },
    bottleneck_blocks: { kind: 'int', min: 0, max: 256, counted: true },
    embed_dim: { kind: 'int', min: 1, max: 16384, counted: true },
    latent_channels: { kind: 'int', min: 1, max: 1024, counted: true },
    num_vq_embeddings: { kind: 'int', min: 1, max: 1 << 20, counted: true },
    scale_factor: { kind: 'number', min: 0, max: 1e6, minOpen: true },
  },
  check(cfg, fail) {
    if (levelWidths(cfg)[0] < 1)
      fail('embed_dim', `(${cfg.embed_dim}) is too small for ${cfg.levels} levels: each level below the top halves it`);
  },
  count(cfg) {
    const c = levelWidths(cfg);
    const r = cfg.up_down_scale_factor;
    const last = c[cfg.levels - 1];
    const latent = cfg.latent_channels;
    const mixing = (ch: number): number =>
      6 + convCount(ch, ch, 3, ch) + linearCount(ch, 4 * ch) + linearCount(4 * ch, ch);
    let total = convCount(cfg.in_channels * r * r, c[0], 1) + convCount(c[0], cfg.out_channels * r * r, 1);
    // down: a mixing block per level, stride-2 convs between levels, then Conv1×1 (no bias) + BatchNorm (4 vectors
    // and the num_batches_tracked scalar); the codebook; up: Conv1×1, the bottleneck blocks, then per level a
    // transposed conv and one block
    for (let i = 0; i < cfg.levels; i++) total += mixing(c[i]) + (i > 0 ? convCount(c[i - 1], c[i], 4) : 0);
    total += convCount(last, latent, 1, 1, false) + 4 * latent + 1;
    total += cfg.num_vq_embeddings * latent;
    total += convCount(latent, last, 1) + cfg.bottleneck_blocks * mixing(last);
    for (let i = 1; i < cfg.levels; i++) {
      const from = c[cfg.levels - i];
      const to = c[cfg.levels - 1 - i];
      total += from * to * 16 + to + mixing(to);
    }
    return total;
  },
};

/** Validates a `vqgan/config.json` (or a partial config) and fills the defaults; errors name `file` and the field. */
export function parsePaellaVQConfig(json: Record<string, unknown>, file = 'PaellaVQConfig'): PaellaVQConfig {
  return parseConfig(PAELLA_VQ_SCHEMA, json, file);
}

/** `nn.ReplicationPad2d(p)`: edge-replicate padding (no keys). */
export class ReplicationPad2d extends Module {
  constructor(readonly padding: number) {
    super();
  }
  forward(x: tf.Tensor): tf.Tensor {
    return replicatePad(x as tf.Tensor4D, this.padding);
  }
}

/**
 * `MixingResidualBlock(C, E)`, with `gammas` g0..g5:
 * `x += depthwise(LN(x)·(1+g0) + g1)·g2; x += channelwise(LN(x)·(1+g3) + g4)·g5`.
 * depthwise = ReplicationPad2d(1) → Conv2d(C, C, 3, groups=C); channelwise = Linear(C→E) → GELU → Linear(E→C).
 */
export class MixingResidualBlock extends Module {
  readonly gammas: Parameter;
  readonly norm1: ChannelLayerNorm;
  readonly depthwise: Sequential;
  readonly norm2: ChannelLayerNorm;
  readonly channelwise: Sequential;

  constructor(
    readonly inpChannels: number,
    embedDim: number,
  ) {
    super();
    this.norm1 = this.child('norm1', new ChannelLayerNorm(inpChannels, 1e-6));
    this.depthwise = this.child(
      'depthwise',
      new Sequential([new ReplicationPad2d(1), new Conv2d(inpChannels, inpChannels, 3, { groups: inpChannels })]),
    );
    this.norm2 = this.child('norm2', new ChannelLayerNorm(inpChannels, 1e-6));
    this.channelwise = this.child(
      'channelwise',
      new Sequential([new Linear(inpChannels, embedDim), new GELU(), new Linear(embedDim, inpChannels)]),
    );
    this.gammas = this.param('gammas', [6], { init: init.zeros() });
  }

  forward(x: tf.Tensor): tf.Tensor {
    const g = tf.unstack(this.gammas.value);
    // h + branch(norm(h)·(1 + scale) + shift)·gate, each temporary freed as soon as it is used.
    const mix = (
      h: tf.Tensor,
      norm: ChannelLayerNorm,
      branch: Sequential,
      scale: tf.Tensor,
      shift: tf.Tensor,
      gate: tf.Tensor,
    ) =>
      tf.tidy(() =>
        pipe(
          h,
          (t) => norm.forward(t),
          (t) => tf.mul(t, tf.add(scale, 1)),
          (t) => tf.add(t, shift),
          (t) => branch.forward(t),
          (t) => tf.mul(t, gate),
          (t) => tf.add(h, t),
        ),
      );
    const x1 = mix(x, this.norm1, this.depthwise, g[0], g[1], g[2]);
    const x2 = mix(x1, this.norm2, this.channelwise, g[3], g[4], g[5]);
    x1.dispose();
    g.forEach((t) => t.dispose());
    return x2;
  }
}

/**
 * Run `fn` off the gradient tape (`torch.no_grad`): the result is a new root, so no gradient
 * flows through it and integer results (codebook indices) can feed a differentiable gather.
 */
function noGrad<T extends tf.Tensor>(fn: () => T): T {
  return tf.customGrad(() => ({ value: fn(), gradFunc: () => [] }))() as T;
}

/** `tensor.detach()`. */
const detach = <T extends tf.Tensor>(t: T): T => noGrad(() => tf.clone(t));

/** Rows of the distance matrix computed per chunk, so `rows × n_e` stays ≤ 2^24 floats. */
const DIST_CHUNK_FLOATS = 1 << 24;

export interface VQOutput {
  /** `z + sg(z_q − z)`: the codebook vectors, with the straight-through gradient to z. `[B, h, w, C]`. */
  quantized: tf.Tensor4D;
  /** int32 `[B·h·w]`, nearest codebook row, flattened in (n, h, w) order. */
  indices: tf.Tensor1D;
}

export interface VQLossOutput extends VQOutput {
  /** `mean((sg(z_q) − z)²)` (pulls the encoder towards the codebook). */
  commitmentLoss: tf.Scalar;
  /** `mean((z_q − sg(z))²)` (pulls the codebook towards the encoder). */
  codebookLoss: tf.Scalar;
  /** `β·commitment + codebook` (diffusers `VectorQuantizer(legacy=False)`). */
  loss: tf.Scalar;
}

/**
 * diffusers `VectorQuantizer(n_e, vq_embed_dim, beta=0.25, legacy=False)` (src/diffusers/models/autoencoders/vae.py):
 * nearest codebook row by euclidean distance, straight-through estimator.
 */
export class VectorQuantizer extends Module {
  readonly embedding: Embedding;
  constructor(
    readonly nE: number,
    readonly vqEmbedDim: number,
    readonly beta = 0.25,
  ) {
    super();
    this.embedding = this.child('embedding', new Embedding(nE, vqEmbedDim));
  }

  /** Nearest codebook index of every pixel of z `[B, h, w, C]` → int32 `[B·h·w]`. */
  nearest(z: tf.Tensor): tf.Tensor1D {
    return tf.tidy(() => {
      if (z.rank !== 4 || z.shape[3] !== this.vqEmbedDim) {
        throw new Error(`VectorQuantizer: expected NHWC latents with ${this.vqEmbedDim} channels, got [${z.shape}]`);
      }
      const flat = z.reshape([-1, this.vqEmbedDim]) as tf.Tensor2D;
      const e = this.embedding.weight.value as tf.Tensor2D;
      // argmin_k ‖z − e_k‖² = argmin_k (‖e_k‖² − 2·z·e_k): ‖z‖² is the same for every k.
      const eNorm = tf.sum(tf.square(e), 1);
      const rows = Math.max(1, Math.floor(DIST_CHUNK_FLOATS / this.nE));
      const parts: tf.Tensor1D[] = [];
      for (let start = 0; start < flat.shape[0]; start += rows) {
        const chunk = flat.slice([start, 0], [Math.min(rows, flat.shape[0] - start), -1]);
        parts.push(tf.argMin(tf.sub(eNorm, tf.mul(tf.matMul(chunk, e, false, true), 2)), 1));
      }
      return (parts.length === 1 ? parts[0] : tf.concat(parts)).toInt() as tf.Tensor1D;
    });
  }

  /** Indices (off the tape) and the codebook rows `z_q` (differentiable w.r.t. the codebook). */
  private lookup(z: tf.Tensor): { indices: tf.Tensor1D; zq: tf.Tensor } {
    const indices = noGrad(() => this.nearest(z));
    return { indices, zq: this.embedding.forward(indices).reshape(z.shape) };
  }

  forward(z: tf.Tensor): VQOutput {
    return tf.tidy(() => {
      const { indices, zq } = this.lookup(z);
      return { quantized: tf.add(z, detach(tf.sub(zq, z))) as tf.Tensor4D, indices };
    });
  }

  /** forward plus the VQ loss terms, for training. */
  forwardWithLoss(z: tf.Tensor): VQLossOutput {
    return tf.tidy(() => {
      const { indices, zq } = this.lookup(z);
      const commitmentLoss = tf.mean(tf.squaredDifference(detach(zq), z)) as tf.Scalar;
      const codebookLoss = tf.mean(tf.squaredDifference(zq, detach(z))) as tf.Scalar;
      const loss = tf.add(tf.mul(commitmentLoss, this.beta), codebookLoss) as tf.Scalar;
      const quantized = tf.add(z, detach(tf.sub(zq, z))) as tf.Tensor4D;
      return { quantized, indices, commitmentLoss, codebookLoss, loss };
    });
  }
}

export class PaellaVQModel extends Module {
  readonly config: PaellaVQConfig;
  readonly inBlock: Sequential;
  readonly downBlocks: Sequential;
  readonly vquantizer: VectorQuantizer;
  readonly upBlocks: Sequential;
  readonly outBlock: Sequential;

  constructor(config: Partial<PaellaVQConfig> = {}) {
    super();
    const cfg = (this.config = parsePaellaVQConfig(config as Record<string, unknown>));
    const r = cfg.up_down_scale_factor;
    const c = levelWidths(cfg);
    const last = c[cfg.levels - 1];

    this.inBlock = this.child(
      'in_block',
      new Sequential([new PixelUnshuffle(r), new Conv2d(cfg.in_channels * r * r, c[0], 1)]),
    );

    const down: Layer[] = [];
    for (let i = 0; i < cfg.levels; i++) {
      if (i > 0) down.push(new Conv2d(c[i - 1], c[i], 4, { stride: 2, padding: 1 }));
      down.push(new MixingResidualBlock(c[i], c[i] * 4));
    }
    down.push(
      new Sequential([new Conv2d(last, cfg.latent_channels, 1, { bias: false }), new BatchNorm2d(cfg.latent_channels)]),
    );
    this.downBlocks = this.child('down_blocks', new Sequential(down));

    this.vquantizer = this.child('vquantizer', new VectorQuantizer(cfg.num_vq_embeddings, cfg.latent_channels, 0.25));

    const up: Layer[] = [new Sequential([new Conv2d(cfg.latent_channels, last, 1)])];
    for (let i = 0; i < cfg.levels; i++) {
      const ci = c[cfg.levels - 1 - i];
      for (let j = 0; j < (i === 0 ? cfg.bottleneck_blocks : 1); j++) up.push(new MixingResidualBlock(ci, ci * 4));
      if (i < cfg.levels - 1) up.push(new ConvTranspose2d(ci, c[cfg.levels - 2 - i], 4, { stride: 2, padding: 1 }));
    }
    this.upBlocks = this.child('up_blocks', new Sequential(up));

    this.outBlock = this.child(
      'out_block',
      new Sequential([new Conv2d(c[0], cfg.out_channels * r * r, 1), new PixelShuffle(r)]),
    );
  }

  /** image `[B, H, W, in_channels]` → unquantised, unscaled latents `[B, H/4, W/4, latent_channels]`. */
  encode(image: tf.Tensor): tf.Tensor4D {
    const { in_channels: ch } = this.config;
    if (image.rank !== 4 || image.shape[3] !== ch) {
      throw new Error(`PaellaVQModel.encode: expected an NHWC image [B, H, W, ${ch}], got [${image.shape}]`);
    }
    return tf.tidy(() =>
      pipe(
        image,
        (t) => this.inBlock.forward(t),
        (t) => this.downBlocks.forward(t),
      ),
    ) as tf.Tensor4D;
  }

  /**
   * latents `[B, h, w, latent_channels]` → image `[B, 4h, 4w, out_channels]`. With
   * `forceNotQuantize` (the default, what the pipelines do) the latents are decoded as they are.
   */
  decode(latents: tf.Tensor, forceNotQuantize = true): tf.Tensor4D {
    const { latent_channels: ch } = this.config;
    if (latents.rank !== 4 || latents.shape[3] !== ch) {
      throw new Error(`PaellaVQModel.decode: expected NHWC latents [B, h, w, ${ch}], got [${latents.shape}]`);
    }
    return tf.tidy(() => {
      const quant = forceNotQuantize ? latents : this.vquantizer.forward(latents).quantized;
      return pipe(
        quant,
        (t) => this.upBlocks.forward(t),
        (t) => this.outBlock.forward(t),
      );
    }) as tf.Tensor4D;
  }

  /** diffusers `forward`: `decode(encode(image))`, without quantisation. */
  forward(image: tf.Tensor): tf.Tensor4D {
    return tf.tidy(() => this.decode(this.encode(image)));
  }
}
