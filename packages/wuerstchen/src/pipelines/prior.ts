/**
 * `WuerstchenPriorPipeline` (diffusers `pipeline_wuerstchen_prior.py`; spec inference.md §5.2):
 * prompt → CLIP-bigG `last_hidden_state` → Stage C sampling with classifier-free guidance →
 * image embeddings `x·42 − 1` for the decoder.
 *
 * Tensors are NHWC: the image embeddings are `[B·n, ceil(H/42.67), ceil(W/42.67), 16]`.
 */
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { ModelHandle, indexNumber, loadTokenizer, prepareModel, readModelIndex, readSchedulerConfig, WeightsOptions } from '../loader';
import { CLIPTextModel } from '../models/clip_text';
import { WuerstchenPrior } from '../models/prior';
import { DDPMWuerstchenScheduler } from '../scheduler';
import { CLIPTokenizer } from '../tokenizer';
import { StageProgress } from './progress';
import {
  Callable,
  PipelineArgumentError,
  SamplingOptions,
  checkFinite,
  checkPositiveInt,
  checkShape,
  checkTimesteps,
  encodeText,
  guidance,
  randnNHWC,
  repeatInterleave,
  resolveGenerator,
  stepNoiseFor,
  toNegativeList,
  toPromptList,
} from './shared';

/** model_index.json values of `warp-ai/wuerstchen-prior` (= diffusers' defaults). */
export interface PriorPipelineConfig {
  latentMean: number;
  latentStd: number;
  resolutionMultiple: number;
}

export const PRIOR_PIPELINE_DEFAULTS: PriorPipelineConfig = { latentMean: 42.0, latentStd: 1.0, resolutionMultiple: 42.67 };

export interface PriorCallOptions extends SamplingOptions {
  /** Image width in pixels (default 1024); the latent width is ceil(width / 42.67). */
  width?: number;
  /** Image height in pixels (default 1024). */
  height?: number;
}

export interface PriorOutput {
  /** `latents·latent_mean − latent_std`, NHWC `[B·n, h, w, c_in]`. Owned by the caller. */
  imageEmbeddings: tf.Tensor4D;
}

export interface PipelineLoadOptions extends WeightsOptions {
  /**
   * Free each network as soon as its stage is done and read it again on the next call (default
   * true): peak memory is the largest network, not the sum. `false` keeps every network loaded after first use.
   */
  offload?: boolean;
}

/** Prior defaults of diffusers' `__call__` (spec §5.2). */
export const PRIOR_CALL_DEFAULTS = { width: 1024, height: 1024, numInferenceSteps: 60, guidanceScale: 8.0, numImagesPerPrompt: 1 };

/** Latent side of an image side: `ceil(side / resolution_multiple)` (Python float division). */
export function priorLatentSide(side: number, resolutionMultiple = PRIOR_PIPELINE_DEFAULTS.resolutionMultiple): number {
  return Math.ceil(side / resolutionMultiple);
}

export interface WuerstchenPriorPipeline {
  (prompt: string | string[], options?: PriorCallOptions): Promise<PriorOutput>;
}

export class WuerstchenPriorPipeline extends Callable<[string | string[], PriorCallOptions?], Promise<PriorOutput>> {
  readonly tokenizer: CLIPTokenizer;
  readonly textEncoder: ModelHandle<CLIPTextModel>;
  readonly prior: ModelHandle<WuerstchenPrior>;
  readonly scheduler: DDPMWuerstchenScheduler;
  readonly config: PriorPipelineConfig;
  /** Free the networks after each stage (see PipelineLoadOptions.offload). */
  offload: boolean;

  constructor(components: {
    tokenizer: CLIPTokenizer;
    textEncoder: CLIPTextModel | ModelHandle<CLIPTextModel>;
    prior: WuerstchenPrior | ModelHandle<WuerstchenPrior>;
    scheduler: DDPMWuerstchenScheduler;
    config?: Partial<PriorPipelineConfig>;
    offload?: boolean;
  }) {
    super();
    this.tokenizer = components.tokenizer;
    this.textEncoder = components.textEncoder instanceof ModelHandle ? components.textEncoder : ModelHandle.of(components.textEncoder);
    this.prior = components.prior instanceof ModelHandle ? components.prior : ModelHandle.of(components.prior);
    this.scheduler = components.scheduler;
    this.config = { ...PRIOR_PIPELINE_DEFAULTS, ...components.config };
    this.offload = components.offload ?? true;
  }

  /**
   * Reads a `WuerstchenPriorPipeline` folder (model_index.json, prior/, text_encoder/,
   * tokenizer/, scheduler/). All configs and weight headers are checked now; the weights are
   * read when first needed.
   */
  static fromPretrained(dir: string, opts: PipelineLoadOptions = {}): WuerstchenPriorPipeline {
    const index = readModelIndex(dir, ['WuerstchenPriorPipeline']);
    const prior = prepareModel(path.join(dir, 'prior'), 'WuerstchenPrior', opts);
    const textEncoder = prepareModel(path.join(dir, 'text_encoder'), 'CLIPTextModel', opts);
    const tokenizer = loadTokenizer(path.join(dir, 'tokenizer'));
    const scheduler = DDPMWuerstchenScheduler.fromConfig(readSchedulerConfig(path.join(dir, 'scheduler')), path.join(dir, 'scheduler', 'scheduler_config.json'));
    if (textEncoder.config.hidden_size !== prior.config.c_cond) {
      throw new PipelineArgumentError(
        `${textEncoder.configFile}: hidden_size ${textEncoder.config.hidden_size} does not match the prior's c_cond ${prior.config.c_cond} (${prior.configFile})`,
      );
    }
    return new WuerstchenPriorPipeline({
      tokenizer,
      textEncoder: ModelHandle.lazy(textEncoder),
      prior: ModelHandle.lazy(prior),
      scheduler,
      config: {
        latentMean: indexNumber(index, 'latent_mean', PRIOR_PIPELINE_DEFAULTS.latentMean),
        latentStd: indexNumber(index, 'latent_std', PRIOR_PIPELINE_DEFAULTS.latentStd),
        resolutionMultiple: indexNumber(index, 'resolution_multiple', PRIOR_PIPELINE_DEFAULTS.resolutionMultiple),
      },
      offload: opts.offload,
    });
  }

  /** Latent `[h, w]` of an image size. */
  latentSize(height: number, width: number): [number, number] {
    return [priorLatentSide(height, this.config.resolutionMultiple), priorLatentSide(width, this.config.resolutionMultiple)];
  }

  /** Same as calling the pipeline. */
  run(prompt: string | string[], options: PriorCallOptions = {}): Promise<PriorOutput> {
    return this._call(prompt, options);
  }

  /** Frees every loaded network (loaded again when needed). */
  release(): void {
    this.textEncoder.release();
    this.prior.release();
  }

  /**
   * Text embeddings for the prior: `[B·n, 77, D]`, followed by the unconditional ones when
   * `cfg` (`C = cat([E, E_u])`, conditional first).
   */
  encodePrompt(prompts: string[], n: number, cfg: boolean, negativePrompt: string | string[] | undefined, trace?: SamplingOptions['trace']): tf.Tensor3D {
    const negatives = cfg ? toNegativeList(negativePrompt, prompts.length) : [];
    const encoder = this.textEncoder.get();
    try {
      return tf.tidy(() => {
        const e = encodeText(this.tokenizer, encoder, prompts, 'prompt_', trace);
        trace?.('prompt_embeds', e);
        const parts = [repeatInterleave(e, n)];
        if (cfg) {
          const u = encodeText(this.tokenizer, encoder, negatives, 'negative_', trace);
          trace?.('negative_prompt_embeds', u);
          parts.push(repeatInterleave(u, n));
        }
        return (parts.length === 1 ? parts[0] : tf.concat(parts, 0)) as tf.Tensor3D;
      });
    } finally {
      if (this.offload) this.textEncoder.release();
    }
  }

  async _call(prompt: string | string[], options: PriorCallOptions = {}): Promise<PriorOutput> {
    const prompts = toPromptList(prompt);
    const o = { ...PRIOR_CALL_DEFAULTS, ...stripUndefined(options) };
    const width = checkPositiveInt(o.width, 'width');
    const height = checkPositiveInt(o.height, 'height');
    const n = checkPositiveInt(o.numImagesPerPrompt, 'numImagesPerPrompt');
    const scale = checkFinite(o.guidanceScale, 'guidanceScale');
    const timesteps = o.timesteps !== undefined ? checkTimesteps(o.timesteps, 'timesteps') : undefined;
    if (timesteps === undefined) checkPositiveInt(o.numInferenceSteps, 'numInferenceSteps');
    const cfg = scale > 1;
    const batch = prompts.length * n;
    const [h, w] = this.latentSize(height, width);
    const generator = resolveGenerator(o);
    if (o.negativePrompt !== undefined) toNegativeList(o.negativePrompt, prompts.length);

    const c = this.encodePrompt(prompts, n, cfg, o.negativePrompt, o.trace);
    let x: tf.Tensor | null = null;
    try {
      const prior = this.prior.get();
      const shape = [batch, h, w, prior.config.c_in];
      if (o.latents) {
        checkShape(o.latents, shape, 'latents');
        x = tf.mul(o.latents, this.scheduler.initNoiseSigma);
      } else {
        const drawn = randnNHWC(generator, shape);
        x = tf.mul(drawn, this.scheduler.initNoiseSigma);
        drawn.dispose();
      }
      const ts = Array.from(timesteps ? this.scheduler.setTimesteps({ timesteps }) : this.scheduler.setTimesteps(o.numInferenceSteps));
      const progress = new StageProgress('prior', ts.length - 1, o.onProgress);
      progress.start();
      for (let i = 0; i < ts.length - 1; i++) {
        const { noise, owned } = stepNoiseFor(o, i, generator, shape);
        const xi: tf.Tensor = x;
        const next = tf.tidy(() => {
          const r = tf.fill([batch], ts[i], 'float32');
          const eps = cfg ? guidance(prior.forward(tf.concat([xi, xi], 0), tf.concat([r, r], 0), c), scale) : prior.forward(xi, r, c);
          return this.scheduler.step(eps, r, xi, { noise }).prevSample;
        });
        if (owned) noise.dispose();
        xi.dispose();
        x = next;
        o.callback?.(i, ts[i], x);
        progress.tick();
        await yieldToEventLoop();
      }
      const xf: tf.Tensor = x;
      const imageEmbeddings = tf.tidy(() => tf.sub(tf.mul(xf, this.config.latentMean), this.config.latentStd)) as tf.Tensor4D;
      return { imageEmbeddings };
    } finally {
      c.dispose();
      x?.dispose();
      if (this.offload) this.prior.release();
    }
  }
}

/** Lets timers and stream writes (progress output) run between steps. */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** `{...defaults, ...options}` without letting explicit `undefined`s erase defaults. */
export function stripUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}
