/**
 * `WuerstchenCombinedPipeline` (diffusers `pipeline_wuerstchen_combined.py`): text →
 * prior → decoder → image, with the combined pipeline's defaults (512², prior guidance 4, 60
 * prior steps, 12 decoder steps, no decoder guidance). One generator (or seed) draws all noise in
 * the order diffusers draws them, so a seed reproduces the same image.
 *
 * Memory: the networks are loaded and freed stage by stage — CLIP-bigG, then the prior, then
 * CLIP-H, then the decoder, then the VQGAN — so only one of them is in memory at a time
 * (unless `offload: false`).
 */
import * as tf from '@tensorflow/tfjs';
import { LoraNetwork } from '@wuerstchen/core';
import { fetchPipelineFolder } from '../loader';
import { Generator } from '../rng';
import { DecoderGeometry, DecoderOutput, OutputType, WuerstchenDecoderPipeline, decoderLatentSide } from './decoder';
import { WuerstchenPriorPipeline, priorLatentSide } from './prior';
import { TINY_MODEL_DIR, pipelineFolders } from '../tiny';
import { LoraComponent, loraComponents } from '../lora';
import { ProgressCallback } from './progress';
import {
  Callable,
  PipelineArgumentError,
  PipelineLoadOptions,
  SamplingOptions,
  checkPositiveInt,
  resolveGenerator,
  stripUndefined,
} from './shared';

export interface CombinedCallOptions {
  negativePrompt?: string | string[];
  /** default 512; must be one of `validImageSides()` (multiples of 128 for the published models). */
  width?: number;
  height?: number;
  /** prior steps (default 60). */
  priorNumInferenceSteps?: number;
  priorTimesteps?: ArrayLike<number>;
  /** default 4. */
  priorGuidanceScale?: number;
  /** decoder steps (default 12); `decoderNumInferenceSteps` is the same. */
  numInferenceSteps?: number;
  decoderNumInferenceSteps?: number;
  decoderTimesteps?: ArrayLike<number>;
  /** default 0 (no guidance). */
  decoderGuidanceScale?: number;
  numImagesPerPrompt?: number;
  seed?: number;
  generator?: Generator;
  /** initial prior latents, NHWC (not disposed). */
  latents?: tf.Tensor;
  /** `tensor` (default), `png` or `latent` (decoder latents). */
  outputType?: OutputType;
  /** see DecoderCallOptions.vqganTileSize (default 128 latent px; 0 = no tiling). */
  vqganTileSize?: number;
  onProgress?: ProgressCallback;
  /** per-step callbacks (latents after each step, NHWC). */
  priorCallback?: SamplingOptions['callback'];
  callback?: SamplingOptions['callback'];
  /** Replaying a reference run: scheduler noise of the prior steps, initial decoder latents, decoder step noise (NHWC). */
  priorStepNoise?: SamplingOptions['stepNoise'];
  decoderLatents?: tf.Tensor;
  decoderStepNoise?: SamplingOptions['stepNoise'];
  trace?: SamplingOptions['trace'];
}

export const COMBINED_CALL_DEFAULTS = {
  width: 512,
  height: 512,
  priorNumInferenceSteps: 60,
  priorGuidanceScale: 4.0,
  numInferenceSteps: 12,
  decoderGuidanceScale: 0.0,
  numImagesPerPrompt: 1,
  outputType: 'tensor' as OutputType,
};

/**
 * Image sides (≤ max) the combined pipeline produces exactly: side s is valid when the decoder
 * accepts its latent (`int(ceil(s/42.67)·10.67)` a multiple of `sizeMultiple`) and the VQGAN
 * output side `vqScale·latent` equals s. For the published models: the multiples of 128.
 */
export function validImageSides(geo: DecoderGeometry, resolutionMultiple: number, max = 4096): number[] {
  const out: number[] = [];
  for (let h = 1; ; h++) {
    const lat = decoderLatentSide(h, geo.latentDimScale);
    const side = geo.vqScale * lat;
    if (side > max) break;
    if (lat % geo.sizeMultiple === 0 && priorLatentSide(side, resolutionMultiple) === h) out.push(side);
  }
  return out;
}

/** The image side the pipelines produce for a requested side. */
export function outputSide(side: number, geo: DecoderGeometry, resolutionMultiple: number): number {
  return geo.vqScale * decoderLatentSide(priorLatentSide(side, resolutionMultiple), geo.latentDimScale);
}

/** A message naming the valid sizes, or null when `side` is fine. */
export function checkImageSide(
  side: number,
  name: string,
  geo: DecoderGeometry,
  resolutionMultiple: number,
): string | null {
  const valid = validImageSides(geo, resolutionMultiple, Math.max(2048, side + 512));
  if (valid.includes(side)) return null;
  const below = valid.filter((v) => v < side).pop();
  const above = valid.find((v) => v > side);
  const nearest = [below, above].filter((v) => v !== undefined).join(' or ');
  const step =
    valid.length > 1 && valid.every((v, i) => v === valid[0] * (i + 1))
      ? `multiples of ${valid[0]}`
      : valid.slice(0, 16).join(', ');
  const made = outputSide(side, geo, resolutionMultiple);
  const why =
    decoderLatentSide(priorLatentSide(side, resolutionMultiple), geo.latentDimScale) % geo.sizeMultiple !== 0
      ? `the decoder cannot take it (its latent side int(ceil(${side}/${resolutionMultiple})·${geo.latentDimScale}) must be a multiple of ${geo.sizeMultiple})`
      : `the pipeline would make ${made} px instead`;
  return `${name} ${side} is not supported: ${why}; valid sizes are ${step} (nearest: ${nearest})`;
}

export interface CombinedOutput extends DecoderOutput {
  /** the prior's image embeddings are freed after decoding; their shape is reported. */
  imageEmbeddingsShape: number[];
}

export interface WuerstchenCombinedPipeline {
  (prompt: string | string[], options?: CombinedCallOptions): Promise<CombinedOutput>;
}

export class WuerstchenCombinedPipeline extends Callable<
  [string | string[], CombinedCallOptions?],
  Promise<CombinedOutput>
> {
  constructor(
    readonly priorPipe: WuerstchenPriorPipeline,
    readonly decoderPipe: WuerstchenDecoderPipeline,
  ) {
    super();
  }

  /**
   * A prior folder (`warp-ai/wuerstchen-prior` layout) and a decoder folder (`warp-ai/wuerstchen`);
   * or one folder holding both as `wuerstchen-prior/` and `wuerstchen/`; or, with no folder, the
   * bundled tiny model ({@link TINY_MODEL_DIR}).
   */
  static fromPretrained(
    priorDir?: string,
    decoderDir?: string,
    opts: PipelineLoadOptions = {},
  ): WuerstchenCombinedPipeline {
    const both =
      decoderDir === undefined
        ? pipelineFolders(priorDir ?? TINY_MODEL_DIR)
        : { prior: priorDir!, decoder: decoderDir };
    const prior = WuerstchenPriorPipeline.fromPretrained(both.prior, opts);
    const decoder = WuerstchenDecoderPipeline.fromPretrained(both.decoder, opts);
    return new WuerstchenCombinedPipeline(prior, decoder);
  }

  /**
   * Fetches a folder holding `wuerstchen-prior/` and `wuerstchen/` from `baseUrl` (in a browser, or in Node ≥ 18)
   * and loads it as {@link fromPretrained} does, with the same checks. A relative URL is taken relative to the page.
   * The fetched files stay in memory: with offloading, the networks are read from them again for each image.
   */
  static async fromUrl(baseUrl: string, opts: PipelineLoadOptions = {}): Promise<WuerstchenCombinedPipeline> {
    const both = pipelineFolders(baseUrl);
    const [prior, decoder] = await Promise.all([
      fetchPipelineFolder(both.prior, 'WuerstchenPriorPipeline', opts),
      fetchPipelineFolder(both.decoder, 'WuerstchenDecoderPipeline', opts),
    ]);
    try {
      return WuerstchenCombinedPipeline.fromPretrained(prior.baseUrl, decoder.baseUrl, opts);
    } catch (e) {
      prior.release();
      decoder.release();
      throw e;
    }
  }

  /** Image sides this pair of pipelines produces exactly. */
  validImageSides(max = 4096): number[] {
    return validImageSides(this.decoderPipe.geometry, this.priorPipe.config.resolutionMultiple, max);
  }

  /** Throws (naming the valid sizes) when width or height cannot be produced exactly. */
  checkSize(width: number, height: number): void {
    for (const [side, name] of [
      [width, 'width'],
      [height, 'height'],
    ] as const) {
      checkPositiveInt(side, name);
      const msg = checkImageSide(side, name, this.decoderPipe.geometry, this.priorPipe.config.resolutionMultiple);
      if (msg) throw new PipelineArgumentError(msg);
    }
  }

  run(prompt: string | string[], options: CombinedCallOptions = {}): Promise<CombinedOutput> {
    return this._call(prompt, options);
  }

  release(): void {
    this.priorPipe.release();
    this.decoderPipe.release();
  }

  /**
   * A LoRA file: its `prior.` adapters go on the prior (diffusers: `pipe.prior_pipe.load_lora_weights`),
   * its `decoder.` adapters on the decoder; an unprefixed file is the prior's.
   */
  loadLora(file: string, opts: { scale?: number } = {}): Partial<Record<LoraComponent, LoraNetwork>> {
    return Object.fromEntries(
      loraComponents(file).map((c) => [c, (c === 'prior' ? this.priorPipe : this.decoderPipe).loadLora(file, opts)]),
    );
  }

  fuseLora(): void {
    this.priorPipe.fuseLora();
    this.decoderPipe.fuseLora();
  }

  unfuseLora(): void {
    this.priorPipe.unfuseLora();
    this.decoderPipe.unfuseLora();
  }

  unloadLora(): void {
    this.priorPipe.unloadLora();
    this.decoderPipe.unloadLora();
  }

  override async _call(prompt: string | string[], options: CombinedCallOptions = {}): Promise<CombinedOutput> {
    const o = { ...COMBINED_CALL_DEFAULTS, ...stripUndefined(options) };
    this.checkSize(o.width, o.height);
    const generator = resolveGenerator(o);
    const { imageEmbeddings } = await this.priorPipe(prompt, {
      width: o.width,
      height: o.height,
      numInferenceSteps: o.priorNumInferenceSteps,
      timesteps: o.priorTimesteps,
      guidanceScale: o.priorGuidanceScale,
      negativePrompt: o.negativePrompt,
      numImagesPerPrompt: o.numImagesPerPrompt,
      generator,
      latents: o.latents,
      stepNoise: o.priorStepNoise,
      onProgress: o.onProgress,
      callback: o.priorCallback,
      trace: o.trace ? (name, t) => o.trace!(`prior_${name}`, t) : undefined,
    });
    try {
      const out = await this.decoderPipe(imageEmbeddings, prompt, {
        numInferenceSteps: o.decoderNumInferenceSteps ?? o.numInferenceSteps,
        timesteps: o.decoderTimesteps,
        guidanceScale: o.decoderGuidanceScale,
        negativePrompt: o.negativePrompt,
        generator,
        latents: o.decoderLatents,
        stepNoise: o.decoderStepNoise,
        outputType: o.outputType,
        vqganTileSize: o.vqganTileSize,
        onProgress: o.onProgress,
        callback: o.callback,
        trace: o.trace ? (name, t) => o.trace!(name.startsWith('vqgan_') ? name : `decoder_${name}`, t) : undefined,
      });
      return { ...out, imageEmbeddingsShape: imageEmbeddings.shape.slice() };
    } finally {
      imageEmbeddings.dispose();
    }
  }
}
