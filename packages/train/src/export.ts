/**
 * `wuerstchen-train export`: assembles trained runs into the two diffusers pipeline folders that
 * `wuerstchen generate` (and diffusers) load — `<out>/wuerstchen-prior` (WuerstchenPriorPipeline:
 * prior, text_encoder, tokenizer, scheduler) and `<out>/wuerstchen` (WuerstchenDecoderPipeline:
 * decoder, text_encoder, tokenizer, vqgan, scheduler) — the layout of `warp-ai/wuerstchen-prior`
 * and `warp-ai/wuerstchen`.
 *
 * Everything the folders need comes from the runs: the Stage C run's train_config.json (tokenizer,
 * image and compressor sizes), its newest checkpoint (the EMA prior when there is one, the text
 * encoder, the fitted latent scaling in training_state.json); the Stage B run's checkpoint (decoder,
 * its text encoder, the semantic compressor) and its train_config.json (which Stage A it was trained
 * against). The compressor goes to `<out>/effnet`: no pipeline loads it, but continuing Stage C
 * training (`--effnet`) and image variation need it.
 */
import * as fs from 'fs';
import * as path from 'path';
import { HostTensor, openCheckpoint, writeSafetensors } from '@wuerstchen/core';
import { EfficientNetEncoderConfig } from 'wuerstchen';
import { EFFNET_SETTINGS } from 'wuerstchen/internal';
import { TrainConfig } from './config';
import { readLatest, readModelConfig, resolveModelDir } from './checkpoint';
import { effnetOutSize } from './models_io';

export interface ExportOptions {
  /** Stage C run folder. */
  prior: string;
  /** Stage B run folder. */
  decoder: string;
  /** Stage A run or vqgan folder; default: the one the Stage B run was trained against. */
  vqgan?: string;
  out: string;
  /** weights dtype (default fp32). */
  dtype?: 'fp32' | 'fp16';
  log?: (line: string) => void;
}

export class ExportError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ExportError';
  }
}

const DIFFUSERS_VERSION = '0.21.0.dev0';
const SCHEDULER = {
  _class_name: 'DDPMWuerstchenScheduler',
  _diffusers_version: DIFFUSERS_VERSION,
  s: 0.008,
  scaler: 1.0,
};

function readJson(file: string, what: string): Record<string, unknown> {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new ExportError(`${file}: cannot read ${what} (${(e as Error).message})`);
  }
}

function runCheckpoint(run: string, stage: string): { config: TrainConfig; ckpt: string } {
  const cfgFile = path.join(run, 'train_config.json');
  if (!fs.existsSync(cfgFile))
    throw new ExportError(`${run}: no train_config.json (expected a Stage ${stage.toUpperCase()} training run folder)`);
  const config = readJson(cfgFile, 'the run configuration') as unknown as TrainConfig;
  if (config.stage !== stage)
    throw new ExportError(`${run}: a stage-${config.stage} run where a stage-${stage} run was expected`);
  const ckpt = readLatest(run);
  if (!ckpt) throw new ExportError(`${run}: no checkpoint (the latest pointer is missing)`);
  return { config, ckpt };
}

/** Copy a model folder's weights (optionally as fp16) and its config. */
function copyModel(src: string, dst: string, weightsName: string, dtype: 'fp32' | 'fp16'): void {
  fs.mkdirSync(dst, { recursive: true });
  fs.copyFileSync(path.join(src, 'config.json'), path.join(dst, 'config.json'));
  const ckpt = openCheckpoint(src, { base: weightsName === 'model.safetensors' ? 'model' : 'diffusion_pytorch_model' });
  try {
    const tensors = new Map<string, HostTensor>();
    for (const k of ckpt.keys()) {
      const t = ckpt.get(k);
      tensors.set(k, dtype === 'fp16' && t.dtype === 'F32' ? { ...t, dtype: 'F16' } : t);
    }
    writeSafetensors(path.join(dst, weightsName), tensors);
  } finally {
    ckpt.close();
  }
}

function copyDir(src: string, dst: string): void {
  fs.mkdirSync(dst, { recursive: true });
  for (const f of fs.readdirSync(src)) {
    const s = path.join(src, f);
    if (fs.statSync(s).isFile()) fs.copyFileSync(s, path.join(dst, f));
  }
}

function writeJson(file: string, value: object): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(value, null, 2) + '\n');
}

/** Build both pipeline folders; returns their paths. */
export function exportPipelines(opts: ExportOptions): { prior: string; decoder: string; effnet: string } {
  const dtype = opts.dtype ?? 'fp32';
  const log = opts.log ?? (() => undefined);
  const c = runCheckpoint(opts.prior, 'c');
  const b = runCheckpoint(opts.decoder, 'b');
  const vqganRef = opts.vqgan ?? b.config.vqgan?.from;
  if (!vqganRef) throw new ExportError(`${opts.decoder}: the Stage B run names no Stage A (vqgan.from); pass --vqgan`);
  const vqganDir = resolveModelDir(vqganRef, 'vqgan');
  const state = readJson(path.join(c.ckpt, 'training_state.json'), 'the Stage C training state');
  const scaling = (state.extra as { latent_scaling?: { latent_mean: number; latent_std: number } } | undefined)
    ?.latent_scaling ?? { latent_mean: 42, latent_std: 1 };
  for (const [ckpt, run] of [
    [c.ckpt, opts.prior],
    [b.ckpt, opts.decoder],
  ]) {
    if (!fs.existsSync(path.join(ckpt, 'text_encoder', 'config.json')))
      throw new ExportError(
        `${run}: its checkpoint holds no text_encoder/ (export needs a run trained with a seeded text encoder spec)`,
      );
  }

  // geometry: image side → prior latent side (compressor) → decoder latent side (Stage A's factor)
  const last = c.config.phases[c.config.phases.length - 1];
  const effCfg = readModelConfig(path.join(b.ckpt, 'effnet')) as unknown as EfficientNetEncoderConfig;
  if (!effCfg.inverted_residual_setting && !EFFNET_SETTINGS[effCfg.effnet])
    throw new ExportError(`${b.ckpt}/effnet: unknown compressor configuration`);
  const side = last.image_size;
  const priorSide = effnetOutSize(effCfg, last.effnet_size!);
  const vq = readModelConfig(vqganDir) as { up_down_scale_factor: number; levels: number };
  const decoderSide = side / (vq.up_down_scale_factor * 2 ** (vq.levels - 1));

  const tmp = `${opts.out}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  const priorOut = path.join(tmp, 'wuerstchen-prior');
  const decoderOut = path.join(tmp, 'wuerstchen');
  const priorModel = fs.existsSync(path.join(c.ckpt, 'prior_ema', 'config.json')) ? 'prior_ema' : 'prior';
  log(`prior: ${path.join(c.ckpt, priorModel)}; decoder: ${path.join(b.ckpt, 'decoder')}; vqgan: ${vqganDir}`);
  copyModel(path.join(c.ckpt, priorModel), path.join(priorOut, 'prior'), 'diffusion_pytorch_model.safetensors', dtype);
  copyModel(path.join(c.ckpt, 'text_encoder'), path.join(priorOut, 'text_encoder'), 'model.safetensors', dtype);
  copyDir(c.config.tokenizer!, path.join(priorOut, 'tokenizer'));
  writeJson(path.join(priorOut, 'scheduler', 'scheduler_config.json'), SCHEDULER);
  writeJson(path.join(priorOut, 'model_index.json'), {
    _class_name: 'WuerstchenPriorPipeline',
    _diffusers_version: DIFFUSERS_VERSION,
    latent_mean: scaling.latent_mean,
    latent_std: scaling.latent_std,
    prior: ['wuerstchen', 'WuerstchenPrior'],
    resolution_multiple: side / priorSide,
    scheduler: ['diffusers', 'DDPMWuerstchenScheduler'],
    text_encoder: ['transformers', 'CLIPTextModel'],
    tokenizer: ['transformers', 'CLIPTokenizer'],
  });
  copyModel(
    path.join(b.ckpt, 'decoder'),
    path.join(decoderOut, 'decoder'),
    'diffusion_pytorch_model.safetensors',
    dtype,
  );
  copyModel(path.join(b.ckpt, 'text_encoder'), path.join(decoderOut, 'text_encoder'), 'model.safetensors', dtype);
  copyModel(vqganDir, path.join(decoderOut, 'vqgan'), 'diffusion_pytorch_model.safetensors', dtype);
  copyDir(b.config.tokenizer!, path.join(decoderOut, 'tokenizer'));
  writeJson(path.join(decoderOut, 'scheduler', 'scheduler_config.json'), SCHEDULER);
  writeJson(path.join(decoderOut, 'model_index.json'), {
    _class_name: 'WuerstchenDecoderPipeline',
    _diffusers_version: DIFFUSERS_VERSION,
    decoder: ['wuerstchen', 'WuerstchenDiffNeXt'],
    latent_dim_scale: decoderSide / priorSide,
    scheduler: ['diffusers', 'DDPMWuerstchenScheduler'],
    text_encoder: ['transformers', 'CLIPTextModel'],
    tokenizer: ['transformers', 'CLIPTokenizer'],
    vqgan: ['wuerstchen', 'PaellaVQModel'],
  });
  copyModel(path.join(b.ckpt, 'effnet'), path.join(tmp, 'effnet'), 'diffusion_pytorch_model.safetensors', dtype);
  // swap in atomically: a reader never sees a half-written pipeline
  for (const name of ['wuerstchen-prior', 'wuerstchen', 'effnet']) {
    const dst = path.join(opts.out, name);
    fs.mkdirSync(opts.out, { recursive: true });
    const old = `${dst}.old-${process.pid}`;
    if (fs.existsSync(dst)) fs.renameSync(dst, old);
    fs.renameSync(path.join(tmp, name), dst);
    fs.rmSync(old, { recursive: true, force: true });
  }
  fs.rmSync(tmp, { recursive: true, force: true });
  return {
    prior: path.join(opts.out, 'wuerstchen-prior'),
    decoder: path.join(opts.out, 'wuerstchen'),
    effnet: path.join(opts.out, 'effnet'),
  };
}
