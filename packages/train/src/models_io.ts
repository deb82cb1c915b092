/** Building, initialising, loading and saving the models the trainers use. */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { HostTensor, Module, Parameter, writeSafetensors } from '@wuerstchen/core';
import {
  CLIPTextModel,
  CLIPTokenizer,
  EfficientNetEncoder,
  EfficientNetEncoderConfig,
  PaellaVQModel,
  Generator,
  parseCLIPTextConfig,
} from 'wuerstchen';
import { encodeText } from 'wuerstchen/internal';
import {
  loadDiffusersWeights,
  modelArgs,
  readModelConfig,
  resolveModelDir,
  saveDiffusersModel,
  writeFileSynced,
} from './checkpoint';
import { EFFNET_WEIGHT_INIT, clipTextInitRules, initModule, vqganInitRules } from './init';
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

export { effnetOutSize } from 'wuerstchen/internal';

/** The compressor: loaded from a folder/run (`from`) or seeded from `config`. */
export function buildEffnet(
  spec: { from?: string; config?: Record<string, unknown> } | undefined,
  seed: number,
  log: (l: string) => void,
  frozen: boolean,
): EfficientNetEncoder {
  if (spec?.from) {
    const dir = resolveModelDir(spec.from, 'effnet');
    const m = new EfficientNetEncoder(modelArgs(readModelConfig(dir)) as Partial<EfficientNetEncoderConfig>);
    loadDiffusersWeights(m, dir);
    return m;
  }
  const m = new EfficientNetEncoder((spec?.config ?? {}) as Partial<EfficientNetEncoderConfig>);
  initModule(m, new Generator(deriveSeed(seed, 'init', 'effnet')), [], EFFNET_WEIGHT_INIT);
  if (frozen)
    log(
      'warning: no trained semantic compressor given (--effnet, or effnet.from in the config); using a seeded random one — train Stage B first and pass its run folder',
    );
  return m;
}

/** The frozen Stage A: loaded (`from`) or seeded from `config` (with a warning). */
export function buildVqgan(
  spec: { from?: string; config?: Record<string, unknown> } | undefined,
  seed: number,
  log: (l: string) => void,
): PaellaVQModel {
  if (spec?.from) {
    const dir = resolveModelDir(spec.from, 'vqgan');
    const m = new PaellaVQModel(modelArgs(readModelConfig(dir)));
    loadDiffusersWeights(m, dir);
    return m.eval();
  }
  const m = new PaellaVQModel((spec?.config ?? {}) as object);
  initModule(m, new Generator(deriveSeed(seed, 'init', 'vqgan')), vqganInitRules(m.config.num_vq_embeddings));
  log(
    'warning: no trained Stage A given (--vqgan, or vqgan.from in the config); using a seeded random one — train Stage A first and pass its run folder',
  );
  return m.eval();
}

/**
 * A bounded host-memory cache of per-item rows (kept off the tfjs engine, so the tensor count stays
 * flat). Each row is computed alone (a batch of one), so a value never depends on what else is
 * cached: a resumed run, which starts with an empty cache, computes the same numbers.
 */
export class RowCache {
  private readonly rows = new Map<string, Float32Array>();
  constructor(readonly maxEntries: number) {}
  /** The rows for `keys`, stacked as `[keys.length, ...rowShape]`; `compute(key)` fills a miss. */
  stack(keys: string[], rowShape: number[], compute: (key: string) => tf.Tensor): tf.Tensor {
    const per = rowShape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(keys.length * per);
    keys.forEach((k, i) => {
      let row = this.rows.get(k);
      if (!row) {
        const t = compute(k);
        row = t.dataSync() as Float32Array;
        t.dispose();
        if (this.rows.size >= this.maxEntries) this.rows.delete(this.rows.keys().next().value as string);
        this.rows.set(k, row);
      }
      data.set(row, i * per);
    });
    return tf.tensor(data, [keys.length, ...rowShape]);
  }
}

/**
 * The frozen text encoder: a transformers CLIPTextModel folder, or a `.json` spec `{config, seed}`
 * for a seeded initialisation (transformers' CLIP init) that our trainers save with their checkpoints.
 */
export function buildTextEncoder(spec: string): CLIPTextModel {
  if (!spec.endsWith('.json')) return CLIPTextModel.fromPretrained(spec);
  let raw: { config?: Record<string, unknown>; seed?: number };
  try {
    raw = JSON.parse(fs.readFileSync(spec, 'utf8'));
  } catch (e) {
    throw new Error(`${spec}: cannot read the text encoder spec (${(e as Error).message})`);
  }
  if (!raw.config || typeof raw.config !== 'object' || !Number.isSafeInteger(raw.seed))
    throw new Error(`${spec}: expected {"config": {CLIPTextConfig fields}, "seed": integer}`);
  const m = new CLIPTextModel(parseCLIPTextConfig(raw.config, spec));
  initModule(
    m,
    new Generator(deriveSeed(raw.seed!, 'init', 'text_encoder')),
    clipTextInitRules(m.config.hidden_size, m.config.num_hidden_layers),
  );
  return m.eval();
}

/** Save a CLIPTextModel as a transformers folder (config.json + model.safetensors). */
export function saveTextEncoder(dir: string, model: CLIPTextModel): void {
  fs.mkdirSync(dir, { recursive: true });
  const config = {
    architectures: ['CLIPTextModel'],
    model_type: 'clip_text_model',
    torch_dtype: 'float32',
    ...model.config,
  };
  writeFileSynced(path.join(dir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  writeSafetensors(path.join(dir, 'model.safetensors'), model.stateDict(), { format: 'pt' });
}

/** Text conditioning of the frozen text encoder, cached per caption (the empty prompt is the CFG "unconditional"). */
export class TextConditioner {
  readonly encoder: CLIPTextModel;
  readonly tokenizer: CLIPTokenizer;
  private readonly cache = new RowCache(8192);
  constructor(encoderSpec: string, tokenizerDir: string) {
    this.encoder = buildTextEncoder(encoderSpec);
    this.tokenizer = CLIPTokenizer.fromPretrained(tokenizerDir);
  }
  get hiddenSize(): number {
    return this.encoder.config.hidden_size;
  }
  /** last_hidden_state `[B, 77, D]` for the captions (a new tensor). */
  encode(captions: string[]): tf.Tensor3D {
    const shape = [this.encoder.config.max_position_embeddings, this.hiddenSize];
    return this.cache.stack(captions, shape, (c) => encodeText(this.tokenizer, this.encoder, [c], '')) as tf.Tensor3D;
  }
  dispose(): void {
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
    return (
      c === 3
        ? n
        : tf.concat([n, tf.zeros([n.shape[0] as number, n.shape[1] as number, n.shape[2] as number, 3 - c])], 3)
    ) as tf.Tensor4D;
  });
}
