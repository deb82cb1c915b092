/**
 * `WuerstchenDecoderPipeline` (diffusers `pipeline_wuerstchen.py`):
 * image embeddings + prompt → CLIP-H `last_hidden_state` → Stage B sampling (classifier-free
 * guidance with zero effnet for the unconditional half) → Stage A (VQGAN) decode → image.
 *
 * Tensors are NHWC: embeddings `[E, h, w, 16]`, latents `[N, int(h·10.67), int(w·10.67), 4]`,
 * images `[N, 4·H', 4·W', 3]` in [0, 1].
 */
import * as tf from '@tensorflow/tfjs';
import { LoraNetwork } from '@wuerstchen/core';
import { joinPath } from '@wuerstchen/core/internal';
import { ModelHandle, indexNumber, prepareModel, readModelIndex } from '../loader';
import { LoraStack, loadLoraFile } from '../lora';
import { EffnetCache, WuerstchenDiffNeXt, WuerstchenDiffNeXtConfig } from '../models/diffnext';
import { PaellaVQConfig, PaellaVQModel } from '../models/paella_vq';
import { tensorToPng } from './images';
import { StageProgress } from './progress';
import {
  PipelineArgumentError,
  PipelineComponents,
  PipelineLoadOptions,
  SamplingOptions,
  TextConditionedPipeline,
  checkSamplingOptions,
  checkShape,
  denoise,
  prepareLatents,
  prepareTextComponents,
  repeatInterleave,
  resolveGenerator,
  stripUndefined,
  toNegativeList,
  toPromptList,
} from './shared';

export interface DecoderPipelineConfig {
  /** decoder latent side = int(embedding side · latent_dim_scale). */
  latentDimScale: number;
}

export const DECODER_PIPELINE_DEFAULTS: DecoderPipelineConfig = { latentDimScale: 10.67 };

export type OutputType = 'tensor' | 'png' | 'latent';

export interface DecoderCallOptions extends SamplingOptions {
  /**
   * Decode latents larger than this many latent pixels per side in overlapping tiles (exact up to
   * float rounding; bounds the VQGAN's memory). Default 128 (512 px tiles); 0 decodes in one piece.
   */
  vqganTileSize?: number;
  /** `tensor` (default): NHWC float images in [0, 1]; `png`: PNG buffers; `latent`: the final decoder latents (unscaled). */
  outputType?: OutputType;
}

export interface DecoderOutput {
  /** `outputType: 'tensor'`: NHWC `[N, H, W, 3]` in [0, 1]. Owned by the caller. */
  images?: tf.Tensor4D;
  /** `outputType: 'latent'`: the final decoder latents, NHWC `[N, H', W', 4]` (before the VQGAN scale). Owned by the caller. */
  latents?: tf.Tensor4D;
  /** `outputType: 'png'`: one PNG per image. */
  png?: Buffer[];
}

/** Decoder defaults of diffusers' `__call__`: 12 steps, no guidance. */
export const DECODER_CALL_DEFAULTS = {
  numInferenceSteps: 12,
  guidanceScale: 0.0,
  numImagesPerPrompt: 1,
  outputType: 'tensor' as OutputType,
};

/** Geometry of the decoder: which embedding / image sizes it can take. */
export interface DecoderGeometry {
  latentDimScale: number;
  /** the decoder latent side must be a multiple of this (patch_size · 2^(levels − 1); 16 for the published config). */
  sizeMultiple: number;
  /** VQGAN latent → image scale (up_down_scale_factor · 2^(levels − 1) = 4). */
  vqScale: number;
}

export function decoderGeometry(
  decoder: Pick<WuerstchenDiffNeXtConfig, 'patch_size' | 'c_hidden'>,
  vqgan: Pick<PaellaVQConfig, 'up_down_scale_factor' | 'levels'>,
  latentDimScale: number,
): DecoderGeometry {
  return {
    latentDimScale,
    sizeMultiple: decoder.patch_size * 2 ** (decoder.c_hidden.length - 1),
    vqScale: vqgan.up_down_scale_factor * 2 ** (vqgan.levels - 1),
  };
}

/** Decoder latent side of an embedding side: `int(side · latent_dim_scale)`. */
export function decoderLatentSide(
  embeddingSide: number,
  latentDimScale = DECODER_PIPELINE_DEFAULTS.latentDimScale,
): number {
  return Math.trunc(embeddingSide * latentDimScale);
}

/** Embedding sides (1 … max) whose decoder latent side the decoder accepts. */
export function validEmbeddingSides(geo: DecoderGeometry, max = 96): number[] {
  const out: number[] = [];
  for (let e = 1; e <= max; e++) if (decoderLatentSide(e, geo.latentDimScale) % geo.sizeMultiple === 0) out.push(e);
  return out;
}

export interface WuerstchenDecoderPipeline {
  (imageEmbeddings: tf.Tensor, prompt: string | string[], options?: DecoderCallOptions): Promise<DecoderOutput>;
}

export class WuerstchenDecoderPipeline extends TextConditionedPipeline<
  [tf.Tensor, string | string[], DecoderCallOptions?],
  Promise<DecoderOutput>
> {
  readonly decoder: ModelHandle<WuerstchenDiffNeXt>;
  /** LoRA networks on the decoder (loadLora); they follow it when it is freed and loaded again. */
  readonly loras = new LoraStack();
  readonly vqgan: ModelHandle<PaellaVQModel>;
  readonly config: DecoderPipelineConfig;
  readonly geometry: DecoderGeometry;
  /** VQGAN `scale_factor` (0.3764): the latents are decoded as `vqgan.decode(scale_factor · x)`. */
  readonly vqScaleFactor: number;
  readonly decoderConfig: WuerstchenDiffNeXtConfig;

  constructor(
    components: PipelineComponents & {
      decoder: WuerstchenDiffNeXt | ModelHandle<WuerstchenDiffNeXt>;
      vqgan: PaellaVQModel | ModelHandle<PaellaVQModel>;
      /** configs of the lazily loaded networks (taken from the models when they are given directly). */
      decoderConfig?: WuerstchenDiffNeXtConfig;
      vqganConfig?: PaellaVQConfig;
      config?: Partial<DecoderPipelineConfig>;
    },
  ) {
    super(components);
    const c = components;
    this.decoder = ModelHandle.from(c.decoder);
    this.vqgan = ModelHandle.from(c.vqgan);
    this.config = { ...DECODER_PIPELINE_DEFAULTS, ...c.config };
    const decoderConfig = c.decoderConfig ?? (c.decoder instanceof WuerstchenDiffNeXt ? c.decoder.config : undefined);
    const vqganConfig = c.vqganConfig ?? (c.vqgan instanceof PaellaVQModel ? c.vqgan.config : undefined);
    if (!decoderConfig || !vqganConfig)
      throw new Error('WuerstchenDecoderPipeline: decoderConfig and vqganConfig are needed with lazily loaded models');
    this.decoderConfig = decoderConfig;
    this.geometry = decoderGeometry(decoderConfig, vqganConfig, this.config.latentDimScale);
    this.vqScaleFactor = vqganConfig.scale_factor;
  }

  /**
   * Reads a `WuerstchenDecoderPipeline` folder (model_index.json, decoder/, vqgan/,
   * text_encoder/, tokenizer/, scheduler/). All configs and weight headers are checked now; the
   * weights are read when first needed.
   */
  static fromPretrained(dir: string, opts: PipelineLoadOptions = {}): WuerstchenDecoderPipeline {
    const index = readModelIndex(dir, ['WuerstchenDecoderPipeline']);
    const decoder = prepareModel(joinPath(dir, 'decoder'), 'WuerstchenDiffNeXt', opts);
    const vqgan = prepareModel(joinPath(dir, 'vqgan'), 'PaellaVQModel', opts);
    const text = prepareTextComponents(dir, opts, {
      width: decoder.config.clip_embd,
      name: "the decoder's clip_embd",
      configFile: decoder.configFile,
    });
    if (vqgan.config.latent_channels !== decoder.config.c_out) {
      throw new PipelineArgumentError(
        `${vqgan.configFile}: latent_channels ${vqgan.config.latent_channels} does not match the decoder's c_out ${decoder.config.c_out} (${decoder.configFile})`,
      );
    }
    return new WuerstchenDecoderPipeline({
      ...text,
      decoder: ModelHandle.lazy(decoder),
      vqgan: ModelHandle.lazy(vqgan),
      decoderConfig: decoder.config,
      vqganConfig: vqgan.config,
      config: { latentDimScale: indexNumber(index, 'latent_dim_scale', DECODER_PIPELINE_DEFAULTS.latentDimScale) },
      offload: opts.offload,
    });
  }

  run(imageEmbeddings: tf.Tensor, prompt: string | string[], options: DecoderCallOptions = {}): Promise<DecoderOutput> {
    return this._call(imageEmbeddings, prompt, options);
  }

  /** Puts a LoRA file's decoder adapters (keys `decoder.…`, see lora.ts) on the decoder; as WuerstchenPriorPipeline.loadLora. */
  loadLora(file: string, opts: { scale?: number } = {}): LoraNetwork {
    const net = loadLoraFile(this.decoder.get(), file, 'decoder', opts.scale ?? 1);
    this.loras.add(net);
    return net;
  }

  fuseLora(): void {
    this.loras.fuse(() => this.decoder.get());
  }

  unfuseLora(): void {
    this.loras.unfuse();
  }

  unloadLora(): void {
    this.loras.clear();
  }

  release(): void {
    this.textEncoder.release();
    this.decoder.release();
    this.vqgan.release();
  }

  /** Throws a message naming the valid sizes when the decoder cannot take `[h, w]` embeddings. */
  checkEmbeddingSize(h: number, w: number): void {
    const geo = this.geometry;
    for (const [side, name] of [
      [h, 'height'],
      [w, 'width'],
    ] as const) {
      const lat = decoderLatentSide(side, geo.latentDimScale);
      if (lat % geo.sizeMultiple !== 0) {
        const valid = validEmbeddingSides(geo, 48).join(', ');
        throw new PipelineArgumentError(
          `image embeddings ${name} ${side} gives a decoder latent of ${lat} (int(${side}·${geo.latentDimScale})), ` +
            `but the decoder needs a multiple of ${geo.sizeMultiple}; valid embedding sides: ${valid}, ...`,
        );
      }
    }
  }

  /**
   * Decoder text conditioning for `count` latents: each of the P prompts covers count/P
   * consecutive latents (for one prompt: all of them, as diffusers); `cat([T, T_u])` with CFG.
   */
  encodePrompt(
    prompts: string[],
    count: number,
    cfg: boolean,
    negativePrompt: string | string[] | undefined,
    trace?: SamplingOptions['trace'],
  ): tf.Tensor3D {
    return this.encodePrompts(prompts, count / prompts.length, cfg, negativePrompt, trace);
  }

  override async _call(
    imageEmbeddings: tf.Tensor,
    prompt: string | string[],
    options: DecoderCallOptions = {},
  ): Promise<DecoderOutput> {
    if (!(imageEmbeddings instanceof tf.Tensor) || imageEmbeddings.rank !== 4) {
      throw new PipelineArgumentError(
        `imageEmbeddings must be an NHWC tensor [E, h, w, ${this.decoderConfig.effnet_embd}]`,
      );
    }
    const [e, eh, ew, ec] = imageEmbeddings.shape;
    if (ec !== this.decoderConfig.effnet_embd) {
      throw new PipelineArgumentError(
        `imageEmbeddings has ${ec} channels but the decoder expects effnet_embd = ${this.decoderConfig.effnet_embd} (NHWC)`,
      );
    }
    const prompts = toPromptList(prompt);
    const o = { ...DECODER_CALL_DEFAULTS, ...stripUndefined(options) };
    const plan = checkSamplingOptions(o);
    if (!['tensor', 'png', 'latent'].includes(o.outputType))
      throw new PipelineArgumentError(`outputType must be tensor, png or latent, got ${JSON.stringify(o.outputType)}`);
    if (e % prompts.length !== 0) {
      throw new PipelineArgumentError(
        `${e} image embeddings cannot be shared by ${prompts.length} prompts (pass one prompt, or one per group of embeddings)`,
      );
    }
    this.checkEmbeddingSize(eh, ew);
    if (plan.cfg && o.negativePrompt !== undefined) toNegativeList(o.negativePrompt, prompts.length);
    const count = e * plan.n;
    const geo = this.geometry;
    const shape = [
      count,
      decoderLatentSide(eh, geo.latentDimScale),
      decoderLatentSide(ew, geo.latentDimScale),
      this.decoderConfig.c_in,
    ];
    if (o.latents) checkShape(o.latents, shape, 'latents');
    const generator = resolveGenerator(o);

    const clip = this.encodePrompt(prompts, count, plan.cfg, o.negativePrompt, o.trace);
    const cache: EffnetCache = new Map();
    let effnet: tf.Tensor | null = null;
    let latents: tf.Tensor;
    try {
      effnet = tf.tidy(() => {
        const emb = repeatInterleave(imageEmbeddings, plan.n);
        return plan.cfg ? tf.concat([emb, tf.zerosLike(emb)], 0) : emb;
      });
      const eff: tf.Tensor = effnet;
      const decoder = this.decoder.get();
      this.loras.attach(decoder);
      const x = prepareLatents(shape, generator, o.latents, this.scheduler);
      latents = await denoise(x, {
        stage: 'decoder',
        scheduler: this.scheduler,
        plan,
        generator,
        options: o,
        predict: (xi, r) => decoder.forward(xi, r, eff, clip, { effnetCache: cache }),
      });
    } finally {
      clip.dispose();
      effnet?.dispose();
      for (const t of cache.values()) t.dispose();
      if (this.offload) this.decoder.release();
    }
    if (o.outputType === 'latent') return { latents: latents as tf.Tensor4D };
    let images: tf.Tensor4D;
    try {
      images = this.decodeLatents(latents, o);
    } finally {
      latents.dispose();
    }
    if (o.outputType === 'png') {
      try {
        return { png: await tensorToPng(images) };
      } finally {
        images.dispose();
      }
    }
    return { images };
  }

  /**
   * `vqgan.decode(scale_factor · latents).clamp(0, 1)` (NHWC), one image at a time. The VQGAN
   * decoder is local (per-pixel norms and MLPs, 3×3 depthwise convs), so latents larger than
   * `tileSize` are decoded in overlapping tiles whose halo covers the receptive field; the
   * result equals a whole decode up to float rounding, with a fraction of the memory
   * (a whole 1024² decode needs several GB of activations).
   */
  decodeLatents(
    latents: tf.Tensor,
    o: Pick<DecoderCallOptions, 'trace' | 'onProgress' | 'vqganTileSize'> = {},
  ): tf.Tensor4D {
    const progress = new StageProgress('vqgan', 1, o.onProgress);
    progress.start();
    const vqgan = this.vqgan.get();
    const tile = o.vqganTileSize === undefined ? DEFAULT_VQGAN_TILE : o.vqganTileSize;
    try {
      return tf.tidy(() => {
        const input = tf.mul(latents, this.vqScaleFactor);
        o.trace?.('vqgan_input', input);
        const [n, h, w] = input.shape as number[];
        let decoded: tf.Tensor4D;
        if (!tile || (h <= tile && w <= tile)) {
          decoded =
            n === 1
              ? vqgan.decode(input, true)
              : (tf.concat(
                  tf.split(input, n, 0).map((x) => vqgan.decode(x, true)),
                  0,
                ) as tf.Tensor4D);
        } else {
          const images = tf.split(input, n, 0).map((x) => decodeTiled(vqgan, x as tf.Tensor4D, tile, vqganHalo(vqgan)));
          decoded = (n === 1 ? images[0] : tf.concat(images, 0)) as tf.Tensor4D;
        }
        o.trace?.('vqgan_decoded', decoded);
        const images = tf.clipByValue(decoded, 0, 1) as tf.Tensor4D;
        progress.tick();
        return images;
      });
    } finally {
      if (this.offload) this.vqgan.release();
    }
  }
}

/** Default VQGAN tile (latent px): 128 → 512 px image tiles; a 1024² image decodes as 2×2 tiles, 512² in one piece. */
export const DEFAULT_VQGAN_TILE = 128;

/**
 * Receptive radius of `PaellaVQModel.decode` in latent pixels, rounded up generously: each
 * bottleneck MixingResidualBlock's 3×3 depthwise conv adds 1, each ConvTranspose2d(k4, s2, p1)
 * and each later block adds at most 1 more (in latent units).
 */
export function vqganHalo(vqgan: { config: Pick<PaellaVQConfig, 'bottleneck_blocks' | 'levels'> }): number {
  return vqgan.config.bottleneck_blocks + 2 * vqgan.config.levels + 2;
}

/** Decodes one `[1, h, w, c]` latent in tiles of `tile` latent px with `halo` px of context on each side. */
export function decodeTiled(vqgan: PaellaVQModel, latent: tf.Tensor4D, tile: number, halo: number): tf.Tensor4D {
  const [, h, w] = latent.shape;
  const rows: tf.Tensor[] = [];
  let scale = 0;
  for (let y0 = 0; y0 < h; y0 += tile) {
    const cols: tf.Tensor[] = [];
    for (let x0 = 0; x0 < w; x0 += tile) {
      const y1 = Math.min(y0 + tile, h);
      const x1 = Math.min(x0 + tile, w);
      const ya = Math.max(0, y0 - halo);
      const xa = Math.max(0, x0 - halo);
      const yb = Math.min(h, y1 + halo);
      const xb = Math.min(w, x1 + halo);
      const piece = tf.tidy(() => {
        const out = vqgan.decode(tf.slice(latent, [0, ya, xa, 0], [1, yb - ya, xb - xa, -1]), true);
        scale = out.shape[1]! / (yb - ya);
        return tf.slice(
          out,
          [0, (y0 - ya) * scale, (x0 - xa) * scale, 0],
          [1, (y1 - y0) * scale, (x1 - x0) * scale, -1],
        );
      });
      cols.push(piece);
    }
    rows.push(cols.length === 1 ? cols[0] : tf.concat(cols, 2));
  }
  return (rows.length === 1 ? rows[0] : tf.concat(rows, 1)) as tf.Tensor4D;
}
