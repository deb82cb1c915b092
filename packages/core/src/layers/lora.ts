/**
 * LoRA (Hu et al. 2021) in peft's form: a frozen Linear (or 1×1 Conv2d) `y = W x + b` gets
 * `Δy = scale · B(A x)` with A `[r, in]`, B `[out, r]`, scale = multiplier · alpha / r. A starts
 * kaiming-uniform and B at zero, so a new adapter leaves the model unchanged.
 *
 * Adapters attach to an existing module tree through the target layer's `deltas` list, so the
 * base model keeps its classes, fields and state-dict keys. An adapter's own keys are peft's
 * (`get_peft_model_state_dict`): `<module path>.lora_A.weight`, `<module path>.lora_B.weight`.
 */
import * as tf from '@tensorflow/tfjs';
import { HostTensor } from '../host_tensor';
import { Module, Parameter } from '../module';
import { Conv2d } from './conv';
import { Linear, OutputDelta } from './linear';

export class LoraError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LoraError';
  }
}

/** The attention projections of diffusers' `Attention`: the targets of diffusers' Würstchen prior LoRA example. */
export const DEFAULT_LORA_TARGETS: readonly string[] = ['to_q', 'to_k', 'to_v', 'to_out.0'];

/** A layer LoRA can adapt. */
export type LoraTarget = Linear | Conv2d;

/** peft's rule for a list of target names: the module path equals the name or ends in `.name`. */
export function matchesTarget(path: string, target: string): boolean {
  return path === target || path.endsWith(`.${target}`);
}

function pointwise(c: Conv2d): boolean {
  return c.kernelSize === 1 && c.stride === 1 && c.padding === 0 && c.groups === 1;
}

/** Why `m` cannot carry an adapter, or null when it can. */
function unsupported(m: Module): string | null {
  if (m instanceof Linear) return null;
  if (m instanceof Conv2d)
    return pointwise(m)
      ? null
      : `Conv2d ${m.kernelSize}×${m.kernelSize} (groups ${m.groups}, stride ${m.stride}): only 1×1 dense convs`;
  return `${m.constructor.name}: LoRA adapts Linear and 1×1 Conv2d layers`;
}

const widths = (m: LoraTarget): [number, number] =>
  m instanceof Linear ? [m.inFeatures, m.outFeatures] : [m.inChannels, m.outChannels];

/** Adapters merged into each layer's weight, in merge order (unmerging must go in reverse). */
const mergedOn = new WeakMap<LoraTarget, LoraAdapter[]>();

export class LoraAdapter extends Module implements OutputDelta {
  readonly A: Linear | Conv2d;
  readonly B: Linear | Conv2d;
  private multiplierValue = 1;
  private target: LoraTarget | null = null;
  /** the target's weight before merging (tfjs layout), so unmerging restores it bit for bit. */
  private saved: Float32Array | null = null;
  /** where the adapter sat in the target's deltas, so unmerging keeps the order of the sum. */
  private savedIndex = 0;

  /**
   * `conv` makes A and B 1×1 convs (peft's `Conv2d` LoRA: keys hold `[r, in, 1, 1]`, `[out, r, 1, 1]`).
   * `seed` makes A's initialisation reproducible.
   */
  constructor(
    readonly inFeatures: number,
    readonly outFeatures: number,
    readonly rank: number,
    readonly alpha: number,
    readonly conv = false,
    seed?: number,
  ) {
    super();
    if (!Number.isInteger(rank) || rank < 1) throw new LoraError(`LoRA rank must be a positive integer, got ${rank}`);
    if (!Number.isFinite(alpha) || alpha <= 0)
      throw new LoraError(`LoRA alpha must be a positive number, got ${alpha}`);
    this.A = this.child(
      'lora_A',
      conv ? new Conv2d(inFeatures, rank, 1, { bias: false }) : new Linear(inFeatures, rank, false),
    );
    this.B = this.child(
      'lora_B',
      conv ? new Conv2d(rank, outFeatures, 1, { bias: false }) : new Linear(rank, outFeatures, false),
    );
    const bound = 1 / Math.sqrt(inFeatures); // kaiming_uniform_(a=√5), peft's init of lora_A
    const a = tf.randomUniform(this.A.weight.shape, -bound, bound, 'float32', seed);
    const b = tf.zeros(this.B.weight.shape);
    this.A.weight.assign(a);
    this.B.weight.assign(b);
    tf.dispose([a, b]);
  }

  /** The user's strength of this adapter (1 = as trained). */
  get multiplier(): number {
    return this.multiplierValue;
  }

  set multiplier(m: number) {
    if (!Number.isFinite(m)) throw new LoraError(`LoRA scale must be a finite number, got ${m}`);
    if (this.merged) throw new LoraError('cannot change the scale of a merged LoRA adapter; unmerge it first');
    this.multiplierValue = m;
  }

  /** multiplier · alpha / r. */
  get scale(): number {
    return (this.multiplierValue * this.alpha) / this.rank;
  }

  get merged(): boolean {
    return this.saved !== null;
  }

  get attachedTo(): LoraTarget | null {
    return this.target;
  }

  /** Δy for the target's input. */
  forward(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => tf.mul(this.B.forward(this.A.forward(x)), this.scale));
  }

  /** scale · B·A in the target's tfjs weight layout (`[in, out]`, or `[1, 1, in, out]` for a conv). */
  deltaWeight(): tf.Tensor {
    return tf.tidy(() => {
      const a = this.A.weight.value.reshape([this.inFeatures, this.rank]);
      const b = this.B.weight.value.reshape([this.rank, this.outFeatures]);
      const d = tf.mul(tf.matMul(a, b), this.scale);
      return this.conv ? d.reshape([1, 1, this.inFeatures, this.outFeatures]) : d;
    });
  }

  /** Add this adapter to `target`'s output, letting go of a previous target first (see detach). */
  attach(target: LoraTarget): void {
    if (this.target === target) return;
    const why = unsupported(target);
    if (why) throw new LoraError(why);
    const [i, o] = widths(target);
    if (target instanceof Conv2d !== this.conv || i !== this.inFeatures || o !== this.outFeatures) {
      throw new LoraError(
        `a ${this.conv ? 'conv' : 'linear'} adapter ${this.inFeatures}→${this.outFeatures} does not fit ${target.constructor.name} ${i}→${o}`,
      );
    }
    this.detach();
    this.target = target;
    target.deltas.push(this);
  }

  /** Remove the adapter from its target, unmerging it first when merged. */
  detach(): void {
    const t = this.target;
    if (!t) return;
    this.unmerge();
    const k = t.deltas.indexOf(this);
    if (k >= 0) t.deltas.splice(k, 1);
    this.target = null;
  }

  /** Fold scale·B·A into the target's weight (the forward then costs nothing extra). */
  merge(): void {
    const t = this.target;
    if (!t) throw new LoraError('merge: the adapter is not attached to a layer');
    if (this.merged) return;
    this.saved = Float32Array.from(t.weight.value.dataSync() as Float32Array);
    const w = tf.tidy(() => tf.add(t.weight.value, this.deltaWeight()));
    t.weight.assign(w);
    w.dispose();
    this.savedIndex = t.deltas.indexOf(this);
    t.deltas.splice(this.savedIndex, 1);
    const stack = mergedOn.get(t) ?? [];
    stack.push(this);
    mergedOn.set(t, stack);
  }

  /**
   * Restore the target's weight exactly as it was before `merge()`. A target whose weights were
   * freed since (its model was released) has nothing to restore.
   */
  unmerge(): void {
    const t = this.target;
    if (!t || !this.saved) return;
    if (t.weight.allocated) {
      const stack = mergedOn.get(t)!;
      if (stack[stack.length - 1] !== this)
        throw new LoraError('unmerge: another adapter was merged into this layer after this one; unmerge that first');
      stack.pop();
      const w = tf.tensor(this.saved, t.weight.shape, 'float32');
      t.weight.assign(w);
      w.dispose();
    } else mergedOn.delete(t);
    this.saved = null;
    t.deltas.splice(this.savedIndex, 0, this);
  }

  override dispose(): void {
    this.detach();
    super.dispose();
  }
}

export interface LoraConfig {
  rank: number;
  /** default: rank (scale 1, peft's and diffusers' convention when a file carries no alpha). */
  alpha?: number;
  /** peft-style target names (see matchesTarget); default DEFAULT_LORA_TARGETS. */
  targets?: readonly string[];
  /** reproducible initialisation of the A matrices. */
  seed?: number;
}

/** One adapter's tensors, as read from a file (PyTorch layout). */
export interface LoraTensors {
  A: HostTensor;
  B: HostTensor;
  /** default: the rank (A's first dimension). */
  alpha?: number;
}

/** The layers of `model` LoRA can adapt, by path. */
function adaptable(model: Module): Map<string, LoraTarget> {
  const out = new Map<string, LoraTarget>();
  for (const [p, m] of model.namedModules()) if (!unsupported(m)) out.set(p, m as LoraTarget);
  return out;
}

/**
 * A set of adapters on one model, keyed by module path: what one LoRA file holds. It survives
 * its model: `attach()` puts the same adapters on a freshly loaded copy of the model.
 */
export class LoraNetwork {
  private networkMerged = false;

  private constructor(readonly adapters: ReadonlyMap<string, LoraAdapter>) {}

  /** New adapters (A random, B zero) on every layer of `model` whose path matches a target. */
  static inject(model: Module, config: LoraConfig): LoraNetwork {
    const targets = config.targets ?? DEFAULT_LORA_TARGETS;
    if (!targets.length) throw new LoraError('no LoRA targets given');
    const alpha = config.alpha ?? config.rank;
    const hit = new Set<string>();
    const adapters = new Map<string, LoraAdapter>();
    for (const [p, m] of model.namedModules()) {
      const t = targets.find((name) => matchesTarget(p, name));
      if (t === undefined) continue;
      hit.add(t);
      const why = unsupported(m);
      if (why) throw new LoraError(`LoRA target "${t}" matches ${p}, a ${why}`);
      const [i, o] = widths(m as LoraTarget);
      const seed = config.seed === undefined ? undefined : config.seed + adapters.size;
      adapters.set(p, new LoraAdapter(i, o, config.rank, alpha, m instanceof Conv2d, seed));
    }
    const missed = targets.filter((t) => !hit.has(t));
    if (missed.length) throw new LoraError(`LoRA targets not found in ${model.constructor.name}: ${missed.join(', ')}`);
    const net = new LoraNetwork(adapters);
    net.attach(model);
    return net;
  }

  /** Adapters with the given weights (module path → tensors), checked against and attached to `model`. */
  static fromTensors(model: Module, tensors: ReadonlyMap<string, LoraTensors>, source = 'LoRA'): LoraNetwork {
    const layers = adaptable(model);
    const problems: string[] = [];
    const adapters = new Map<string, LoraAdapter>();
    for (const [p, t] of tensors) {
      const layer = layers.get(p);
      if (!layer) {
        problems.push(`${p}: no Linear or 1×1 Conv2d of that name in ${model.constructor.name}`);
        continue;
      }
      const [i, o] = widths(layer);
      const conv = layer instanceof Conv2d;
      const r = t.A.shape[0];
      const tail = conv ? [1, 1] : [];
      const fmt = (s: number[]) => `[${s.join(', ')}]`;
      const wantA = [r, i, ...tail];
      const wantB = [o, r, ...tail];
      if (!(r >= 1) || fmt(t.A.shape) !== fmt(wantA) || fmt(t.B.shape) !== fmt(wantB)) {
        problems.push(
          `${p}: lora_A ${fmt(t.A.shape)} / lora_B ${fmt(t.B.shape)} do not fit ${layer.constructor.name} ${i}→${o} (expected ${fmt(wantA)} / ${fmt(wantB)})`,
        );
        continue;
      }
      const a = new LoraAdapter(i, o, r, t.alpha ?? r, conv);
      a.A.weight.load(t.A);
      a.B.weight.load(t.B);
      adapters.set(p, a);
    }
    if (problems.length) {
      for (const a of adapters.values()) a.dispose();
      throw new LoraError(`${source} does not fit ${model.constructor.name}:\n  ${problems.join('\n  ')}`);
    }
    if (!adapters.size) throw new LoraError(`${source} holds no LoRA weights`);
    const net = new LoraNetwork(adapters);
    net.attach(model);
    return net;
  }

  get paths(): string[] {
    return [...this.adapters.keys()];
  }

  /** The user's strength of the whole network (1 = as trained). */
  get multiplier(): number {
    return this.adapters.values().next().value!.multiplier;
  }

  set multiplier(m: number) {
    for (const a of this.adapters.values()) a.multiplier = m;
  }

  get merged(): boolean {
    return this.networkMerged;
  }

  /** Put the adapters on `model` (a no-op where they already sit), merging them when the network is merged. */
  attach(model: Module): void {
    const layers = adaptable(model);
    for (const [p, a] of this.adapters) {
      const layer = layers.get(p);
      if (!layer) throw new LoraError(`${model.constructor.name} has no Linear or 1×1 Conv2d at ${p}`);
      a.attach(layer);
      if (this.networkMerged) a.merge();
    }
  }

  /** Trainable tensors keyed `<path>.lora_A.weight` / `<path>.lora_B.weight`. */
  parameters(): [string, Parameter][] {
    return [...this.adapters].flatMap(([p, a]) => a.namedParameters(`${p}.`));
  }

  /** PyTorch-layout tensors under the keys of `parameters()`. */
  stateDict(): Map<string, HostTensor> {
    return new Map(this.parameters().map(([k, p]) => [k, p.toHost()]));
  }

  /** Load tensors saved by `stateDict()` (same paths and shapes). */
  loadStateDict(tensors: ReadonlyMap<string, HostTensor>, source = 'LoRA'): void {
    const own = this.parameters();
    const missing = own.filter(([k]) => !tensors.has(k)).map(([k]) => k);
    if (missing.length) throw new LoraError(`${source}: missing ${missing.join(', ')}`);
    for (const [k, p] of own) {
      const t = tensors.get(k)!;
      if (t.shape.join(',') !== p.torchShape.join(','))
        throw new LoraError(`${source}: ${k} has shape [${t.shape}], expected [${p.torchShape}]`);
    }
    for (const [k, p] of own) p.load(tensors.get(k)!);
  }

  merge(): void {
    for (const a of this.adapters.values()) a.merge();
    this.networkMerged = true;
  }

  unmerge(): void {
    for (const a of [...this.adapters.values()].reverse()) a.unmerge();
    this.networkMerged = false;
  }

  /** Take the adapters off their layers (restoring merged weights). */
  detach(): void {
    for (const a of [...this.adapters.values()].reverse()) a.detach();
    this.networkMerged = false;
  }

  dispose(): void {
    for (const a of [...this.adapters.values()].reverse()) a.dispose();
  }
}
