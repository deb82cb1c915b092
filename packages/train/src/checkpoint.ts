/**
 * Checkpoints (spec training.md §2.8, issue item 5).
 *
 * Layout of a run folder:
 * ```
 * <out>/latest                      text: "checkpoints/step-00000100" (switched atomically)
 * <out>/checkpoints/step-00000100/  one complete checkpoint:
 *     prior/ | decoder/ + effnet/ | vqgan/ + discriminator/     diffusers model folders
 *     prior_ema/                    (Stage C) the EMA weights, same format
 *     optimizer.safetensors         AdamW moments (tfjs layout) and EMA shadow
 *     training_state.json           step, phase, optimizer steps, RNG state, data position, …
 * ```
 * A checkpoint is written into `checkpoints/.tmp-…`, every file fsynced, the folder renamed to
 * its final name, and only then `latest` is replaced (write `latest.tmp`, fsync, rename). A
 * SIGKILL at any moment therefore leaves `latest` pointing at a complete checkpoint.
 *
 * Model folders are written like diffusers' `save_pretrained`: `config.json` with `_class_name`
 * and `_diffusers_version`, keys sorted, indent 2, trailing newline; weights in
 * `diffusion_pytorch_model.safetensors` in PyTorch layout under the state-dict keys.
 */
import * as fs from 'fs';
import * as path from 'path';
import { HostTensor, Module, openCheckpoint, writeSafetensors, loadSafetensors } from '@wuerstchen/core';

export const DIFFUSERS_VERSION = '0.21.0.dev0';

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === 'object') {
    return Object.fromEntries(Object.keys(v as object).sort().map((k) => [k, sortKeys((v as Record<string, unknown>)[k])]));
  }
  return v;
}

/** `ConfigMixin.to_json_string`: sorted keys, indent 2, newline. */
export function configJson(className: string, config: Record<string, unknown>): string {
  return JSON.stringify(sortKeys({ ...config, _class_name: className, _diffusers_version: DIFFUSERS_VERSION }), null, 2) + '\n';
}

function fsyncFile(file: string): void {
  const fd = fs.openSync(file, 'r+');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

function fsyncDir(dir: string): void {
  try {
    const fd = fs.openSync(dir, 'r');
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    /* not supported on every platform */
  }
}

/** Write a file durably (fsynced) — used inside the temporary checkpoint folder. */
export function writeFileSynced(file: string, data: string | Buffer): void {
  fs.writeFileSync(file, data);
  fsyncFile(file);
}

/** Write a diffusers model folder: config.json + diffusion_pytorch_model.safetensors. */
export function saveDiffusersModel(dir: string, className: string, config: Record<string, unknown>, tensors: Map<string, HostTensor>): void {
  fs.mkdirSync(dir, { recursive: true });
  writeFileSynced(path.join(dir, 'config.json'), configJson(className, config));
  const file = path.join(dir, 'diffusion_pytorch_model.safetensors');
  writeSafetensors(file, tensors);
  fsyncFile(file);
  fsyncDir(dir);
}

/** Load a diffusers model folder's weights into `model` (strict). */
export function loadDiffusersWeights(model: Module, dir: string): void {
  const ckpt = openCheckpoint(dir);
  try {
    model.loadStateDict(ckpt, { source: dir });
  } finally {
    ckpt.close();
  }
}

export function readModelConfig(dir: string): Record<string, unknown> {
  const file = path.join(dir, 'config.json');
  if (!fs.existsSync(file)) throw new Error(`${dir}: no config.json (expected a diffusers model folder)`);
  return JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
}

/** Strip the diffusers bookkeeping keys from a config.json object. */
export function modelArgs(config: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(config).filter(([k]) => !k.startsWith('_')));
}

export const stepName = (step: number): string => `step-${String(step).padStart(8, '0')}`;

export interface CheckpointWriter {
  /** Fill the temporary folder (model folders, optimizer file, state JSON). */
  (dir: string): void;
}

/**
 * Write a checkpoint atomically and switch `latest` to it; prune older ones beyond `keep`.
 * Returns the final folder.
 */
export function writeCheckpoint(out: string, step: number, write: CheckpointWriter, keep = 3): string {
  const root = path.join(out, 'checkpoints');
  fs.mkdirSync(root, { recursive: true });
  const name = stepName(step);
  const tmp = path.join(root, `.tmp-${name}-${process.pid}`);
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp);
  write(tmp);
  fsyncDir(tmp);
  const final = path.join(root, name);
  // A folder of this name can only exist from a run that was killed before switching `latest` to it.
  if (fs.existsSync(final)) {
    const current = readLatest(out);
    if (current && path.resolve(current) === path.resolve(final)) {
      // re-writing the checkpoint `latest` points at: move it aside first, switch after
      const aside = path.join(root, `.old-${name}-${process.pid}`);
      fs.renameSync(final, aside);
      fs.renameSync(tmp, final);
      fs.rmSync(aside, { recursive: true, force: true });
    } else {
      fs.rmSync(final, { recursive: true, force: true });
      fs.renameSync(tmp, final);
    }
  } else fs.renameSync(tmp, final);
  fsyncDir(root);
  const latestTmp = path.join(out, `latest.tmp-${process.pid}`);
  writeFileSynced(latestTmp, `checkpoints/${name}\n`);
  fs.renameSync(latestTmp, path.join(out, 'latest'));
  fsyncDir(out);
  prune(out, keep);
  return final;
}

/** The checkpoint folder `latest` points at, or null. */
export function readLatest(out: string): string | null {
  const p = path.join(out, 'latest');
  if (!fs.existsSync(p)) return null;
  const rel = fs.readFileSync(p, 'utf8').trim();
  if (!rel) return null;
  const dir = path.resolve(out, rel);
  return fs.existsSync(dir) ? dir : null;
}

/** Remove leftovers of interrupted writes and checkpoints beyond the newest `keep`. */
export function prune(out: string, keep: number): void {
  const root = path.join(out, 'checkpoints');
  if (!fs.existsSync(root)) return;
  const latest = readLatest(out);
  for (const f of fs.readdirSync(root)) {
    if (f.startsWith('.tmp-') || f.startsWith('.old-')) {
      const pid = Number(f.split('-').pop());
      let alive = false;
      if (pid && pid !== process.pid) {
        try {
          process.kill(pid, 0);
          alive = true;
        } catch {
          alive = false;
        }
      }
      if (!alive && !(pid === process.pid && f.startsWith('.tmp-'))) fs.rmSync(path.join(root, f), { recursive: true, force: true });
    }
  }
  if (keep <= 0) return;
  const steps = fs.readdirSync(root).filter((f) => /^step-\d+$/.test(f)).sort();
  const excess = steps.slice(0, Math.max(0, steps.length - keep));
  for (const f of excess) {
    const dir = path.join(root, f);
    if (latest && path.resolve(dir) === path.resolve(latest)) continue;
    fs.rmSync(dir, { recursive: true, force: true });
  }
  for (const f of fs.readdirSync(out)) if (f.startsWith('latest.tmp-')) fs.rmSync(path.join(out, f), { force: true });
}

/**
 * Resolve a model reference: a diffusers model folder (has config.json), or a training run
 * folder (has `latest`) plus the sub-folder name, e.g. `runs/stage-b` + `effnet`.
 */
export function resolveModelDir(ref: string, sub: string): string {
  if (fs.existsSync(path.join(ref, 'config.json'))) return ref;
  const latest = readLatest(ref);
  if (latest && fs.existsSync(path.join(latest, sub, 'config.json'))) return path.join(latest, sub);
  if (fs.existsSync(path.join(ref, sub, 'config.json'))) return path.join(ref, sub);
  throw new Error(`${ref}: neither a model folder (config.json) nor a training run / pipeline folder with ${sub}/config.json`);
}

export function saveTensorFile(file: string, tensors: Map<string, HostTensor>): void {
  writeSafetensors(file, tensors, { format: 'wuerstchen-train' });
  fsyncFile(file);
}

export function loadTensorFile(file: string): Map<string, HostTensor> {
  return loadSafetensors(file);
}
