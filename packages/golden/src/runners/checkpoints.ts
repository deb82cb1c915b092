/**
 * Runners for the checkpoint cases (golden README "Cases"):
 *  - `loader_prior_fp16` / `loader_prior_bf16`: the `prior_tiny` weights as a diffusers variant file
 *    (`diffusion_pytorch_model.<variant>.safetensors`, F16 / BF16), loaded with `openCheckpoint(dir, {variant})` into
 *    `WuerstchenPrior`; the forward output must match, and every loaded tensor must equal
 *    `expected_float32.safetensors` bit for bit (the upcast is exact);
 *  - `loader_prior_sharded`: two shards + `diffusion_pytorch_model.safetensors.index.json`; the merged checkpoint
 *    must load into `WuerstchenPrior` and equal `prior_tiny/weights.safetensors` bit for bit (key checks only);
 *  - `real_checkpoint_keys` (module "key lists"): the full-size modules with the real checkpoints' configs, built
 *    without allocating any weight, must declare exactly the listed keys (in state_dict order), shapes and dtypes.
 *
 * The loader cases share `module: WuerstchenPrior` with the numeric prior cases, so they are registered by case name
 * (`registerCaseRunner`), which the harness consults before the module runner.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { HostTensor, Module, loadSafetensors, openCheckpoint, openSafetensors } from '@wuerstchen/core';
import { toNCHW, toNHWC } from '@wuerstchen/core/internal';
import { CLIPTextModel, WuerstchenDiffNeXt, PaellaVQModel, WuerstchenPrior, WuerstchenPriorConfig } from 'wuerstchen';
import { CLIP_TEXT_BIGG, CLIP_TEXT_H } from 'wuerstchen/internal';
import { CaseContext, Check, RunResult, registerCaseRunner, registerRunner } from '../harness';

// ---------------------------------------------------------------------------------------------------------------
// helpers

const fmtShape = (s: readonly number[]) => `[${s.join(', ')}]`;

/** Bitwise equality of two host tensors (float data compared as bit patterns, so -0 ≠ 0 and NaN payloads count). */
function bitwiseEqual(a: HostTensor, b: HostTensor): string | null {
  if (fmtShape(a.shape) !== fmtShape(b.shape)) return `shape ${fmtShape(a.shape)} vs ${fmtShape(b.shape)}`;
  const bytes = (t: HostTensor) => new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  const x = bytes(a);
  const y = bytes(b);
  if (a.data.constructor !== b.data.constructor)
    return `data types ${a.data.constructor.name} vs ${b.data.constructor.name}`;
  if (x.length !== y.length) return `${x.length} vs ${y.length} bytes`;
  for (let i = 0; i < x.length; i++) {
    if (x[i] !== y[i]) {
      const el = Math.floor(i / a.data.BYTES_PER_ELEMENT);
      return `first difference at element ${el}: ${String(a.data[el])} vs ${String(b.data[el])}`;
    }
  }
  return null;
}

/** One check comparing a set of tensors against an expected map, bitwise. */
function compareTensors(
  name: string,
  got: (key: string) => HostTensor,
  gotKeys: string[],
  expected: Map<string, HostTensor>,
): Check {
  const problems: string[] = [];
  const have = new Set(gotKeys);
  const missing = [...expected.keys()].filter((k) => !have.has(k));
  const extra = gotKeys.filter((k) => !expected.has(k));
  if (missing.length) problems.push(`missing ${missing.length}: ${missing.slice(0, 5).join(', ')}`);
  if (extra.length) problems.push(`unexpected ${extra.length}: ${extra.slice(0, 5).join(', ')}`);
  for (const [k, ref] of expected) {
    if (!have.has(k)) continue;
    const diff = bitwiseEqual(got(k), ref);
    if (diff) problems.push(`${k}: ${diff}`);
  }
  return {
    name,
    ok: problems.length === 0,
    detail: `${problems.length} problem(s): ${problems.slice(0, 5).join('; ')}`,
  };
}

/** Case config (constructor kwargs) as a WuerstchenPrior config, cross-checked with the folder's config.json. */
function priorConfig(ctx: CaseContext, checks: Check[]): Partial<WuerstchenPriorConfig> {
  const cfg = ctx.spec.config as Partial<WuerstchenPriorConfig> | undefined;
  if (!cfg) throw new Error(`${ctx.file('case.json')}: no "config"`);
  const file = ctx.file('config.json');
  if (fs.existsSync(file)) {
    const json = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
    const diffs = Object.entries(cfg)
      .filter(([k, v]) => JSON.stringify(json[k]) !== JSON.stringify(v))
      .map(([k]) => k);
    checks.push({
      name: 'config.json',
      ok: json._class_name === 'WuerstchenPrior' && diffs.length === 0,
      detail: `_class_name ${String(json._class_name)}, differs from case config in: ${diffs.join(', ')}`,
    });
  }
  return cfg;
}

function stateDictCheck(name: string, model: Module, expected: Map<string, HostTensor>): Check {
  const sd = model.stateDict();
  return compareTensors(name, (k) => sd.get(k)!, [...sd.keys()], expected);
}

// ---------------------------------------------------------------------------------------------------------------
// loader_prior_fp16 / loader_prior_bf16

function variantLoader(variant: 'fp16' | 'bf16', dtype: 'F16' | 'BF16') {
  return (ctx: CaseContext): RunResult => {
    const checks: Check[] = [];
    const model = new WuerstchenPrior(priorConfig(ctx, checks));
    const ckpt = openCheckpoint(ctx.dir, { variant });
    try {
      const weightsFile = ctx.file(String(ctx.spec.weights));
      checks.push({
        name: 'variant file',
        ok: ckpt.files.length === 1 && path.resolve(ckpt.files[0]) === path.resolve(weightsFile),
        detail: `opened ${ckpt.files.join(', ')}, expected ${weightsFile}`,
      });
      const wrongDtype = ckpt.keys().filter((k) => ckpt.info(k).dtype !== dtype);
      checks.push({
        name: `stored dtype ${dtype}`,
        ok: wrongDtype.length === 0,
        detail: `${wrongDtype.length} tensors are not ${dtype}: ${wrongDtype.slice(0, 5).join(', ')}`,
      });
      model.loadStateDict(ckpt, { source: ckpt.files[0] });
      model.eval();
      const expected = loadSafetensors(ctx.file(String(ctx.spec.expected ?? 'expected_float32.safetensors')));
      checks.push(
        compareTensors('checkpoint tensors = expected_float32 (bitwise)', (k) => ckpt.get(k), ckpt.keys(), expected),
      );
      checks.push(stateDictCheck('loaded model state_dict = expected_float32 (bitwise)', model, expected));
      const tensors = tf.tidy(() => ({
        output: toNCHW(model.forward(toNHWC(ctx.tensor('x')), ctx.tensor('r'), ctx.tensor('c'))),
      }));
      return { tensors, checks };
    } finally {
      ckpt.close();
      model.dispose();
    }
  };
}

registerCaseRunner('loader_prior_fp16', variantLoader('fp16', 'F16'));
registerCaseRunner('loader_prior_bf16', variantLoader('bf16', 'BF16'));

// ---------------------------------------------------------------------------------------------------------------
// loader_prior_sharded

registerCaseRunner('loader_prior_sharded', (ctx) => {
  const checks: Check[] = [];
  const model = new WuerstchenPrior(priorConfig(ctx, checks));
  const ckpt = openCheckpoint(ctx.dir);
  try {
    const shards = (ctx.spec.shards as { file: string; num_tensors: number }[] | undefined) ?? [];
    const names = ckpt.files.map((f) => path.basename(f));
    checks.push({
      name: 'shard files',
      ok: JSON.stringify(names) === JSON.stringify(shards.map((s) => s.file)),
      detail: `opened ${names.join(', ')}`,
    });
    for (const s of shards) {
      const f = openSafetensors(ctx.file(s.file));
      const n = f.keys().length;
      f.close();
      checks.push({ name: `${s.file} tensors`, ok: n === s.num_tensors, detail: `${n}, case says ${s.num_tensors}` });
    }
    const index = JSON.parse(fs.readFileSync(ctx.file(String(ctx.spec.weights)), 'utf8')) as {
      metadata?: { total_size?: number };
    };
    const bytes = ckpt.keys().reduce((a, k) => a + ckpt.info(k).byteLength, 0);
    checks.push({
      name: 'index total_size',
      ok: index.metadata?.total_size === bytes,
      detail: `index says ${index.metadata?.total_size}, tensors hold ${bytes} bytes`,
    });
    model.loadStateDict(ckpt, { source: ctx.file(String(ctx.spec.weights)) });
    const expected = loadSafetensors(path.resolve(ctx.dir, String(ctx.spec.expected)));
    checks.push(compareTensors('merged shards = expected (bitwise)', (k) => ckpt.get(k), ckpt.keys(), expected));
    checks.push(stateDictCheck('loaded model state_dict = expected (bitwise)', model, expected));
    return { tensors: {}, checks };
  } finally {
    ckpt.close();
    model.dispose();
  }
});

// ---------------------------------------------------------------------------------------------------------------
// real_checkpoint_keys

/** `prior/config.json` of warp-ai/wuerstchen-prior (its values, which differ from the class defaults). */
export const REAL_PRIOR_CONFIG: Partial<WuerstchenPriorConfig> = {
  c_in: 16,
  c: 1536,
  c_cond: 1280,
  c_r: 64,
  depth: 32,
  nhead: 24,
};

interface KeyEntry {
  name: string;
  shape: number[];
  dtype: string;
}

interface KeyFile {
  module: string;
  config?: Record<string, unknown>;
  num_tensors: number;
  num_float_values: number;
  keys: KeyEntry[];
}

const DTYPE_NAMES: Record<string, string> = { F32: 'float32', I64: 'int64' };

/** The full-size module of each component, with the configs the project uses for the real checkpoints. */
const BUILDERS: Record<string, { module: string; build: () => Module & { config: object } }> = {
  prior: { module: 'WuerstchenPrior', build: () => new WuerstchenPrior(REAL_PRIOR_CONFIG) },
  decoder: { module: 'WuerstchenDiffNeXt', build: () => new WuerstchenDiffNeXt() },
  vqgan: { module: 'PaellaVQModel', build: () => new PaellaVQModel() },
  prior_text_encoder: { module: 'CLIPTextModel', build: () => new CLIPTextModel(CLIP_TEXT_BIGG) },
  decoder_text_encoder: { module: 'CLIPTextModel', build: () => new CLIPTextModel(CLIP_TEXT_H) },
};

function keyChecks(component: string, model: Module & { config: object }, file: KeyFile): Check[] {
  const checks: Check[] = [];
  const params = model.namedParameters();
  const n = Math.max(params.length, file.keys.length);
  let firstName = -1;
  let firstShape = -1;
  let firstDtype = -1;
  for (let i = 0; i < n; i++) {
    const got = params[i];
    const want = file.keys[i];
    if (!got || !want) {
      if (firstName < 0) firstName = i;
      continue;
    }
    if (firstName < 0 && got[0] !== want.name) firstName = i;
    if (firstShape < 0 && fmtShape(got[1].torchShape) !== fmtShape(want.shape)) firstShape = i;
    if (firstDtype < 0 && DTYPE_NAMES[got[1].dtype] !== want.dtype) firstDtype = i;
  }
  const at = (i: number) => {
    const got = params[i];
    const want = file.keys[i];
    const g = got ? `${got[0]} ${fmtShape(got[1].torchShape)} ${DTYPE_NAMES[got[1].dtype]}` : '(none)';
    const w = want ? `${want.name} ${fmtShape(want.shape)} ${want.dtype}` : '(none)';
    return `at #${i}: model has ${g}, expected ${w}`;
  };
  checks.push({
    name: `${component}: key names in order`,
    ok: firstName < 0,
    detail: firstName < 0 ? '' : at(firstName),
  });
  checks.push({ name: `${component}: shapes`, ok: firstShape < 0, detail: firstShape < 0 ? '' : at(firstShape) });
  checks.push({ name: `${component}: dtypes`, ok: firstDtype < 0, detail: firstDtype < 0 ? '' : at(firstDtype) });
  checks.push({
    name: `${component}: num_tensors`,
    ok: params.length === file.num_tensors,
    detail: `model has ${params.length}, expected ${file.num_tensors}`,
  });
  const floats = params.filter(([, p]) => p.dtype === 'F32').reduce((a, [, p]) => a + p.size, 0);
  checks.push({
    name: `${component}: num_float_values`,
    ok: floats === file.num_float_values,
    detail: `model has ${floats}, expected ${file.num_float_values}`,
  });
  const allocated = params.filter(([, p]) => p.allocated).map(([k]) => k);
  checks.push({
    name: `${component}: no weights allocated`,
    ok: allocated.length === 0,
    detail: `${allocated.length} allocated: ${allocated.slice(0, 3).join(', ')}`,
  });
  if (file.config) {
    const cfg = model.config as Record<string, unknown>;
    const diffs = Object.entries(file.config).filter(([k, v]) => JSON.stringify(cfg[k]) !== JSON.stringify(v));
    checks.push({
      name: `${component}: config`,
      ok: diffs.length === 0,
      detail: diffs
        .map(([k, v]) => `${k}: model ${JSON.stringify(cfg[k])}, checkpoint ${JSON.stringify(v)}`)
        .join('; '),
    });
  }
  return checks;
}

registerRunner('key lists', (ctx) => {
  const components = ctx.spec.components as
    { component: string; module: string; file: string; num_tensors: number; num_float_values: number }[] | undefined;
  if (!Array.isArray(components) || components.length === 0)
    throw new Error(`${ctx.file('case.json')}: no "components" list`);
  const checks: Check[] = [];
  for (const comp of components) {
    const builder = BUILDERS[comp.component];
    if (!builder) {
      checks.push({
        name: comp.component,
        ok: false,
        detail: `no builder for component "${comp.component}" (module ${comp.module})`,
      });
      continue;
    }
    let model: (Module & { config: object }) | undefined;
    try {
      const file = JSON.parse(fs.readFileSync(ctx.file(comp.file), 'utf8')) as KeyFile;
      checks.push({
        name: `${comp.component}: module`,
        ok: builder.module === comp.module && file.module === comp.module,
        detail: `builder ${builder.module}, case ${comp.module}, file ${file.module}`,
      });
      checks.push({
        name: `${comp.component}: case.json counts`,
        ok: comp.num_tensors === file.num_tensors && comp.num_float_values === file.num_float_values,
        detail: `case.json ${comp.num_tensors}/${comp.num_float_values}, ${comp.file} ${file.num_tensors}/${file.num_float_values}`,
      });
      model = builder.build();
      checks.push(...keyChecks(comp.component, model, file));
    } catch (e) {
      checks.push({ name: comp.component, ok: false, detail: `error: ${(e as Error).message}` });
    } finally {
      model?.dispose();
    }
  }
  return { tensors: {}, checks };
});
