/**
 * Checkpoints: every file written atomically and listed in a manifest, so that a run resumes from the newest
 * intact one.
 *
 * Layout of a run folder:
 * ```
 * <out>/latest                      text: "checkpoints/step-00000100" (switched atomically)
 * <out>/checkpoints/step-00000100/  one complete checkpoint:
 *     prior/ | decoder/ + effnet/ | vqgan/ + discriminator/     diffusers model folders
 *     prior_ema/                    (Stage C) the EMA weights, same format
 *     optimizer.safetensors         AdamW moments (tfjs layout) and EMA shadow
 *     training_state.json           step, phase, optimizer steps, RNG state, data position, …
 *     manifest.json                 size and SHA-256 of every other file (written last)
 * ```
 * A checkpoint is written into `checkpoints/.tmp-…`, every file fsynced, the folder renamed to
 * its final name, and only then `latest` is replaced (write `latest.tmp`, fsync, rename). A
 * SIGKILL at any moment therefore leaves `latest` pointing at a complete checkpoint. A resume takes
 * the newest checkpoint whose manifest verifies, whatever `latest` says, and refuses to start from
 * scratch over checkpoints of which none verifies.
 *
 * Model folders are written like diffusers' `save_pretrained`: `config.json` with `_class_name`
 * and `_diffusers_version`, keys sorted, indent 2, trailing newline; weights in
 * `diffusion_pytorch_model.safetensors` in PyTorch layout under the state-dict keys.
 */
import * as fs from 'fs';
import * as path from 'path';
import { HostTensor, Module, openCheckpoint, writeSafetensors, loadSafetensors } from '@wuerstchen/core';
import { MANIFEST_FILE, buildManifest, verifyCheckpointFiles } from './manifest';

export const DIFFUSERS_VERSION = '0.21.0.dev0';

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === 'object') {
    return Object.fromEntries(
      Object.keys(v as object)
        .sort()
        .map((k) => [k, sortKeys((v as Record<string, unknown>)[k])]),
    );
  }
  return v;
}

/** `ConfigMixin.to_json_string`: sorted keys, indent 2, newline. */
export function configJson(className: string, config: Record<string, unknown>): string {
  return (
    JSON.stringify(sortKeys({ ...config, _class_name: className, _diffusers_version: DIFFUSERS_VERSION }), null, 2) +
    '\n'
  );
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
export function saveDiffusersModel(
  dir: string,
  className: string,
  config: Record<string, unknown>,
  tensors: Map<string, HostTensor>,
): void {
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

/** A run folder or a checkpoint in it that cannot be used; the CLI prints the message as one line. */
export class CheckpointError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CheckpointError';
  }
}

const STEP_DIR = /^step-(\d{1,15})$/;
/** `latest` holds one short relative name; anything longer is not a pointer. */
const MAX_POINTER_BYTES = 4096;

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
  try {
    write(tmp);
    // written last: a folder whose manifest verifies was written completely
    writeFileSynced(path.join(tmp, MANIFEST_FILE), JSON.stringify(buildManifest(tmp, step), null, 2) + '\n');
    fsyncDir(tmp);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  const final = path.join(root, name);
  // A folder of this name can only exist from a run that was killed before switching `latest` to it,
  // or one that did not verify on resume.
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
  prune(out, keep, step);
  return final;
}

/** What `<out>/latest` says: nothing, a checkpoint folder inside the run, or why it cannot be used. */
export type LatestPointer = { kind: 'none' } | { kind: 'ok'; dir: string } | { kind: 'bad'; reason: string };

export function readLatestPointer(out: string): LatestPointer {
  const p = path.join(out, 'latest');
  let st: fs.Stats;
  try {
    st = fs.statSync(p);
  } catch {
    return { kind: 'none' };
  }
  if (!st.isFile()) return { kind: 'bad', reason: 'is not a regular file' };
  if (st.size > MAX_POINTER_BYTES) return { kind: 'bad', reason: `is ${st.size} bytes, not a checkpoint name` };
  const rel = fs.readFileSync(p, 'utf8').trim();
  if (!rel) return { kind: 'bad', reason: 'is empty' };
  // only the form writeCheckpoint writes: a checkpoint inside this run folder, never `..` or an absolute path
  const m = /^checkpoints\/(step-\d{1,15})$/.exec(rel);
  if (!m)
    return {
      kind: 'bad',
      reason: `holds ${JSON.stringify(rel.slice(0, 80))}, not "checkpoints/step-<n>" (a checkpoint inside the run folder)`,
    };
  const dir = path.resolve(out, 'checkpoints', m[1]);
  if (!isDirectory(dir)) return { kind: 'bad', reason: `names ${rel}, which is not a folder` };
  return { kind: 'ok', dir };
}

/** The checkpoint folder `latest` points at, or null (missing, corrupt or outside the run folder). */
export function readLatest(out: string): string | null {
  const p = readLatestPointer(out);
  return p.kind === 'ok' ? p.dir : null;
}

/** A real folder, not a link: a checkpoint that links elsewhere would be read from outside the run. */
function isDirectory(p: string): boolean {
  return fs.lstatSync(p, { throwIfNoEntry: false })?.isDirectory() ?? false;
}

const isDirOrLink = (p: string): boolean => fs.statSync(p, { throwIfNoEntry: false })?.isDirectory() ?? false;

export interface CheckpointEntry {
  name: string;
  step: number;
  dir: string;
}

/** The `checkpoints/step-<n>` entries of a run folder, newest first (whatever they hold). */
export function listCheckpoints(out: string): CheckpointEntry[] {
  const root = path.join(out, 'checkpoints');
  if (!isDirOrLink(root)) return [];
  return fs
    .readdirSync(root)
    .map((name) => ({ name, m: STEP_DIR.exec(name) }))
    .filter((e) => e.m)
    .map(({ name, m }) => ({ name, step: Number(m![1]), dir: path.resolve(root, name) }))
    .sort((a, b) => b.step - a.step);
}

/** A short description of the run already in `out` (checkpoints or a `latest` pointer), or null. */
export function existingRun(out: string): string | null {
  const cks = listCheckpoints(out);
  if (cks.length) return `checkpoints/${cks[0].name}${cks.length > 1 ? ` and ${cks.length - 1} older` : ''}`;
  return fs.existsSync(path.join(out, 'latest')) ? 'a latest pointer' : null;
}

export interface ResumePoint<T> {
  dir: string;
  step: number;
  /** false: written by an older version without a manifest, checked for structure only. */
  manifest: boolean;
  /** what `check` returned for it. */
  value: T;
}

/**
 * The newest checkpoint of `out` that verifies (manifest, then `check`, which throws to reject), or
 * null when the run folder holds none at all. When checkpoints exist but none verifies this throws:
 * starting from scratch there would overwrite them. Every checkpoint passed over, and a `latest`
 * that was not followed, is reported through `log`.
 */
export function findResumeCheckpoint<T>(
  out: string,
  check: (dir: string, step: number) => T,
  log: (line: string) => void,
): ResumePoint<T> | null {
  const pointer = readLatestPointer(out);
  const all = listCheckpoints(out);
  if (!all.length) {
    if (pointer.kind === 'bad')
      log(`warning: ${path.join(out, 'latest')} ${pointer.reason}; ignored (there are no checkpoints)`);
    return null;
  }
  const rejected: string[] = [];
  for (const c of all) {
    let point: ResumePoint<T>;
    try {
      if (!isDirectory(c.dir)) throw new Error('is not a folder');
      const { manifest } = verifyCheckpointFiles(c.dir, c.step);
      point = { dir: c.dir, step: c.step, manifest, value: check(c.dir, c.step) };
    } catch (e) {
      rejected.push(`${c.name}: ${(e as Error).message}`);
      log(`warning: checkpoint ${c.name} cannot be resumed: ${(e as Error).message}`);
      continue;
    }
    if (pointer.kind === 'bad')
      log(`warning: ${path.join(out, 'latest')} ${pointer.reason}; using the newest intact checkpoint, ${c.name}`);
    else if (pointer.kind === 'none')
      log(`warning: ${out} has no latest pointer; using the newest intact checkpoint, ${c.name}`);
    else if (pointer.dir !== c.dir)
      log(`warning: latest names ${path.basename(pointer.dir)}; using the newest intact checkpoint, ${c.name}`);
    if (!point.manifest)
      log(
        `warning: checkpoint ${c.name} has no ${MANIFEST_FILE} (written by an older version): its files were checked for structure only`,
      );
    return point;
  }
  throw new CheckpointError(
    `${out}: none of its ${all.length} checkpoint(s) can be resumed (${rejected.join('; ')}); not starting from scratch over them: move them away or choose another --out`,
  );
}

/**
 * Fail early, before anything is built, when `out` cannot take a run: it must be a folder if it
 * exists, else its parent must exist; and the place must be writable.
 */
export function checkOutDir(out: string): void {
  const abs = path.resolve(out);
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(abs);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ENOTDIR')
      throw new CheckpointError(`${out}: cannot be read (${(e as Error).message})`);
  }
  if (st && !st.isDirectory())
    throw new CheckpointError(`${out} exists and is not a folder (a run folder is expected)`);
  const where = st ? abs : path.dirname(abs);
  if (!st) {
    const parent = fs.statSync(where, { throwIfNoEntry: false });
    if (!parent) throw new CheckpointError(`${out}: its parent folder ${where} does not exist`);
    if (!parent.isDirectory()) throw new CheckpointError(`${out}: its parent ${where} is not a folder`);
  }
  // create a file to find out: permission bits say nothing for root or on a read-only mount
  const probe = path.join(where, `.wuerstchen-train-probe-${process.pid}`);
  try {
    fs.writeFileSync(probe, '');
  } catch (e) {
    throw new CheckpointError(
      `${out}: ${where} is not writable (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
    );
  }
  fs.rmSync(probe, { force: true });
}

/** Remove this process's temporary files in a run folder (after an interrupted run). */
export function removeTempFiles(out: string): void {
  const mine = (f: string) => f.endsWith(`-${process.pid}`);
  const root = path.join(out, 'checkpoints');
  if (isDirOrLink(root))
    for (const f of fs.readdirSync(root))
      if (f.startsWith('.tmp-') && mine(f)) fs.rmSync(path.join(root, f), { recursive: true, force: true });
  if (isDirOrLink(out))
    for (const f of fs.readdirSync(out))
      if (f.startsWith('latest.tmp-') && mine(f)) fs.rmSync(path.join(out, f), { force: true });
  const samples = path.join(out, 'samples');
  if (isDirOrLink(samples))
    for (const f of fs.readdirSync(samples))
      if (f.includes('.tmp-') && mine(f)) fs.rmSync(path.join(samples, f), { force: true });
}

/**
 * Remove leftovers of interrupted writes and checkpoints beyond the newest `keep` up to step `upTo`
 * (newer folders are ones that did not verify on resume; training overwrites them when it gets there).
 */
export function prune(out: string, keep: number, upTo = Infinity): void {
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
      if (!alive && !(pid === process.pid && f.startsWith('.tmp-')))
        fs.rmSync(path.join(root, f), { recursive: true, force: true });
    }
  }
  if (keep <= 0) return;
  const steps = listCheckpoints(out).filter((c) => c.step <= upTo);
  for (const c of steps.slice(keep)) {
    if (latest && c.dir === path.resolve(latest)) continue;
    fs.rmSync(c.dir, { recursive: true, force: true });
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
  throw new Error(
    `${ref}: neither a model folder (config.json) nor a training run / pipeline folder with ${sub}/config.json`,
  );
}

export function saveTensorFile(file: string, tensors: Map<string, HostTensor>): void {
  writeSafetensors(file, tensors, { format: 'wuerstchen-train' });
  fsyncFile(file);
}

export function loadTensorFile(file: string): Map<string, HostTensor> {
  return loadSafetensors(file);
}
