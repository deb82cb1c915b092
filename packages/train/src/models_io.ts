/** Building, initialising, loading and saving the models the trainers use. */
import * as tf from '@tensorflow/tfjs';
import { HostTensor, Module, Parameter } from '@wuerstchen/core';
import {
  CLIPTextModel,
  CLIPTokenizer,
  EFFNET_SETTINGS,
  EfficientNetEncoder,
  EfficientNetEncoderConfig,
  PaellaVQModel,
  Generator,
  encodeText,
} from 'wuerstchen';
import { loadDiffusersWeights, modelArgs, readModelConfig, resolveModelDir, saveDiffusersModel } from './checkpoint';
import { EFFNET_WEIGHT_INIT, initModule, vqganInitRules } from './init';
import { EMA } from './optim';
import { deriveSeed } from './rng';

/** Save a module as a diffusers folder. */
export function saveModule(dir: string, className: string, config: object, model: Module): void {
  saveDiffusersModel(dir, className, config as Record<string, unknown>, model.stateDict());
}

/** The model's state dict with the EMA shadow in place of its trainable parameters. */
export function emaStateDict(model: Module, ema: EMA): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const [k, p] of model.namedParameters()) {
    const shadow = ema.shadow.get(k);
    if (!shadow) {
      out.set(k, p.toHost());
      continue;
    }
    const tmp = new Parameter(p.torchShape, { layout: p.layout, trainable: false });
    tmp.assign(shadow);
    out.set(k, tmp.toHost());
    tmp.dispose();
  }
  return out;
}

/** Output side of the compressor for an input side (each stride-2 conv: ceil(n/2)). */
export function effnetOutSize(cfg: EfficientNetEncoderConfig, n: number): number {
  const setting = cfg.inverted_residual_setting ?? EFFNET_SETTINGS[cfg.effnet];
  let s = Math.ceil(n / 2); // stem
  for (const st of setting) if (st.stride === 2) s = Math.ceil(s / 2);
  return s;
}

/** The compressor: loaded from a folder/run (`from`) or seeded from `config`. */
export function buildEffnet(spec: { from?: string; config?: Record<string, unknown> } | undefined, seed: number, log: (l: string) => void, frozen: boolean): EfficientNetEncoder {
  if (spec?.from) {
    const dir = resolveModelDir(spec.from, 'effnet');
    const m = new EfficientNetEncoder(modelArgs(readModelConfig(dir)) as Partial<EfficientNetEncoderConfig>);
    loadDiffusersWeights(m, dir);
    return m;
  }
  const m = new EfficientNetEncoder((spec?.config ?? {}) as Partial<EfficientNetEncoderConfig>);
  initModule(m, new Generator(deriveSeed(seed, 'init', 'effnet')), [], EFFNET_WEIGHT_INIT);
  if (frozen) log('warning: no trained semantic compressor given (effnet.from); using a seeded random one — train Stage B first and pass its run folder');
  return m;
}

/** The frozen Stage A: loaded (`from`) or seeded from `config` (with a warning). */
export function buildVqgan(spec: { from?: string; config?: Record<string, unknown> } | undefined, seed: number, log: (l: string) => void): PaellaVQModel {
  if (spec?.from) {
    const dir = resolveModelDir(spec.from, 'vqgan');
    const m = new PaellaVQModel(modelArgs(readModelConfig(dir)));
    loadDiffusersWeights(m, dir);
    return m.eval();
  }
  const m = new PaellaVQModel((spec?.config ?? {}) as object);
  initModule(m, new Generator(deriveSeed(seed, 'init', 'vqgan')), vqganInitRules(m.config.num_vq_embeddings));
  log('warning: no trained Stage A given (vqgan.from); using a seeded random one — train Stage A first and pass its run folder');
  return m.eval();
}

/** Text conditioning with a cache of the empty prompt's embedding (the CFG "unconditional"). */
export class TextConditioner {
  readonly encoder: CLIPTextModel;
  readonly tokenizer: CLIPTokenizer;
  private empty: tf.Tensor3D | null = null;
  constructor(encoderDir: string, tokenizerDir: string) {
    this.encoder = CLIPTextModel.fromPretrained(encoderDir);
    this.tokenizer = CLIPTokenizer.fromPretrained(tokenizerDir);
    // the empty prompt (CFG dropout / unconditional) is encoded once and kept
    this.empty = tf.keep(encodeText(this.tokenizer, this.encoder, [''], ''));
  }
  get hiddenSize(): number {
    return this.encoder.config.hidden_size;
  }
  /** last_hidden_state `[B, 77, D]` for the captions (a new tensor). */
  encode(captions: string[]): tf.Tensor3D {
    if (captions.every((c) => c === '')) {
      if (!this.empty) this.empty = tf.keep(encodeText(this.tokenizer, this.encoder, [''], ''));
      const e = this.empty;
      return tf.tidy(() => tf.tile(e, [captions.length, 1, 1]) as tf.Tensor3D);
    }
    return encodeText(this.tokenizer, this.encoder, captions, '');
  }
  dispose(): void {
    this.empty?.dispose();
    this.encoder.dispose();
  }
}

/** Map a 16-channel latent batch to false-colour RGB (channels 0–2, min/max over the batch). */
export function falseColour(latents: tf.Tensor4D): tf.Tensor4D {
  return tf.tidy(() => {
    const rgb = tf.slice(latents, [0, 0, 0, 0], [-1, -1, -1, Math.min(3, latents.shape[3])]);
    const lo = tf.min(rgb);
    const hi = tf.max(rgb);
    const n = tf.div(tf.sub(rgb, lo), tf.maximum(tf.sub(hi, lo), 1e-6));
    const c = n.shape[3] as number;
    return (c === 3 ? n : tf.concat([n, tf.zeros([n.shape[0] as number, n.shape[1] as number, n.shape[2] as number, 3 - c])], 3)) as tf.Tensor4D;
  });
}
