/**
 * `WuerstchenPriorPipeline` (diffusers `pipeline_wuerstchen_prior.py`):
 * prompt → CLIP-bigG `last_hidden_state` → Stage C sampling with classifier-free guidance →
 * image embeddings `x·42 − 1` for the decoder.
 *
 * Tensors are NHWC: the image embeddings are `[B·n, ceil(H/42.67), ceil(W/42.67), 16]`.
 */
import * as tf from '@tensorflow/tfjs';
import { LoraNetwork } from '@wuerstchen/core';
import { joinPath } from '@wuerstchen/core/internal';
import { ModelHandle, indexNumber, prepareModel, readModelIndex } from '../loader';
import { WuerstchenPrior } from '../models/prior';
import { LoraStack, loadLoraFile } from '../lora';
import {
  PipelineComponents,
  PipelineLoadOptions,
  SamplingOptions,
  TextConditionedPipeline,
  checkPositiveInt,
  checkSamplingOptions,
  denoise,
  prepareLatents,
  prepareTextComponents,
  resolveGenerator,
  stripUndefined,
  toNegativeList,
  toPromptList,
} from './shared';

/** model_index.json values of `warp-ai/wuerstchen-prior` (= diffusers' defaults). */
export interface PriorPipelineConfig {
  latentMean: number;
  latentStd: number;
  resolutionMultiple: number;
}

export const PRIOR_PIPELINE_DEFAULTS: PriorPipelineConfig = {
  latentMean: 42.0,
  latentStd: 1.0,
  resolutionMultiple: 42.67,
};

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

/** Prior defaults of diffusers' `__call__`. */
export const PRIOR_CALL_DEFAULTS = {
  width: 1024,
  height: 1024,
  numInferenceSteps: 60,
  guidanceScale: 8.0,
  numImagesPerPrompt: 1,
};

/** Latent side of an image side: `ceil(side / resolution_multiple)` (Python float division). */
export function priorLatentSide(side: number, resolutionMultiple = PRIOR_PIPELINE_DEFAULTS.resolutionMultiple): number {
  return Math.ceil(side / resolutionMultiple);
}

export interface WuerstchenPriorPipeline {
  (prompt: string | string[], options?: PriorCallOptions): Promise<PriorOutput>;
}

export class WuerstchenPriorPipeline extends TextConditionedPipeline<
  [string | string[], PriorCallOptions?],
  Promise<PriorOutput>
> {
  readonly prior: ModelHandle<WuerstchenPrior>;
  /** LoRA networks on the prior (loadLora); they follow it when it is freed and loaded again. */
  readonly loras = new LoraStack();
  readonly config: PriorPipelineConfig;

  constructor(
    components: PipelineComponents & {
      prior: WuerstchenPrior | ModelHandle<WuerstchenPrior>;
      config?: Partial<PriorPipelineConfig>;
    },
  ) {
    super(components);
    this.prior = ModelHandle.from(components.prior);
    this.config = { ...PRIOR_PIPELINE_DEFAULTS, ...components.config };
  }

  /**
   * Reads a `WuerstchenPriorPipeline` folder (model_index.json, prior/, text_encoder/,
   * tokenizer/, scheduler/). All configs and weight headers are checked now; the weights are
   * read when first needed.
   */
  static fromPretrained(dir: string, opts: PipelineLoadOptions = {}): WuerstchenPriorPipeline {
    const index = readModelIndex(dir, ['WuerstchenPriorPipeline']);
    const prior = prepareModel(joinPath(dir, 'prior'), 'WuerstchenPrior', opts);
    const text = prepareTextComponents(dir, opts, {
      width: prior.config.c_cond,
      name: "the prior's c_cond",
      configFile: prior.configFile,
    });
    return new WuerstchenPriorPipeline({
      ...text,
      prior: ModelHandle.lazy(prior),
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
    return [
      priorLatentSide(height, this.config.resolutionMultiple),
      priorLatentSide(width, this.config.resolutionMultiple),
    ];
  }

  /** Same as calling the pipeline. */
  run(prompt: string | string[], options: PriorCallOptions = {}): Promise<PriorOutput> {
    return this._call(prompt, options);
  }

  /**
   * Puts a LoRA file's prior adapters on the prior: diffusers' `save_lora_weights` layout (see
   * lora.ts), or a folder holding `pytorch_lora_weights.safetensors`. `scale` multiplies its
   * alpha/r (default 1). Several files add up.
   */
  loadLora(file: string, opts: { scale?: number } = {}): LoraNetwork {
    const net = loadLoraFile(this.prior.get(), file, 'prior', opts.scale ?? 1);
    this.loras.add(net);
    return net;
  }

  /** Merges the loaded LoRA networks into the prior's weights (no extra cost per step). */
  fuseLora(): void {
    this.loras.fuse(() => this.prior.get());
  }

  /** Restores the prior's weights exactly; the networks stay loaded, unmerged. */
  unfuseLora(): void {
    this.loras.unfuse();
  }

  /** Removes every LoRA network (restoring the weights when fused). */
  unloadLora(): void {
    this.loras.clear();
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
  encodePrompt(
    prompts: string[],
    n: number,
    cfg: boolean,
    negativePrompt: string | string[] | undefined,
    trace?: SamplingOptions['trace'],
  ): tf.Tensor3D {
    return this.encodePrompts(prompts, n, cfg, negativePrompt, trace);
  }

  override async _call(prompt: string | string[], options: PriorCallOptions = {}): Promise<PriorOutput> {
    const prompts = toPromptList(prompt);
    const o = { ...PRIOR_CALL_DEFAULTS, ...stripUndefined(options) };
    const width = checkPositiveInt(o.width, 'width');
    const height = checkPositiveInt(o.height, 'height');
    const plan = checkSamplingOptions(o);
    const [h, w] = this.latentSize(height, width);
    const generator = resolveGenerator(o);
    if (o.negativePrompt !== undefined) toNegativeList(o.negativePrompt, prompts.length);

    const c = this.encodePrompt(prompts, plan.n, plan.cfg, o.negativePrompt, o.trace);
    try {
      const prior = this.prior.get();
      this.loras.attach(prior);
      const latents = prepareLatents(
        [prompts.length * plan.n, h, w, prior.config.c_in],
        generator,
        o.latents,
        this.scheduler,
      );
      const x = await denoise(latents, {
        stage: 'prior',
        scheduler: this.scheduler,
        plan,
        generator,
        options: o,
        predict: (xi, r) => prior.forward(xi, r, c),
      });
      try {
        return {
          imageEmbeddings: tf.tidy(() =>
            tf.sub(tf.mul(x, this.config.latentMean), this.config.latentStd),
          ) as tf.Tensor4D,
        };
      } finally {
        x.dispose();
      }
    } finally {
      c.dispose();
      if (this.offload) this.prior.release();
    }
  }
}
