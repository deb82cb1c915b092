/**
 * `WuerstchenVariationPipeline`: image → EfficientNetV2 compressor → Stage C latent → Stage B →
 * Stage A → variations of the image (the authors' notebooks; Stable Cascade's image variation).
 *
 * With `strength` 0 the compressor's map goes straight to the decoder, so the variations differ
 * only by the decoder's sampling. With `strength` s in (0, 1] the map is taken into the prior's
 * latent space, noised to time s, and resampled by the prior from s down to 0 under the prompt
 * (image-to-image through Stage C): the larger s, the more the prompt and the less the image decide.
 */
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { ModelHandle, PreparedModel, prepareModel } from '../loader';
import { EfficientNetEncoder, IMAGENET_MEAN, IMAGENET_STD, effnetInSize } from '../models/effnet';
import { linspaceF32 } from '../scheduler';
import { TINY_MODEL_DIR } from '../tiny';
import { WuerstchenCombinedPipeline, validImageSides } from './combined';
import { DecoderOutput, OutputType } from './decoder';
import { RawImage } from './png';
import { ProgressCallback } from './progress';
import {
  Callable,
  PipelineArgumentError,
  PipelineLoadOptions,
  checkFinite,
  checkPositiveInt,
  randnNHWC,
  resolveGenerator,
  stripUndefined,
} from './shared';
import { Generator } from '../rng';

export interface VariationCallOptions {
  /** Text for Stage B (and for the prior when strength > 0); default `""`. */
  prompt?: string;
  /** 0 (default): decode the image's own compressor map; up to 1: renoise it to this time and resample with the prior. */
  strength?: number;
  /** Output size; default: the valid size nearest to the input's. */
  width?: number;
  height?: number;
  /** prior steps for a full (strength 1) run; a run from strength s takes round(s·steps) of them (default 60). */
  priorNumInferenceSteps?: number;
  /** default 4. */
  priorGuidanceScale?: number;
  /** default 12. */
  decoderNumInferenceSteps?: number;
  /** default 0 (no guidance). */
  decoderGuidanceScale?: number;
  numImagesPerPrompt?: number;
  seed?: number;
  generator?: Generator;
  outputType?: OutputType;
  onProgress?: ProgressCallback;
}

export const VARIATION_CALL_DEFAULTS = {
  strength: 0,
  priorNumInferenceSteps: 60,
  priorGuidanceScale: 4.0,
  decoderNumInferenceSteps: 12,
  decoderGuidanceScale: 0.0,
  numImagesPerPrompt: 1,
  outputType: 'tensor' as OutputType,
};

/** An image: NHWC/HWC float tensor in [0, 1] (3 or 4 channels; alpha is dropped) or 8-bit {@link RawImage}. */
export type VariationInput = tf.Tensor | RawImage;

export interface WuerstchenVariationPipeline {
  (image: VariationInput, options?: VariationCallOptions): Promise<DecoderOutput>;
}

export class WuerstchenVariationPipeline extends Callable<
  [VariationInput, VariationCallOptions?],
  Promise<DecoderOutput>
> {
  readonly effnet: ModelHandle<EfficientNetEncoder>;
  readonly effnetConfig: EfficientNetEncoder['config'];

  constructor(
    readonly pipe: WuerstchenCombinedPipeline,
    effnet: EfficientNetEncoder | PreparedModel<EfficientNetEncoder>,
  ) {
    super();
    this.effnet = effnet instanceof EfficientNetEncoder ? ModelHandle.of(effnet) : ModelHandle.lazy(effnet);
    this.effnetConfig = effnet.config;
  }

  /**
   * A folder holding `wuerstchen-prior/`, `wuerstchen/` and `effnet/` (the compressor the prior was
   * trained on), or with no folder the bundled tiny model. `opts.effnet` names another compressor folder.
   */
  static fromPretrained(
    dir: string = TINY_MODEL_DIR,
    opts: PipelineLoadOptions & { effnet?: string } = {},
  ): WuerstchenVariationPipeline {
    const effnetDir = opts.effnet ?? path.join(dir, 'effnet');
    let effnet: PreparedModel<EfficientNetEncoder>;
    try {
      effnet = prepareModel(effnetDir, 'EfficientNetEncoder', opts);
    } catch (e) {
      throw new PipelineArgumentError(
        `${(e as Error).message}\nImage variation needs the EfficientNetV2 compressor the prior was trained on: Stage B training writes it ` +
          "(a run's checkpoints/step-N/effnet, and `wuerstchen-train export` copies it to <model>/effnet). The published diffusers folders " +
          '(warp-ai/wuerstchen, warp-ai/wuerstchen-prior) do not contain it.',
      );
    }
    return new WuerstchenVariationPipeline(WuerstchenCombinedPipeline.fromPretrained(dir, undefined, opts), effnet);
  }

  release(): void {
    this.effnet.release();
    this.pipe.release();
  }

  run(image: VariationInput, options: VariationCallOptions = {}): Promise<DecoderOutput> {
    return this._call(image, options);
  }

  /** The valid output side nearest to `side`. */
  private nearestSide(side: number): number {
    const valid = validImageSides(
      this.pipe.decoderPipe.geometry,
      this.pipe.priorPipe.config.resolutionMultiple,
      Math.max(2048, 2 * side),
    );
    return valid.reduce((best, v) => (Math.abs(v - side) < Math.abs(best - side) ? v : best), valid[0]);
  }

  /** The compressor's map of one image for a `[h, w]` prior latent grid: `[1, h, w, c_latent]`. */
  encodeImage(image: tf.Tensor4D, h: number, w: number): tf.Tensor4D {
    const effnet = this.effnet.get();
    try {
      return tf.tidy(() =>
        effnet.forward(compressorInput(image, effnetInSize(this.effnetConfig, w), effnetInSize(this.effnetConfig, h))),
      );
    } finally {
      if (this.pipe.priorPipe.offload) this.effnet.release();
    }
  }

  override async _call(input: VariationInput, options: VariationCallOptions = {}): Promise<DecoderOutput> {
    const o = { ...VARIATION_CALL_DEFAULTS, ...stripUndefined(options) };
    const strength = checkFinite(o.strength, 'strength');
    if (strength < 0 || strength > 1) throw new PipelineArgumentError(`strength must be in [0, 1], got ${strength}`);
    const n = checkPositiveInt(o.numImagesPerPrompt, 'numImagesPerPrompt');
    const image = toImageTensor(input);
    const prompt = o.prompt ?? '';
    try {
      const width = o.width ?? this.nearestSide(image.shape[2]);
      const height = o.height ?? this.nearestSide(image.shape[1]);
      this.pipe.checkSize(width, height);
      const generator = resolveGenerator(o);
      const prior = this.pipe.priorPipe;
      const [h, w] = prior.latentSize(height, width);
      const map = this.encodeImage(image, h, w);
      let embeddings: tf.Tensor4D;
      if (strength === 0) {
        embeddings = tf.tidy(() => tf.tile(map, [n, 1, 1, 1])) as tf.Tensor4D;
      } else {
        const steps = Math.max(
          1,
          Math.round(strength * checkPositiveInt(o.priorNumInferenceSteps, 'priorNumInferenceSteps')),
        );
        const start = tf.tidy(() => {
          // the prior's latent of the map (inverse of its output `x·latent_mean − latent_std`), noised to t = strength
          const x0 = tf.tile(tf.div(tf.add(map, prior.config.latentStd), prior.config.latentMean), [n, 1, 1, 1]);
          const a = prior.scheduler.alphaCumprod(tf.tensor1d([strength])).dataSync()[0];
          return tf.add(tf.mul(x0, Math.sqrt(a)), tf.mul(randnNHWC(generator, x0.shape), Math.sqrt(1 - a)));
        });
        try {
          const out = await prior(prompt, {
            width,
            height,
            latents: start,
            timesteps: linspaceF32(strength, 0, steps + 1),
            guidanceScale: o.priorGuidanceScale,
            numImagesPerPrompt: n,
            generator,
            onProgress: o.onProgress,
          });
          embeddings = out.imageEmbeddings;
        } finally {
          start.dispose();
        }
      }
      map.dispose();
      try {
        return await this.pipe.decoderPipe(embeddings, prompt, {
          numInferenceSteps: o.decoderNumInferenceSteps,
          guidanceScale: o.decoderGuidanceScale,
          generator,
          outputType: o.outputType,
          onProgress: o.onProgress,
        });
      } finally {
        embeddings.dispose();
      }
    } finally {
      image.dispose();
    }
  }
}

/** `[1, H, W, 3]` float in [0, 1] from a tensor (HWC or one NHWC image, alpha dropped) or an 8-bit image. */
function toImageTensor(input: VariationInput): tf.Tensor4D {
  if (input instanceof tf.Tensor) {
    const t = input.rank === 3 ? input.expandDims(0) : input;
    if (t.rank !== 4 || t.shape[0] !== 1 || (t.shape[3] !== 3 && t.shape[3] !== 4)) {
      if (t !== input) t.dispose();
      throw new PipelineArgumentError(
        `image must be one RGB(A) image, HWC or [1, H, W, 3|4] with values in [0, 1]; got [${input.shape}]`,
      );
    }
    return tf.tidy(() => tf.slice(t, [0, 0, 0, 0], [1, -1, -1, 3]).toFloat()) as tf.Tensor4D;
  }
  const { width, height, channels, data } = input;
  if (![1, 3, 4].includes(channels) || data.length !== width * height * channels || width < 1 || height < 1) {
    throw new PipelineArgumentError(
      `image must be 8-bit gray, RGB or RGBA with width·height·channels bytes; got ${width}×${height}×${channels} and ${data.length} bytes`,
    );
  }
  return tf.tidy(() => {
    const t = tf.div(tf.tensor4d(Float32Array.from(data), [1, height, width, channels]), 255);
    return (channels === 1 ? tf.tile(t, [1, 1, 1, 3]) : tf.slice(t, [0, 0, 0, 0], [1, -1, -1, 3])) as tf.Tensor4D;
  });
}

/**
 * The compressor's input: resize to cover `[h, w]` (area-averaged by an integer factor first, so a
 * large photo is not aliased), centre crop, ImageNet normalisation — as the trainers feed it.
 */
export function compressorInput(image: tf.Tensor4D, w: number, h: number): tf.Tensor4D {
  return tf.tidy(() => {
    const [, H, W] = image.shape;
    const scale = Math.max(w / W, h / H);
    const factor = Math.floor(1 / scale);
    let x: tf.Tensor4D = factor >= 2 ? tf.avgPool(image, factor, factor, 'valid') : image;
    const rw = Math.max(w, Math.round(W * scale));
    const rh = Math.max(h, Math.round(H * scale));
    if (x.shape[1] !== rh || x.shape[2] !== rw) x = tf.image.resizeBilinear(x, [rh, rw], false, true);
    if (rh !== h || rw !== w) x = tf.slice(x, [0, Math.floor((rh - h) / 2), Math.floor((rw - w) / 2), 0], [1, h, w, 3]);
    return tf.div(tf.sub(x, [...IMAGENET_MEAN]), [...IMAGENET_STD]) as tf.Tensor4D;
  });
}
