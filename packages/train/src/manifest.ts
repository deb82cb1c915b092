/**
 * Checkpoint manifests: `manifest.json`, written last into a checkpoint folder, records the size and
 * SHA-256 of every other file in it, so a resume can tell an intact checkpoint from one whose files
 * were truncated, overwritten or removed after the write.
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { openSafetensors } from '@wuerstchen/core';

export const MANIFEST_FILE = 'manifest.json';
const FORMAT = 'wuerstchen-train-checkpoint/1';
const HASH_CHUNK = 1 << 20;
/** A manifest is a few hundred bytes per file; anything far larger is not one. */
const MAX_MANIFEST_BYTES = 1 << 20;

export interface ManifestEntry {
  size: number;
  sha256: string;
}

export interface Manifest {
  format: typeof FORMAT;
  step: number;
  files: Record<string, ManifestEntry>;
}

/** SHA-256 of a file, read in chunks (checkpoint files can be gigabytes). */
export function sha256File(file: string): string {
  const hash = createHash('sha256');
  const buf = Buffer.alloc(HASH_CHUNK);
  const fd = fs.openSync(file, 'r');
  try {
    for (let pos = 0; ;) {
      const n = fs.readSync(fd, buf, 0, buf.length, pos);
      if (n === 0) break;
      hash.update(buf.subarray(0, n));
      pos += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  return hash.digest('hex');
}

/** Regular files under `dir`, as sorted `/`-separated relative names. */
function listFiles(dir: string, rel = ''): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
    const name = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...listFiles(dir, name));
    else if (e.isFile()) out.push(name);
  }
  return out.sort();
}

/** Record every file of a filled checkpoint folder; call after all of them are written and synced. */
export function buildManifest(dir: string, step: number): Manifest {
  const files: Record<string, ManifestEntry> = {};
  for (const name of listFiles(dir)) {
    if (name === MANIFEST_FILE) continue;
    const file = path.join(dir, ...name.split('/'));
    files[name] = { size: fs.statSync(file).size, sha256: sha256File(file) };
  }
  return { format: FORMAT, step, files };
}

/** A name inside a folder: relative, `/`-separated, no empty, `.` or `..` parts. */
export function isPlainRelativeName(name: string): boolean {
  if (!name || name.length > 1024 || name.startsWith('/') || /[\\\0]/.test(name) || path.isAbsolute(name)) return false;
  return name.split('/').every((part) => part !== '' && part !== '.' && part !== '..');
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function parseManifest(text: string): Manifest {
  let m: unknown;
  try {
    m = JSON.parse(text);
  } catch (e) {
    throw new Error(`${MANIFEST_FILE} is not valid JSON (${(e as Error).message})`);
  }
  if (!isObject(m) || m.format !== FORMAT) throw new Error(`${MANIFEST_FILE} is not a "${FORMAT}" manifest`);
  if (!Number.isSafeInteger(m.step) || (m.step as number) < 0)
    throw new Error(`${MANIFEST_FILE}: "step" must be a non-negative integer`);
  if (!isObject(m.files)) throw new Error(`${MANIFEST_FILE}: "files" must be an object`);
  for (const [name, e] of Object.entries(m.files)) {
    if (!isPlainRelativeName(name))
      throw new Error(`${MANIFEST_FILE}: file name ${JSON.stringify(name.slice(0, 80))} is not a plain relative name`);
    if (
      !isObject(e) ||
      !Number.isSafeInteger(e.size) ||
      (e.size as number) < 0 ||
      typeof e.sha256 !== 'string' ||
      !/^[0-9a-f]{64}$/.test(e.sha256)
    ) {
      throw new Error(`${MANIFEST_FILE}: the entry of ${name} must be {"size": bytes, "sha256": 64 hex digits}`);
    }
  }
  return m as unknown as Manifest;
}

function checkRegularFile(file: string, name: string): fs.Stats {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    throw new Error(`${name} is missing`);
  }
  if (!st.isFile()) throw new Error(`${name} is not a regular file`);
  return st;
}

/**
 * Check a checkpoint folder against its manifest: every recorded file present with the recorded size
 * and checksum. A folder without a manifest was written by an older version; there only what can be
 * checked without one is: `training_state.json` and every config.json parse, every safetensors header
 * is valid and covers its file. `step` is the one the folder's name gives. Returns whether a manifest was verified; throws a one-line reason.
 */
export function verifyCheckpointFiles(dir: string, step: number): { manifest: boolean } {
  const mfile = path.join(dir, MANIFEST_FILE);
  if (!fs.existsSync(mfile)) {
    for (const name of ['training_state.json', 'optimizer.safetensors']) checkRegularFile(path.join(dir, name), name);
    for (const name of listFiles(dir)) {
      const file = path.join(dir, ...name.split('/'));
      if (name.endsWith('.safetensors')) openSafetensors(file).close();
      else if (name.endsWith('.json')) {
        try {
          JSON.parse(fs.readFileSync(file, 'utf8'));
        } catch (e) {
          throw new Error(`${name} is not valid JSON (${(e as Error).message})`);
        }
      }
    }
    return { manifest: false };
  }
  if (checkRegularFile(mfile, MANIFEST_FILE).size > MAX_MANIFEST_BYTES)
    throw new Error(`${MANIFEST_FILE} is larger than ${MAX_MANIFEST_BYTES} bytes`);
  const m = parseManifest(fs.readFileSync(mfile, 'utf8'));
  if (m.step !== step) throw new Error(`${MANIFEST_FILE} records step ${m.step}, not ${step}`);
  if (!m.files['training_state.json']) throw new Error(`${MANIFEST_FILE} does not list training_state.json`);
  for (const [name, e] of Object.entries(m.files)) {
    const file = path.join(dir, ...name.split('/'));
    const st = checkRegularFile(file, name);
    if (st.size !== e.size) throw new Error(`${name} is ${st.size} bytes, the manifest recorded ${e.size}`);
    if (sha256File(file) !== e.sha256) throw new Error(`${name} does not match the checksum in the manifest`);
  }
  return { manifest: true };
}
