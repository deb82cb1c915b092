/** Pieces shared by the prior and decoder pipelines: loading, options, text encoding, CFG, noise, the sampling loop. */
import * as tf from '@tensorflow/tfjs';
import { joinPath } from '@wuerstchen/core/internal';
import { ModelHandle, WeightsOptions, loadTokenizer, prepareModel, readSchedulerConfig } from '../loader';
import { CLIPTextModel } from '../models/clip_text';
import { Trace } from '../models/trace';
import { Generator } from '../rng';
import { DDPMWuerstchenScheduler } from '../scheduler';
import { CLIPTokenizer } from '../tokenizer';
import { ProgressCallback, ProgressStage, StageProgress } from './progress';

/**
 * A class whose instances are functions (transformers.js style): `pipe(prompt, opts)` calls
 * `pipe._call(prompt, opts)`.
 */
export class Callable<A extends unknown[], R> extends Function {
  constructor() {
    super();
    const closure = ((...args: A) => (closure as unknown as Callable<A, R>)._call(...args)) as unknown as Callable<
      A,
      R
    >;
    return Object.setPrototypeOf(closure, new.target.prototype) as Callable<A, R>;
  }

  _call(..._args: A): R {
    throw new Error('not implemented');
  }
}

/** Options both pipelines accept. */
export interface SamplingOptions {
  /** What to avoid (classifier-free guidance only): one string for all prompts or one per prompt; default `""`. */
  negativePrompt?: string | string[];
  /** Number of sampling steps (`timesteps = linspace(1, 0, n + 1)`). */
  numInferenceSteps?: number;
  /** Explicit timesteps (from 1 down to 0; `length − 1` steps); overrides numInferenceSteps. */
  timesteps?: ArrayLike<number>;
  /** Classifier-free guidance scale; guidance runs when > 1. */
  guidanceScale?: number;
  /** Images per prompt. */
  numImagesPerPrompt?: number;
  /** Seed for a fresh Generator (ignored when `generator` is given). */
  seed?: number;
  /** Draws the initial latents and the per-step noise, in the order diffusers draws them. */
  generator?: Generator;
  /** Initial latents, NHWC (not disposed). */
  latents?: tf.Tensor;
  /** Scheduler noise per step, NHWC with the latents' shape (not disposed); replaces the generator's draws (for replaying a reference run). */
  stepNoise?: tf.Tensor[] | ((step: number) => tf.Tensor);
  /** `{stage, step, total, itPerSec, etaSeconds}` after every step. */
  onProgress?: ProgressCallback;
  /** diffusers-style per-step callback with the latents after the step (NHWC; valid only during the call). */
  callback?: (step: number, t: number, latents: tf.Tensor) => void;
  /** Observer of named intermediates (token ids, text embeddings, VQGAN input/output). */
  trace?: Trace;
}

export class PipelineArgumentError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PipelineArgumentError';
  }
}

export interface PipelineLoadOptions extends WeightsOptions {
  /**
   * Free each network as soon as its stage is done and read it again on the next call (default
   * true): peak memory is the largest network, not the sum. `false` keeps every network loaded after first use.
   */
  offload?: boolean;
}

/** The text side of a pipeline and its scheduler; a model given directly stays owned by the caller. */
export interface TextComponents {
  tokenizer: CLIPTokenizer;
  textEncoder: CLIPTextModel | ModelHandle<CLIPTextModel>;
  scheduler: DDPMWuerstchenScheduler;
}

/** What every pipeline is built from (each adds its own networks). */
export interface PipelineComponents extends TextComponents {
  /** see PipelineLoadOptions.offload (default true). */
  offload?: boolean;
}

/**
 * Checks `text_encoder/`, `tokenizer/` and `scheduler/` of a pipeline folder (the text encoder is read
 * when first needed). Its hidden_size must equal the denoiser's conditioning width `cond.width`
 * (config key `cond.name` in `cond.configFile`).
 */
export function prepareTextComponents(
  dir: string,
  opts: WeightsOptions,
  cond: { width: number; name: string; configFile: string },
): TextComponents {
  const textEncoder = prepareModel(joinPath(dir, 'text_encoder'), 'CLIPTextModel', opts);
  const tokenizer = loadTokenizer(joinPath(dir, 'tokenizer'));
  const scheduler = DDPMWuerstchenScheduler.fromConfig(
    readSchedulerConfig(joinPath(dir, 'scheduler')),
    joinPath(dir, 'scheduler', 'scheduler_config.json'),
  );
  if (textEncoder.config.hidden_size !== cond.width) {
    throw new PipelineArgumentError(
      `${textEncoder.configFile}: hidden_size ${textEncoder.config.hidden_size} does not match ${cond.name} ${cond.width} (${cond.configFile})`,
    );
  }
  return { tokenizer, textEncoder: ModelHandle.lazy(textEncoder), scheduler };
}

/** Base of the prior and decoder pipelines: callable, with the text side, the scheduler and the offload switch. */
export abstract class TextConditionedPipeline<A extends unknown[], R> extends Callable<A, R> {
  readonly tokenizer: CLIPTokenizer;
  readonly textEncoder: ModelHandle<CLIPTextModel>;
  readonly scheduler: DDPMWuerstchenScheduler;
  /** Free the networks after each stage (see PipelineLoadOptions.offload). */
  offload: boolean;

  constructor(components: PipelineComponents) {
    super();
    this.tokenizer = components.tokenizer;
    this.textEncoder = ModelHandle.from(components.textEncoder);
    this.scheduler = components.scheduler;
    this.offload = components.offload ?? true;
  }

  /**
   * Text conditioning `[P·per, 77, D]`: each prompt's embeddings repeated `per` times, followed by the
   * negative prompts' when `cfg` (`cat([E, E_u])`, conditional first). Frees the encoder after use when offloading.
   */
  protected encodePrompts(
    prompts: string[],
    per: number,
    cfg: boolean,
    negativePrompt: string | string[] | undefined,
    trace?: Trace,
  ): tf.Tensor3D {
    const negatives = cfg ? toNegativeList(negativePrompt, prompts.length) : [];
    const encoder = this.textEncoder.get();
    try {
      return tf.tidy(() => {
        const e = encodeText(this.tokenizer, encoder, prompts, 'prompt_', trace);
        trace?.('prompt_embeds', e);
        const parts = [repeatInterleave(e, per)];
        if (cfg) {
          const u = encodeText(this.tokenizer, encoder, negatives, 'negative_', trace);
          trace?.('negative_prompt_embeds', u);
          parts.push(repeatInterleave(u, per));
        }
        return (parts.length === 1 ? parts[0] : tf.concat(parts, 0)) as tf.Tensor3D;
      });
    } finally {
      if (this.offload) this.textEncoder.release();
    }
  }
}

/** `{...defaults, ...options}` without letting explicit `undefined`s erase defaults. */
export function stripUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

export function toPromptList(prompt: string | string[], what = 'prompt'): string[] {
  const list = typeof prompt === 'string' ? [prompt] : prompt;
  if (!Array.isArray(list) || list.length === 0 || !list.every((p) => typeof p === 'string')) {
    throw new PipelineArgumentError(`${what} must be a string or a non-empty list of strings`);
  }
  return list;
}

/** Negative prompts for `count` prompts: default `""` each; a string is used for every prompt; a list must have `count` entries. */
export function toNegativeList(negative: string | string[] | undefined, count: number): string[] {
  if (negative === undefined || negative === null) return new Array<string>(count).fill('');
  if (typeof negative === 'string') return new Array<string>(count).fill(negative);
  const list = toPromptList(negative, 'negativePrompt');
  if (list.length !== count)
    throw new PipelineArgumentError(`negativePrompt has ${list.length} entries but there are ${count} prompts`);
  return list;
}

export function checkPositiveInt(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1)
    throw new PipelineArgumentError(`${name} must be a positive integer, got ${JSON.stringify(value)}`);
  return value;
}

export function checkFinite(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value))
    throw new PipelineArgumentError(`${name} must be a finite number, got ${JSON.stringify(value)}`);
  return value;
}

/** Timesteps must go from high to low, each in [0, 1], at least two. */
export function checkTimesteps(ts: ArrayLike<number>, name: string): number[] {
  const list = Array.from(ts);
  if (list.length < 2)
    throw new PipelineArgumentError(`${name} needs at least 2 values (one step), got ${list.length}`);
  list.forEach((t, i) => {
    if (typeof t !== 'number' || !(t >= 0 && t <= 1))
      throw new PipelineArgumentError(`${name}[${i}] = ${JSON.stringify(t)} is not in [0, 1]`);
  });
  return list;
}

/** The checked sampling options of a call. */
export interface SamplingPlan {
  /** images per prompt. */
  n: number;
  scale: number;
  /** classifier-free guidance runs (scale > 1). */
  cfg: boolean;
  /** explicit timesteps, or the number of steps. */
  steps: number[] | number;
}

/** Checks numImagesPerPrompt, guidanceScale and timesteps (else numInferenceSteps) of options merged with defaults. */
export function checkSamplingOptions(o: SamplingOptions): SamplingPlan {
  const n = checkPositiveInt(o.numImagesPerPrompt, 'numImagesPerPrompt');
  const scale = checkFinite(o.guidanceScale, 'guidanceScale');
  const steps =
    o.timesteps !== undefined
      ? checkTimesteps(o.timesteps, 'timesteps')
      : checkPositiveInt(o.numInferenceSteps, 'numInferenceSteps');
  return { n, scale, cfg: scale > 1, steps };
}

/**
 * `tokenizer(texts, padding="max_length", max_length=77, truncation=True)` → text encoder →
 * `last_hidden_state` `[P, 77, D]`. The ids and masks go to `trace` as `<prefix>input_ids` /
 * `<prefix>attention_mask`.
 */
export function encodeText(
  tokenizer: CLIPTokenizer,
  encoder: CLIPTextModel,
  texts: string[],
  prefix: string,
  trace?: Trace,
): tf.Tensor3D {
  const maxLength = encoder.config.max_position_embeddings;
  const tokens = tokenizer.call(texts, { padding: 'max_length', maxLength, truncation: true });
  return tf.tidy(() => {
    const ids = tf.tensor2d(tokens.inputIds, [texts.length, maxLength], 'int32');
    const mask = tf.tensor2d(tokens.attentionMask, [texts.length, maxLength], 'int32');
    trace?.(`${prefix}input_ids`, ids);
    trace?.(`${prefix}attention_mask`, mask);
    const { lastHiddenState, poolerOutput } = encoder.forward(ids, mask);
    poolerOutput.dispose();
    return lastHiddenState;
  });
}

/** `torch.repeat_interleave(x, k, dim=0)`. */
export function repeatInterleave(x: tf.Tensor, k: number): tf.Tensor {
  if (k === 1) return x.clone();
  return tf.tidy(() => {
    const [b, ...rest] = x.shape;
    return tf.tile(x.expandDims(1), [1, k, ...rest.map(() => 1)]).reshape([b * k, ...rest]);
  });
}

/**
 * Classifier-free guidance on a `[2B, ...]` prediction (cond first, uncond second):
 * `torch.lerp(uncond, cond, w)`, which evaluates `cond − (cond − uncond)·(1 − w)` for w ≥ 0.5 and
 * `uncond + w·(cond − uncond)` below (diffusers `pipeline_wuerstchen_prior.py`, `__call__`).
 */
export function guidance(eps: tf.Tensor, scale: number): tf.Tensor {
  return tf.tidy(() => {
    const [cond, uncond] = tf.split(eps, 2, 0);
    const d = tf.sub(cond, uncond);
    return scale >= 0.5
      ? tf.sub(cond, tf.mul(d, Math.fround(1 - scale)))
      : tf.add(uncond, tf.mul(d, Math.fround(scale)));
  });
}

/** Standard-normal noise drawn in PyTorch's NCHW order (so injected reference noise has the same layout), returned NHWC. */
export function randnNHWC(generator: Generator, nhwc: number[]): tf.Tensor4D {
  const [n, h, w, c] = nhwc;
  return tf.tidy(() => generator.randn([n, c, h, w]).transpose([0, 2, 3, 1])) as tf.Tensor4D;
}

export function resolveGenerator(opts: { seed?: number; generator?: Generator }): Generator {
  if (opts.generator) return opts.generator;
  if (opts.seed !== undefined) {
    if (!Number.isSafeInteger(opts.seed))
      throw new PipelineArgumentError(`seed must be an integer, got ${JSON.stringify(opts.seed)}`);
    return new Generator(opts.seed);
  }
  return Generator.random();
}

export function checkShape(t: tf.Tensor, expected: number[], name: string): void {
  if (t.shape.length !== expected.length || t.shape.some((d, i) => d !== expected[i])) {
    throw new PipelineArgumentError(
      `${name} must have shape [${expected.join(', ')}] (NHWC), got [${t.shape.join(', ')}]`,
    );
  }
}

/** The step noise for step `i` (a caller-provided tensor, checked) or a fresh draw. The caller disposes a draw (`owned`). */
export function stepNoiseFor(
  opts: SamplingOptions,
  i: number,
  generator: Generator,
  shape: number[],
): { noise: tf.Tensor; owned: boolean } {
  const given = typeof opts.stepNoise === 'function' ? opts.stepNoise(i) : opts.stepNoise?.[i];
  if (given) {
    checkShape(given, shape, `stepNoise[${i}]`);
    return { noise: given, owned: false };
  }
  if (opts.stepNoise && !Array.isArray(opts.stepNoise))
    throw new PipelineArgumentError(`stepNoise(${i}) returned nothing`);
  if (Array.isArray(opts.stepNoise))
    throw new PipelineArgumentError(`stepNoise has ${opts.stepNoise.length} tensors but step ${i} needs one`);
  return { noise: randnNHWC(generator, shape), owned: true };
}

/** diffusers' `prepare_latents`: the given latents (checked against `shape`) or a fresh draw, times the scheduler's `init_noise_sigma`. */
export function prepareLatents(
  shape: number[],
  generator: Generator,
  latents: tf.Tensor | undefined,
  scheduler: DDPMWuerstchenScheduler,
): tf.Tensor {
  if (latents) {
    checkShape(latents, shape, 'latents');
    return tf.mul(latents, scheduler.initNoiseSigma);
  }
  return tf.tidy(() => tf.mul(randnNHWC(generator, shape), scheduler.initNoiseSigma));
}

/** The denoiser's noise prediction for latents `x` at ratios `r` (`[batch]`); under CFG both come doubled. */
export type NoisePredictor = (x: tf.Tensor, r: tf.Tensor) => tf.Tensor;

export interface SamplingLoop {
  stage: ProgressStage;
  scheduler: DDPMWuerstchenScheduler;
  plan: SamplingPlan;
  generator: Generator;
  /** The call's options: step noise, callback, progress. */
  options: SamplingOptions;
  predict: NoisePredictor;
}

/**
 * The denoising loop over `timesteps[:-1]`: predict the noise (with classifier-free guidance on
 * `[x, x]` when `plan.cfg`), take a scheduler step with this step's noise, then call back and report
 * progress. Takes over `latents` and returns the final ones (owned by the caller); frees what it
 * holds when something throws.
 */
export async function denoise(latents: tf.Tensor, loop: SamplingLoop): Promise<tf.Tensor> {
  const { scheduler, plan, generator, options: o, predict } = loop;
  let x = latents;
  try {
    const ts = Array.from(
      typeof plan.steps === 'number'
        ? scheduler.setTimesteps(plan.steps)
        : scheduler.setTimesteps({ timesteps: plan.steps }),
    );
    const progress = new StageProgress(loop.stage, ts.length - 1, o.onProgress);
    progress.start();
    for (let i = 0; i < ts.length - 1; i++) {
      const { noise, owned } = stepNoiseFor(o, i, generator, x.shape);
      const xi = x;
      try {
        x = tf.tidy(() => {
          const r = tf.fill([xi.shape[0]], ts[i], 'float32');
          const eps = plan.cfg
            ? guidance(predict(tf.concat([xi, xi], 0), tf.concat([r, r], 0)), plan.scale)
            : predict(xi, r);
          return scheduler.step(eps, r, xi, { noise }).prevSample;
        });
      } finally {
        if (owned) noise.dispose();
      }
      xi.dispose();
      o.callback?.(i, ts[i], x);
      progress.tick();
      await yieldToEventLoop();
    }
    return x;
  } catch (err) {
    x.dispose();
    throw err;
  }
}

/** Lets timers and stream writes (progress output) run between steps; in a browser, lets the page repaint. */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) =>
    typeof setImmediate === 'function' ? setImmediate(resolve) : setTimeout(resolve, 0),
  );
}
