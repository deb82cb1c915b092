/**
 * A rough estimate of the peak memory of one text-to-image run, made from the configs and weight sizes before any
 * network is loaded, so that a request the machine cannot hold fails at once instead of after gigabytes.
 *
 * Peak = the weights held at once (the largest network when offloading, all of them when kept loaded) + the largest
 * stage's activations × a factor for the temporaries tfjs keeps alive. Activations are dominated by the attention
 * score matrices (batch × heads × tokens × (tokens + 77)) and the 4×-wide MLP hidden layers. It is an estimate for
 * refusing absurd requests, not a bound.
 */
import { WuerstchenCombinedPipeline } from './combined';
import { DEFAULT_VQGAN_TILE, decoderLatentSide, vqganHalo } from './decoder';

const F32 = 4;
/** CLIP text tokens each image attends to. */
const TEXT_TOKENS = 77;
/** Inputs, outputs and scratch copies of the largest tensors alive at once. */
const TEMPORARIES = 3;

export interface GenerateShape {
  width: number;
  height: number;
  prompts: number;
  imagesPerPrompt: number;
  priorGuidance: number;
  decoderGuidance: number;
  /** every network stays loaded (no offloading). */
  keepLoaded: boolean;
}

export interface MemoryEstimate {
  /** bytes of weights held at once. */
  weights: number;
  /** bytes of activations of the largest stage (temporaries included). */
  activations: number;
  /** the stage with the largest activations. */
  stage: 'prior' | 'decoder' | 'vqgan';
  total: number;
}

/** Estimates the peak memory of `pipe(prompts, shape)`; see the module comment. */
export function estimateGenerateMemory(pipe: WuerstchenCombinedPipeline, shape: GenerateShape): MemoryEstimate {
  const { priorPipe, decoderPipe } = pipe;
  const networks = [
    priorPipe.textEncoder,
    priorPipe.prior,
    decoderPipe.textEncoder,
    decoderPipe.decoder,
    decoderPipe.vqgan,
  ].map((h) => h.bytes);
  const weights = shape.keepLoaded ? networks.reduce((a, b) => a + b, 0) : Math.max(...networks);
  const images = shape.prompts * shape.imagesPerPrompt;
  const [h, w] = priorPipe.latentSize(shape.height, shape.width);

  const prior = priorPipe.prior.config;
  const priorBatch = images * (shape.priorGuidance > 1 ? 2 : 1);
  const priorTokens = h * w;
  const priorBytes =
    priorBatch *
    F32 *
    (prior.nhead * priorTokens * (priorTokens + TEXT_TOKENS) + priorTokens * 4 * prior.c + 4 * priorTokens * prior.c);

  const decoder = decoderPipe.decoderConfig;
  const decoderBatch = images * (shape.decoderGuidance > 1 ? 2 : 1);
  const latentH = decoderLatentSide(h, decoderPipe.geometry.latentDimScale);
  const latentW = decoderLatentSide(w, decoderPipe.geometry.latentDimScale);
  let levelOutputs = 0;
  let widestLevel = 0;
  decoder.c_hidden.forEach((c, i) => {
    const tokens = (latentH / decoder.patch_size / 2 ** i) * (latentW / decoder.patch_size / 2 ** i);
    levelOutputs += 2 * tokens * c;
    const attention = decoder.level_config[i].includes('A') ? decoder.nhead[i] * tokens * (tokens + TEXT_TOKENS) : 0;
    const mlp = tokens * (c + c + decoder.c_cond + 4 * c);
    widestLevel = Math.max(widestLevel, attention + mlp);
  });
  const decoderBytes = decoderBatch * F32 * (levelOutputs + widestLevel);

  // The VQGAN decodes one image at a time in tiles of DEFAULT_VQGAN_TILE latent px (plus a halo of context); its
  // widest activation is the 4×-wide MLP at the first level's resolution. The finished images are held meanwhile.
  const vq = decoderPipe.vqgan.config;
  const scale = decoderPipe.geometry.vqScale;
  const halo = vqganHalo(decoderPipe.vqgan);
  const tileH = Math.min(latentH, DEFAULT_VQGAN_TILE + 2 * halo) * scale;
  const tileW = Math.min(latentW, DEFAULT_VQGAN_TILE + 2 * halo) * scale;
  const firstWidth = Math.floor(vq.embed_dim / 2 ** (vq.levels - 1));
  const tileBytes = F32 * (tileH / vq.up_down_scale_factor) * (tileW / vq.up_down_scale_factor) * 6 * firstWidth;
  const vqgan = tileBytes + images * latentH * scale * latentW * scale * 3 * F32 * 2;

  const stages = { prior: priorBytes, decoder: decoderBytes, vqgan } as const;
  const stage = (Object.keys(stages) as (keyof typeof stages)[]).reduce((a, b) => (stages[b] > stages[a] ? b : a));
  const activations = stages[stage] * TEMPORARIES;
  return { weights, activations, stage, total: weights + activations };
}
