/**
 * Model configs checked before any module is built. Each model declares a schema: the type and range of every
 * field (upper bounds keep a hostile `depth: 1000000` from building a million blocks), the checks across fields,
 * and its parameter count as a formula of the config. The loader compares that count with the weights file's
 * header before building anything; the trainers get the same checks through the model constructors.
 */
import { Module, NotRegularFileError, TensorSource } from '@wuerstchen/core';
import { JsonTextError, parseStrictJson, quoteValue, readTextFile } from '@wuerstchen/core/internal';

/** A config field of the wrong type, out of range, or inconsistent with another; names the file and the field. */
export class ConfigError extends Error {
  /** the message without the file name. */
  readonly reason: string;

  constructor(
    readonly file: string,
    readonly field: string | undefined,
    detail: string,
  ) {
    const reason = `${field === undefined ? '' : `"${field}" `}${detail}`;
    super(`${file}: ${reason}`);
    this.name = 'ConfigError';
    this.reason = reason;
  }
}

/** A config whose parameter count differs from its weights file's; `explanations` are single-field changes that fix it. */
export class ParameterCountError extends ConfigError {
  constructor(
    file: string,
    detail: string,
    readonly explanations: string[],
  ) {
    super(file, undefined, detail);
    this.name = 'ParameterCountError';
  }
}

/** An integer, or a list of them (each entry in range). `counted`: the parameter count grows with it. */
interface IntSpec {
  kind: 'int' | 'int[]';
  min: number;
  max: number;
  counted?: boolean;
}

interface NumberSpec {
  kind: 'number';
  min: number;
  max: number;
  /** exclude the bound itself. */
  minOpen?: boolean;
  maxOpen?: boolean;
}

type FieldSpec =
  | IntSpec
  | NumberSpec
  | { kind: 'bool[]' }
  | { kind: 'string[]'; pattern: RegExp; maxLength: number }
  | { kind: 'enum'; values: readonly string[] };

export interface ConfigSchema<T extends object> {
  /** the class name, for messages. */
  name: string;
  defaults: T;
  fields: { [K in keyof T]: FieldSpec };
  /** most entries a list field may have. */
  maxListLength?: number;
  /** checks across fields; `fail(field, detail)` throws. */
  check?(cfg: T, fail: (field: string, detail: string) => never): void;
  /** number of values the model's parameters and buffers hold, without building it. */
  count(cfg: T): number;
}

/**
 * Reads a `config.json`: a regular file holding one JSON object without duplicate keys. Errors are ConfigErrors
 * naming the file, and never quote its content.
 */
export function readConfigJson(file: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = parseStrictJson(readTextFile(file));
  } catch (e: unknown) {
    if (e instanceof NotRegularFileError) throw new ConfigError(file, undefined, e.detail);
    if (e instanceof JsonTextError) throw new ConfigError(file, undefined, `is not valid JSON (${e.message})`);
    throw e;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new ConfigError(file, undefined, 'is not a JSON object');
  return value as Record<string, unknown>;
}

/** Values held by a checkpoint's tensors, from the headers alone, skipping `ignore`d keys. */
export function storedParameterCount(ckpt: TensorSource, ignore?: (key: string) => boolean): number {
  let total = 0;
  for (const key of ckpt.keys()) {
    if (ignore?.(key)) continue;
    const shape = ckpt.info ? ckpt.info(key).shape : ckpt.get(key).shape;
    total += shape.reduce((a, b) => a * b, 1);
  }
  return total;
}

/** Whether `build()` gives a module with exactly the keys and shapes of `weights`' headers (false for an invalid config). */
export function moduleFits(build: () => Module, weights: TensorSource, ignore?: (key: string) => boolean): boolean {
  let module: Module;
  try {
    module = build();
  } catch (e) {
    if (e instanceof ConfigError) return false;
    throw e;
  }
  const { missing, unexpected, mismatched } = module.compareStateDict(weights, ignore);
  return !missing.length && !unexpected.length && !mismatched.length;
}

/** Linear(i → o) with bias. */
export const linearCount = (i: number, o: number): number => i * o + o;
/** Conv2d(i → o, k×k) with bias; `groups` splits the input channels. */
export const convCount = (i: number, o: number, k: number, groups = 1, bias = true): number =>
  o * (i / groups) * k * k + (bias ? o : 0);

/** Validates `json`'s known fields and merges them over the defaults; unknown fields are ignored, null means default. */
export function parseConfig<T extends object>(schema: ConfigSchema<T>, json: Record<string, unknown>, file: string): T {
  const out: Record<string, unknown> = { ...(schema.defaults as Record<string, unknown>) };
  const fail = (field: string, detail: string): never => {
    throw new ConfigError(file, field, detail);
  };
  for (const [field, spec] of Object.entries(schema.fields) as [string, FieldSpec][]) {
    const value = json[field];
    if (value === undefined || value === null) continue;
    const problem = checkField(spec, value, schema.maxListLength ?? 16);
    if (problem !== undefined) fail(field, `${problem}, got ${quoteValue(value)}`);
    out[field] = Array.isArray(value) ? [...value] : value;
  }
  const cfg = out as T;
  schema.check?.(cfg, fail);
  return cfg;
}

function inRange(spec: IntSpec | NumberSpec, v: unknown): boolean {
  if (typeof v !== 'number' || !Number.isFinite(v)) return false;
  if (spec.kind !== 'number') return Number.isInteger(v) && v >= spec.min && v <= spec.max;
  return (spec.minOpen ? v > spec.min : v >= spec.min) && (spec.maxOpen ? v < spec.max : v <= spec.max);
}

function rangeText(spec: IntSpec | NumberSpec): string {
  if (spec.kind === 'number')
    return `a number in ${spec.minOpen ? '(' : '['}${spec.min}, ${spec.max}${spec.maxOpen ? ')' : ']'}`;
  return `an integer from ${spec.min} to ${spec.max}`;
}

/** Why `value` does not fit `spec`, or undefined. */
function checkField(spec: FieldSpec, value: unknown, maxListLength: number): string | undefined {
  switch (spec.kind) {
    case 'int':
    case 'number':
      return inRange(spec, value) ? undefined : `must be ${rangeText(spec)}`;
    case 'enum':
      return spec.values.includes(value as string)
        ? undefined
        : `must be one of ${spec.values.map((v) => JSON.stringify(v)).join(', ')}`;
    default: {
      const ok =
        Array.isArray(value) &&
        value.length >= 1 &&
        value.length <= maxListLength &&
        value.every((v) => listEntryFits(spec, v));
      return ok ? undefined : `must be a list of 1 to ${maxListLength} ${listEntryText(spec)}`;
    }
  }
}

type ListSpec = IntSpec | { kind: 'bool[]' } | { kind: 'string[]'; pattern: RegExp; maxLength: number };

function listEntryFits(spec: ListSpec, v: unknown): boolean {
  if (spec.kind === 'bool[]') return typeof v === 'boolean';
  if (spec.kind === 'string[]') return typeof v === 'string' && v.length <= spec.maxLength && spec.pattern.test(v);
  return inRange(spec, v);
}

function listEntryText(spec: ListSpec): string {
  if (spec.kind === 'bool[]') return 'booleans';
  if (spec.kind === 'string[]')
    return `strings matching ${spec.pattern.source}, at most ${spec.maxLength} characters long`;
  return `integers from ${spec.min} to ${spec.max}`;
}

/**
 * Checks that the config describes exactly `found` parameter values (the sum over the weights file's tensors). On a
 * mismatch the error names the single-field changes that make the config fit the weights; `fits` confirms each
 * candidate against the weights' shapes, since a count alone can agree by coincidence.
 */
export function checkParameterCount<T extends object>(
  schema: ConfigSchema<T>,
  cfg: T,
  configFile: string,
  found: number,
  weightsFile: string,
  fits: (candidate: T) => boolean,
): void {
  const expected = schema.count(cfg);
  if (expected === found) return;
  const explanations = explainCount(schema, cfg, found, fits);
  const hint = explanations.length ? `; the weights fit ${explanations.join(', or ')}` : '';
  throw new ParameterCountError(
    configFile,
    `describes a ${schema.name} with ${expected} parameter values, but ${weightsFile} holds ${found}${hint}`,
    explanations,
  );
}

/**
 * Single fields (or list entries) that, changed alone, give the count `target` and pass `fits`. The count grows
 * with every `counted` field, so each is a binary search over its range: a few dozen formula evaluations, and one
 * `fits` call per field whose count matches.
 */
function explainCount<T extends object>(
  schema: ConfigSchema<T>,
  cfg: T,
  target: number,
  fits: (candidate: T) => boolean,
): string[] {
  const out: string[] = [];
  const record = cfg as Record<string, unknown>;
  const tryField = (label: string, current: number, spec: IntSpec, withValue: (v: number) => T): void => {
    let lo = spec.min;
    let hi = spec.max;
    while (lo < hi) {
      const mid = Math.floor((lo + hi) / 2);
      if (schema.count(withValue(mid)) < target) lo = mid + 1;
      else hi = mid;
    }
    if (lo !== current && schema.count(withValue(lo)) === target && fits(withValue(lo))) {
      out.push(`${label} = ${lo} (not ${current})`);
    }
  };
  for (const [field, spec] of Object.entries(schema.fields) as [string, FieldSpec][]) {
    if ((spec.kind !== 'int' && spec.kind !== 'int[]') || !spec.counted) continue;
    const value = record[field];
    if (spec.kind === 'int') {
      tryField(`"${field}"`, value as number, spec, (v) => ({ ...cfg, [field]: v }));
    } else {
      (value as number[]).forEach((entry, i) => {
        tryField(`"${field}"[${i}]`, entry, spec, (v) => ({
          ...cfg,
          [field]: (value as number[]).map((x, j) => (j === i ? v : x)),
        }));
      });
    }
  }
  return out;
}
