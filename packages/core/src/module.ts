/**
 * Module tree addressed by PyTorch state-dict keys (`blocks.3.depthwise.weight`).
 *
 * Parameters live in memory in the layout the tfjs kernels want (NHWC activations, Linear
 * `[in, out]`, Conv2d `[kh, kw, in, out]`); on disk and in `stateDict()` they are in PyTorch
 * layout. The conversion happens once, in `Parameter.load` / `Parameter.toHost`.
 * Variables are allocated lazily, so a full-size configuration can be built and inspected
 * (keys, shapes) without allocating its weights.
 */
import * as tf from '@tensorflow/tfjs';
import { HostTensor, numel } from './host_tensor';

/** How a PyTorch tensor maps to its tfjs counterpart. */
export type Layout =
  /** same layout in both (biases, norms, embeddings, GRN gamma/beta). */
  | 'identity'
  /** Linear weight: torch [out, in] ↔ tfjs [in, out]. */
  | 'linear'
  /** Conv2d weight: torch [out, in, kh, kw] ↔ tfjs [kh, kw, in, out]. */
  | 'conv'
  /** ConvTranspose2d weight: torch [in, out, kh, kw] ↔ tfjs conv2dTranspose [kh, kw, out, in]. */
  | 'conv_transpose'
  /** depthwise / grouped-as-depthwise weight: torch [C, m, kh, kw] ↔ tfjs [kh, kw, C*m, 1]. */
  | 'depthwise';

const TO_TF_PERM: Record<Layout, number[] | null> = {
  identity: null,
  linear: [1, 0],
  conv: [2, 3, 1, 0],
  conv_transpose: [2, 3, 1, 0],
  depthwise: [2, 3, 0, 1],
};

/** Initialiser for a parameter, in tfjs layout. */
export type Init = (tfShape: number[]) => tf.Tensor;

export const init = {
  zeros: (): Init => (s) => tf.zeros(s),
  ones: (): Init => (s) => tf.ones(s),
  constant:
    (v: number): Init =>
    (s) =>
      tf.fill(s, v),
  normal:
    (std: number, seed?: number): Init =>
    (s) =>
      tf.randomNormal(s, 0, std, 'float32', seed),
  uniform:
    (bound: number, seed?: number): Init =>
    (s) =>
      tf.randomUniform(s, -bound, bound, 'float32', seed),
};

export interface ParameterOptions {
  layout?: Layout;
  init?: Init;
  /** false for buffers (BatchNorm running statistics). */
  trainable?: boolean;
  /** on-disk dtype; `I64` buffers (num_batches_tracked) are held as int32 in memory. */
  dtype?: 'F32' | 'I64';
}

export class Parameter {
  readonly torchShape: number[];
  readonly layout: Layout;
  readonly trainable: boolean;
  readonly dtype: 'F32' | 'I64';
  private readonly initFn: Init;
  private variable: tf.Variable | null = null;

  constructor(torchShape: number[], opts: ParameterOptions = {}) {
    this.torchShape = torchShape;
    this.layout = opts.layout ?? 'identity';
    this.trainable = opts.trainable ?? true;
    this.dtype = opts.dtype ?? 'F32';
    this.initFn = opts.init ?? init.zeros();
  }

  /** Shape of the in-memory (tfjs) tensor. */
  get shape(): number[] {
    const perm = TO_TF_PERM[this.layout];
    return perm ? perm.map((p) => this.torchShape[p]) : this.torchShape.slice();
  }

  get size(): number {
    return numel(this.torchShape);
  }

  get allocated(): boolean {
    return this.variable !== null;
  }

  /** The tfjs variable; initialised on first use. */
  get value(): tf.Variable {
    if (!this.variable) {
      const initial = tf.tidy(() => {
        const t = this.initFn(this.shape);
        return this.dtype === 'I64' ? t.toInt() : t;
      });
      this.variable = tf.variable(initial, this.trainable);
      initial.dispose();
    }
    return this.variable;
  }

  /** Replace the value with a tensor already in tfjs layout (takes ownership of nothing). */
  assign(t: tf.Tensor): void {
    if (!this.variable) {
      this.variable = tf.variable(t, this.trainable);
    } else {
      this.variable.assign(t);
    }
  }

  /** Load from a PyTorch-layout host tensor (shape must already be checked). */
  load(host: HostTensor): void {
    const t = tf.tidy(() => {
      const perm = TO_TF_PERM[this.layout];
      if (this.dtype === 'I64') {
        const src = host.data;
        const ints =
          src instanceof BigInt64Array
            ? Int32Array.from(src, (v) => Number(v))
            : Int32Array.from(src as ArrayLike<number>);
        return tf.tensor(ints, this.torchShape, 'int32');
      }
      const data = host.data instanceof Float32Array ? host.data : Float32Array.from(host.data as ArrayLike<number>);
      const torch = tf.tensor(data, this.torchShape, 'float32');
      return perm ? tf.transpose(torch, perm) : torch;
    });
    this.assign(t);
    t.dispose();
  }

  /** The value in PyTorch layout, in host memory. */
  toHost(): HostTensor {
    if (this.dtype === 'I64') {
      const v = this.value.dataSync();
      return { dtype: 'I64', shape: this.torchShape.slice(), data: BigInt64Array.from(v, (x) => BigInt(x)) };
    }
    const perm = TO_TF_PERM[this.layout];
    const data = tf.tidy(() => {
      if (!perm) return this.value.dataSync() as Float32Array;
      const inverse = perm.map((_, i) => perm.indexOf(i));
      return tf.transpose(this.value, inverse).dataSync() as Float32Array;
    });
    return { dtype: 'F32', shape: this.torchShape.slice(), data: Float32Array.from(data) };
  }

  dispose(): void {
    this.variable?.dispose();
    this.variable = null;
  }
}

/** Anything that can hand out tensors by key: a Map, a safetensors file, a sharded checkpoint. */
export interface TensorSource {
  keys(): string[];
  get(key: string): HostTensor;
  /** shape without reading the data, when the source can. */
  info?(key: string): { shape: number[] };
}

/** How checkStateDict compares and what its error says. */
export interface StateDictCheck {
  /** Reject missing and unexpected keys (default true). */
  strict?: boolean;
  /** Keys in the source to ignore silently (e.g. `text_model.embeddings.position_ids`). */
  ignore?: (key: string) => boolean;
  /** Name of the file (or folder) for error messages. */
  source?: string;
  /** What the module was built from (its config file), named in the error. */
  against?: string;
  /** A first line for the error (e.g. a parameter-count comparison). */
  preface?: string;
}

export interface LoadOptions extends StateDictCheck {
  /** Accept NaN and ±Infinity in float tensors (default false: they are a NonFiniteWeightError naming the tensor). */
  allowNonFinite?: boolean;
  /**
   * What checkStateDict returned for this source's headers, when the caller checked them already (the loader does
   * when it prepares a model): the keys and shapes are not compared again, only each tensor read against its
   * parameter, so a file replaced since the check is still a StateDictError.
   */
  checkedKeys?: readonly string[];
}

export interface ShapeMismatch {
  key: string;
  expected: number[];
  found: number[];
}

export interface StateDictComparison {
  available: string[];
  missing: string[];
  unexpected: string[];
  mismatched: ShapeMismatch[];
}

export class StateDictError extends Error {
  constructor(
    message: string,
    readonly missing: string[],
    readonly unexpected: string[],
    readonly mismatched: ShapeMismatch[],
  ) {
    super(message);
    this.name = 'StateDictError';
  }
}

/** A float tensor holding NaN or ±Infinity, found while loading. */
export class NonFiniteWeightError extends Error {
  constructor(
    readonly key: string,
    /** how many values are not finite, and the first of them. */
    readonly count: number,
    readonly first: number,
    source?: string,
  ) {
    super(
      `${source ? `${source}: ` : ''}tensor ${JSON.stringify(key)} holds ${count} non-finite value${count === 1 ? '' : 's'} ` +
        `(first: ${first}); the weights are corrupt or diverged (pass allowNonFinite / --allow-nonfinite to load them anyway)`,
    );
    this.name = 'NonFiniteWeightError';
  }
}

/** Number of NaN / ±Infinity values of a float tensor and the first one; one pass, no copies. */
export function countNonFinite(data: HostTensor['data']): { count: number; first: number } {
  // By tag, not instanceof: arrays may come from another realm (jest's sandbox, Node Buffers).
  const tag = Object.prototype.toString.call(data);
  if (tag !== '[object Float32Array]' && tag !== '[object Float64Array]') return { count: 0, first: 0 };
  const floats = data as Float32Array | Float64Array;
  let count = 0;
  let first = 0;
  for (let i = 0; i < floats.length; i++) {
    const v = floats[i];
    // v − v is 0 for every finite v and NaN for NaN and ±Infinity.
    if (v - v !== 0) {
      if (count === 0) first = v;
      count++;
    }
  }
  return { count, first };
}

function sourceOf(tensors: TensorSource | Map<string, HostTensor>): TensorSource {
  if (tensors instanceof Map) {
    return {
      keys: () => [...tensors.keys()],
      get: (k) => {
        const t = tensors.get(k);
        if (!t) throw new Error(`no tensor "${k}"`);
        return t;
      },
      info: (k) => ({ shape: tensors.get(k)!.shape }),
    };
  }
  return tensors;
}

const fmt = (s: number[]) => `[${s.join(', ')}]`;
const sameShape = (a: number[], b: number[]) => a.length === b.length && a.every((d, i) => d === b[i]);

/** At most this many keys of each kind are listed in a StateDictError's message (the error holds them all). */
const LISTED = 8;
const list = (keys: string[]) =>
  keys.length > LISTED ? `${keys.slice(0, LISTED).join(', ')}, ... (${keys.length - LISTED} more)` : keys.join(', ');

export class Module {
  /** true while training: Dropout active, BatchNorm uses batch statistics. */
  training = false;
  private readonly ownParams = new Map<string, Parameter>();
  private readonly children = new Map<string, Module | null>();

  /** Declare a parameter under `name` with its PyTorch shape. */
  protected param(name: string, torchShape: number[], opts: ParameterOptions = {}): Parameter {
    const p = new Parameter(torchShape, opts);
    this.ownParams.set(name, p);
    return p;
  }

  /** Declare a child module under `name` (null keeps the slot without keys, like a None entry). */
  protected child<T extends Module | null>(name: string, m: T): T {
    this.children.set(name, m);
    return m;
  }

  namedChildren(): [string, Module | null][] {
    return [...this.children.entries()];
  }

  /** This module (key '') and every descendant with its dotted path (`blocks.2.attention.to_q`). */
  namedModules(prefix = ''): [string, Module][] {
    const out: [string, Module][] = [[prefix, this]];
    for (const [n, m] of this.children) if (m) out.push(...m.namedModules(prefix ? `${prefix}.${n}` : n));
    return out;
  }

  /** Every parameter and buffer with its full state-dict key. */
  namedParameters(prefix = ''): [string, Parameter][] {
    const out: [string, Parameter][] = [];
    for (const [n, p] of this.ownParams) out.push([prefix + n, p]);
    for (const [n, m] of this.children) if (m) out.push(...m.namedParameters(`${prefix}${n}.`));
    return out;
  }

  /** Trainable parameters (what an optimizer updates). */
  trainableParameters(): [string, Parameter][] {
    return this.namedParameters().filter(([, p]) => p.trainable);
  }

  /** All tensors in PyTorch layout with their diffusers/transformers keys. */
  stateDict(): Map<string, HostTensor> {
    return new Map(this.namedParameters().map(([k, p]) => [k, p.toHost()]));
  }

  /**
   * Load PyTorch-layout tensors. checkStateDict runs first (unless `opts.checkedKeys` holds its result already), so
   * every missing key, unexpected key and shape mismatch is reported together before any data is read; a tensor read
   * with another shape than the one checked is a StateDictError too.
   */
  loadStateDict(tensors: TensorSource | Map<string, HostTensor>, opts: LoadOptions = {}): void {
    const src = sourceOf(tensors);
    const keys = opts.checkedKeys ?? this.checkStateDict(src, opts);
    const own = new Map(this.namedParameters());
    for (const k of keys) {
      const p = own.get(k);
      if (!p) continue;
      const t = src.get(k);
      if (!sameShape(t.shape, p.torchShape)) {
        const mismatch = { key: k, expected: p.torchShape, found: t.shape };
        this.throwOnProblems({ missing: [], unexpected: [], mismatched: [mismatch] }, opts);
      }
      if (!opts.allowNonFinite) {
        const { count, first } = countNonFinite(t.data);
        if (count > 0) throw new NonFiniteWeightError(k, count, first, opts.source);
      }
      p.load(t);
    }
  }

  /**
   * Checks that a source's keys and shapes (from its headers when it can give them) are this module's: otherwise
   * one StateDictError lists every missing key, unexpected key and shape mismatch. Returns the keys to load.
   */
  checkStateDict(tensors: TensorSource | Map<string, HostTensor>, check: StateDictCheck = {}): string[] {
    const comparison = this.compareStateDict(tensors, check.ignore);
    this.throwOnProblems(comparison, check);
    return comparison.available;
  }

  /** Throws checkStateDict's StateDictError if there is a problem (missing and unexpected keys count when strict). */
  private throwOnProblems(
    { missing, unexpected, mismatched }: Omit<StateDictComparison, 'available'>,
    check: StateDictCheck,
  ): void {
    const strict = check.strict ?? true;
    const problems: string[] = [];
    if (strict && missing.length) problems.push(`missing keys (${missing.length}): ${list(missing)}`);
    if (strict && unexpected.length) problems.push(`unexpected keys (${unexpected.length}): ${list(unexpected)}`);
    const needs = check.against === undefined ? 'the model needs' : 'the config needs';
    for (const m of mismatched.slice(0, LISTED))
      problems.push(`${m.key}: shape ${fmt(m.found)}, but ${needs} ${fmt(m.expected)}`);
    if (mismatched.length > LISTED) problems.push(`... ${mismatched.length - LISTED} more shape mismatches`);
    if (!problems.length) return;
    if (check.preface !== undefined) problems.unshift(check.preface);
    const cls = this.constructor.name;
    const tensorCount = this.namedParameters().length;
    const what =
      check.against === undefined
        ? `a ${cls} with ${tensorCount} tensors`
        : `${check.against} (a ${cls} with ${tensorCount} tensors)`;
    throw new StateDictError(
      `${check.source === undefined ? '' : `${check.source}: `}the weights do not match ${what}:\n  ${problems.join('\n  ')}`,
      missing,
      unexpected,
      mismatched,
    );
  }

  /**
   * Compare this module's keys and PyTorch shapes with a source's (shapes from its headers when it
   * can give them, so no data is read). `available` is the source's keys minus the ignored ones.
   */
  compareStateDict(
    tensors: TensorSource | Map<string, HostTensor>,
    ignore?: (key: string) => boolean,
  ): StateDictComparison {
    const src = sourceOf(tensors);
    const own = new Map(this.namedParameters());
    const available = src.keys().filter((k) => !ignore?.(k));
    const availableSet = new Set(available);
    const missing = [...own.keys()].filter((k) => !availableSet.has(k));
    const unexpected = available.filter((k) => !own.has(k));
    const mismatched: ShapeMismatch[] = [];
    for (const k of available) {
      const p = own.get(k);
      if (!p) continue;
      const shape = src.info ? src.info(k).shape : src.get(k).shape;
      if (!sameShape(shape, p.torchShape)) mismatched.push({ key: k, expected: p.torchShape, found: shape });
    }
    return { available, missing, unexpected, mismatched };
  }

  /** Switch Dropout / BatchNorm behaviour for this module and all children. */
  train(mode = true): this {
    this.training = mode;
    for (const m of this.children.values()) m?.train(mode);
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /** Number of parameters (trainable and buffers), without allocating them. */
  numParameters(): number {
    return this.namedParameters().reduce((a, [, p]) => a + p.size, 0);
  }

  /** Free every variable of the tree. */
  dispose(): void {
    for (const [, p] of this.namedParameters()) p.dispose();
  }
}

/** A list of child modules keyed `0, 1, 2, …` (PyTorch `nn.ModuleList`); null entries keep their index without keys. */
export class ModuleList<T extends Module | null = Module> extends Module {
  readonly items: T[];
  constructor(items: T[]) {
    super();
    this.items = items;
    items.forEach((m, i) => this.child(String(i), m));
  }
  get length(): number {
    return this.items.length;
  }
  at(i: number): T {
    return this.items[i];
  }
}

/** A module with a single-tensor forward, so it can sit in a Sequential. */
export interface Callable {
  forward(x: tf.Tensor): tf.Tensor;
}

export type Layer = Module & Callable;

/**
 * Applies `steps` in order, disposing each intermediate once the next step has consumed it (never `x`, never the
 * result), as torch frees a tensor when its last reference goes. Inside one tf.tidy everything would otherwise
 * live until the scope ends, which at 1024² is gigabytes. Safe under a gradient tape: tfjs keeps its own
 * references to what the backward pass needs.
 */
export function pipe(x: tf.Tensor, ...steps: ((h: tf.Tensor) => tf.Tensor)[]): tf.Tensor {
  let h = x;
  for (const step of steps) {
    const next = step(h);
    if (h !== x && h !== next) h.dispose();
    h = next;
  }
  return h;
}

/** PyTorch `nn.Sequential`: children keyed by index, applied in order (intermediates freed as in {@link pipe}). */
export class Sequential extends ModuleList<Layer> implements Callable {
  forward(x: tf.Tensor): tf.Tensor {
    return pipe(x, ...this.items.map((m) => (h: tf.Tensor) => m.forward(h)));
  }
}
