/**
 * The reference-case harness: runs every case of a golden folder (`index.json`) through the
 * project's own modules and compares each output and intermediate with the case's tolerance
 * (format: shared/golden/README.md).
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { HostTensor, loadSafetensors } from '@wuerstchen/core';

export interface TensorSpec {
  name: string;
  shape: number[];
  dtype: string;
  meaning?: string;
}

/** A parsed `case.json` (fields beyond these are read by the runners that need them). */
export interface CaseSpec {
  case: string;
  module: string;
  config?: Record<string, unknown>;
  inputs?: TensorSpec[];
  outputs?: TensorSpec[];
  intermediates?: TensorSpec[];
  weights?: string | null;
  tolerance: number | null;
  tolerance_per_output?: Record<string, number>;
  tolerance_per_batch_row?: number[];
  [extra: string]: unknown;
}

/** What a runner sees of a case. */
export class CaseContext {
  private ioCache: Map<string, HostTensor> | null = null;
  constructor(
    readonly dir: string,
    readonly spec: CaseSpec,
    readonly goldenRoot: string,
  ) {}

  get name(): string {
    return this.spec.case;
  }

  file(name: string): string {
    return path.join(this.dir, name);
  }

  /** All tensors of io.safetensors (inputs, outputs, intermediates) in PyTorch layout. */
  io(): Map<string, HostTensor> {
    if (!this.ioCache) this.ioCache = loadSafetensors(this.file('io.safetensors'));
    return this.ioCache;
  }

  /** An input (or any io tensor) as a tfjs tensor in its stored (NCHW) layout. */
  tensor(name: string): tf.Tensor {
    const t = this.io().get(name);
    if (!t) throw new Error(`${this.file('io.safetensors')}: no tensor "${name}"`);
    return toTf(t);
  }

  /** The module's weights (`weights.safetensors`) as a key → tensor map. */
  weights(): Map<string, HostTensor> {
    if (!this.spec.weights) throw new Error(`case ${this.name} has no weights`);
    return loadSafetensors(this.file(this.spec.weights));
  }
}

export function toTf(t: HostTensor): tf.Tensor {
  const d = t.data;
  if (d instanceof Float32Array) return tf.tensor(d, t.shape, 'float32');
  if (d instanceof BigInt64Array)
    return tf.tensor(
      Int32Array.from(d, (v) => Number(v)),
      t.shape,
      'int32',
    );
  return tf.tensor(Int32Array.from(d as ArrayLike<number>), t.shape, 'int32');
}

/** A non-numeric check (key names, shapes) reported by a runner. */
export interface Check {
  name: string;
  ok: boolean;
  detail?: string;
}

/** Tensors by output / intermediate name in the case's own (PyTorch) layout, plus extra checks. */
export interface RunResult {
  tensors: Record<string, tf.Tensor>;
  checks?: Check[];
}

export type Runner = (ctx: CaseContext) => RunResult | Promise<RunResult>;

const runners = new Map<string, Runner>();

/** Register the runner for every case whose `module` field equals `module`. */
export function registerRunner(module: string, run: Runner): void {
  runners.set(module, run);
}

const caseRunners = new Map<string, Runner>();

/** Register the runner for one case by name; it takes precedence over the runner of the case's module. */
export function registerCaseRunner(caseName: string, run: Runner): void {
  caseRunners.set(caseName, run);
}

export interface CaseReport {
  name: string;
  passed: boolean;
  maxAbsErr: number;
  tolerance: number | null;
  /** failure details, one per problem. */
  problems: string[];
}

function maxAbsDiff(a: Float32Array | Int32Array | Uint8Array, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

function rowMaxAbsDiff(a: Float32Array | Int32Array | Uint8Array, b: ArrayLike<number>, rows: number): number[] {
  const per = a.length / rows;
  return Array.from({ length: rows }, (_, r) =>
    maxAbsDiff(a.subarray(r * per, (r + 1) * per), Array.prototype.slice.call(b, r * per, (r + 1) * per)),
  );
}

function compare(ctx: CaseContext, result: RunResult): CaseReport {
  const spec = ctx.spec;
  const problems: string[] = [];
  let worst = 0;
  const expected = [...(spec.outputs ?? []), ...(spec.intermediates ?? [])];
  for (const e of expected) {
    const got = result.tensors[e.name];
    const ref = ctx.io().get(e.name);
    if (!ref) {
      problems.push(`${e.name}: missing from io.safetensors`);
      continue;
    }
    if (!got) {
      problems.push(`${e.name}: not produced`);
      continue;
    }
    if (got.shape.join(',') !== ref.shape.join(',')) {
      problems.push(`${e.name}: shape [${got.shape}] but expected [${ref.shape}]`);
      continue;
    }
    const isInt = !(ref.data instanceof Float32Array);
    const tol = isInt ? 0 : (spec.tolerance_per_output?.[e.name] ?? spec.tolerance ?? 0);
    const err = maxAbsDiff(got.dataSync() as Float32Array, ref.data as ArrayLike<number>);
    if (!isInt) worst = Math.max(worst, err);
    if (!(err <= tol)) problems.push(`${e.name}: max abs err ${err.toExponential(3)} > ${tol}`);
    if (e.name === 'output' && spec.tolerance_per_batch_row) {
      const rows = rowMaxAbsDiff(
        got.dataSync() as Float32Array,
        ref.data as ArrayLike<number>,
        spec.tolerance_per_batch_row.length,
      );
      rows.forEach((r, i) => {
        const t = spec.tolerance_per_batch_row![i];
        if (!(r <= t)) problems.push(`output[${i}]: max abs err ${r.toExponential(3)} > per-row ${t}`);
      });
    }
  }
  for (const c of result.checks ?? []) if (!c.ok) problems.push(`${c.name}: ${c.detail ?? 'failed'}`);
  if (!expected.length && !(result.checks ?? []).length) problems.push('runner produced nothing to check');
  for (const t of Object.values(result.tensors)) t.dispose();
  return {
    name: spec.case,
    passed: problems.length === 0,
    maxAbsErr: worst,
    tolerance: spec.tolerance ?? null,
    problems,
  };
}

export interface IndexEntry {
  case: string;
  module: string;
  kind: 'case' | 'data';
  tolerance: number | null;
}

export function readIndex(folder: string): IndexEntry[] {
  const file = path.join(folder, 'index.json');
  if (!fs.existsSync(file)) throw new Error(`${file} not found: expected a golden folder with index.json`);
  const parsed = JSON.parse(fs.readFileSync(file, 'utf8')) as { cases: IndexEntry[] };
  return parsed.cases.filter((c) => c.kind === 'case');
}

/** Run one case; a missing runner or a thrown error is a failed case that says so. */
export async function runCase(folder: string, name: string): Promise<CaseReport> {
  const dir = path.join(folder, name);
  const spec = JSON.parse(fs.readFileSync(path.join(dir, 'case.json'), 'utf8')) as CaseSpec;
  const runner = caseRunners.get(spec.case ?? name) ?? runners.get(spec.module);
  const base = { name, passed: false, maxAbsErr: NaN, tolerance: spec.tolerance ?? null };
  if (!runner) return { ...base, problems: [`module ${spec.module} is not implemented by the project yet`] };
  const ctx = new CaseContext(dir, spec, folder);
  try {
    const result = await runner(ctx);
    return compare(ctx, result);
  } catch (e) {
    return { ...base, problems: [`error: ${(e as Error).message}`] };
  }
}

export function formatReport(r: CaseReport): string {
  const err = Number.isNaN(r.maxAbsErr) ? '-' : r.maxAbsErr.toExponential(3);
  const tol = r.tolerance === null ? 'keys' : String(r.tolerance);
  const head = `${r.name.padEnd(36)} max_abs_err=${err.padEnd(10)} tol=${tol.padEnd(8)} ${r.passed ? 'PASS' : 'FAIL'}`;
  return r.passed ? head : `${head}\n    ${r.problems.join('\n    ')}`;
}

/** Run every case in `folder` (optionally those whose name contains `filter`). */
export async function runGolden(
  folder: string,
  opts: { filter?: string; log?: (line: string) => void } = {},
): Promise<CaseReport[]> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const reports: CaseReport[] = [];
  for (const entry of readIndex(folder)) {
    if (opts.filter && !entry.case.includes(opts.filter)) continue;
    const before = tf.memory().numTensors;
    const r = await runCase(folder, entry.case);
    const leaked = tf.memory().numTensors - before;
    if (leaked > 0 && r.passed) {
      r.passed = false;
      r.problems.push(`leaked ${leaked} tensors`);
    }
    reports.push(r);
    log(formatReport(r));
  }
  const passed = reports.filter((r) => r.passed).length;
  log(`${passed} passed, ${reports.length - passed} failed`);
  return reports;
}
