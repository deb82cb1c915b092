/**
 * `DDPMWuerstchenScheduler` (diffusers `src/diffusers/schedulers/scheduling_ddpm_wuerstchen.py`).
 *
 * All math is float32, in the reference's operation order:
 *   init  = cos(s/(1+s)·π/2)²
 *   ᾱ(t)  = clamp(cos((t'+s)/(1+s)·π/2)² / init, 1e-4, 0.9999),  t' = 1−(1−t)^scaler (scaler>1), t^scaler (scaler<1), t
 *   step: α = ᾱ(t)/ᾱ(t_prev);  μ = sqrt(1/α)·(x − (1−α)·ε/sqrt(1−ᾱ(t)));  x' = μ + sqrt((1−α)(1−ᾱ_prev)/(1−ᾱ))·z·(t_prev≠0)
 *
 * Tensors are elementwise: any layout works (NCHW or NHWC) as long as the batch is the first axis; `t` is `[B]`
 * (or `[1]`, or a number) and is broadcast over the remaining axes. Every method returns new tensors and frees its
 * temporaries; inputs are never disposed.
 */
import * as tf from '@tensorflow/tfjs';
import {
  JsonTextError,
  fileStore,
  joinPath,
  parseStrictJson,
  readTextFile,
  writeTextFile,
} from '@wuerstchen/core/internal';
import { Generator } from './rng';

export const SCHEDULER_CLASS_NAME = 'DDPMWuerstchenScheduler';
export const SCHEDULER_CONFIG_FILE = 'scheduler_config.json';

/** `scheduler_config.json` fields. */
export interface DDPMWuerstchenSchedulerConfig {
  /** cosine-schedule offset (default 0.008). */
  s: number;
  /** timestep warping exponent (default 1.0 = none). */
  scaler: number;
}

export const SCHEDULER_DEFAULTS: Readonly<DDPMWuerstchenSchedulerConfig> = Object.freeze({ s: 0.008, scaler: 1.0 });

const f32 = Math.fround;

/**
 * `DEFAULT_STAGE_C_TIMESTEPS = list(np.linspace(1.0, 2/3, 20)) + list(np.linspace(2/3, 0.0, 11))[1:]`
 * (diffusers `pipeline_wuerstchen_prior.py`), as float32 after `torch.Tensor(...)`: 30 values, 29 prior steps.
 * Computed like numpy (float64 `i·step + start`, last element = stop) and rounded to float32; equal to the list in pipeline_wuerstchen_prior.py.
 */
export const DEFAULT_STAGE_C_TIMESTEPS: readonly number[] = Object.freeze(
  [...numpyLinspace(1.0, 2 / 3, 20), ...numpyLinspace(2 / 3, 0.0, 11).slice(1)].map(f32),
);

/** numpy.linspace in float64 (endpoint=True). */
function numpyLinspace(start: number, stop: number, num: number): number[] {
  const step = (stop - start) / (num - 1);
  return Array.from({ length: num }, (_, i) => (i === num - 1 ? stop : i * step + start));
}

/**
 * float32 `torch.linspace(start, end, steps)` with the symmetric formula of PyTorch's CUDA kernel
 * (`RangeFactories.cu`): `step = (end − start)/(steps − 1)`; `v[i] = start + step·i` for `i < ⌊steps/2⌋`,
 * else `end − step·(steps − 1 − i)`, each operation rounded to float32.
 * PyTorch's CPU kernel (AVX2 path: 8-lane `arange` blocks whose bases use the same two formulas, scalar tail)
 * differs by 1–2 ulp for some sizes (e.g. 61 values); to replay such a run bit for bit, pass its timesteps.
 */
export function linspaceF32(start: number, end: number, steps: number): Float32Array {
  if (!Number.isSafeInteger(steps) || steps < 1)
    throw new Error(`linspaceF32: steps must be a positive integer, got ${steps}`);
  const out = new Float32Array(steps);
  const s = f32(start);
  const e = f32(end);
  if (steps === 1) {
    out[0] = s;
    return out;
  }
  const step = f32(f32(e - s) / (steps - 1));
  const halfway = Math.floor(steps / 2);
  for (let i = 0; i < steps; i++) out[i] = i < halfway ? f32(s + f32(step * i)) : f32(e - f32(step * (steps - 1 - i)));
  return out;
}

export interface StepOptions {
  /** Noise to use instead of drawing it (same shape as `sample`); e.g. the reference run's noise. */
  noise?: tf.Tensor;
  /** Draws the noise when `noise` is not given (default: a generator with a random seed). */
  generator?: Generator;
}

export interface StepOutput {
  prevSample: tf.Tensor;
}

export type TimestepsInput = ArrayLike<number> | tf.Tensor;

const describe = (t: tf.Tensor): string => `${t.dtype} [${t.shape.join(', ')}]`;

function checkNumber(value: unknown, name: string, where: string, ok: (v: number) => boolean, rule: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || !ok(value)) {
    throw new Error(`${where}: ${name} must be ${rule}, got ${JSON.stringify(value)}`);
  }
  return value;
}

export class DDPMWuerstchenScheduler {
  readonly config: Readonly<DDPMWuerstchenSchedulerConfig>;
  /** Standard deviation of the initial noise (the pipelines multiply the initial latents by it). */
  readonly initNoiseSigma = 1.0;
  /** float32 `cos(s/(1+s)·π/2)²`. */
  readonly initAlphaCumprod: number;
  private ts: Float32Array = new Float32Array(0);
  private defaultGenerator: Generator | null = null;

  constructor(config: Partial<DDPMWuerstchenSchedulerConfig> = {}) {
    const where = 'DDPMWuerstchenScheduler';
    const s = checkNumber(config.s ?? SCHEDULER_DEFAULTS.s, 's', where, (v) => v >= 0, 'a finite number >= 0');
    const scaler = checkNumber(
      config.scaler ?? SCHEDULER_DEFAULTS.scaler,
      'scaler',
      where,
      (v) => v > 0,
      'a finite number > 0',
    );
    this.config = Object.freeze({ s, scaler });
    // torch: s = tensor([s]) (float32); cos(s / (1 + s) * pi * 0.5) ** 2, every op in float32.
    const s32 = f32(s);
    const arg = f32(f32(f32(s32 / f32(1 + s32)) * f32(Math.PI)) * 0.5);
    const c = f32(Math.cos(arg));
    this.initAlphaCumprod = f32(c * c);
  }

  /**
   * From a parsed `scheduler_config.json` (unknown fields such as `_diffusers_version` are ignored). A present
   * `_class_name` other than `DDPMWuerstchenScheduler` is rejected; `where` names the source in errors.
   */
  static fromConfig(obj: Record<string, unknown>, where = 'scheduler config'): DDPMWuerstchenScheduler {
    if (typeof obj !== 'object' || obj === null || Array.isArray(obj))
      throw new Error(`${where}: expected a JSON object`);
    const cls = obj._class_name;
    if (cls !== undefined && cls !== SCHEDULER_CLASS_NAME) {
      throw new Error(`${where}: _class_name is ${JSON.stringify(cls)}, expected "${SCHEDULER_CLASS_NAME}"`);
    }
    const cfg: Partial<DDPMWuerstchenSchedulerConfig> = {};
    if (obj.s !== undefined) cfg.s = checkNumber(obj.s, 's', where, (v) => v >= 0, 'a finite number >= 0');
    if (obj.scaler !== undefined)
      cfg.scaler = checkNumber(obj.scaler, 'scaler', where, (v) => v > 0, 'a finite number > 0');
    return new DDPMWuerstchenScheduler(cfg);
  }

  /**
   * From `<dir>/scheduler_config.json` (`dir` = a pipeline's `scheduler/` folder; a pipeline root with a
   * `scheduler/` subfolder, or the json file itself, is accepted too).
   */
  static fromPretrained(dir: string): DDPMWuerstchenScheduler {
    const candidates = dir.endsWith('.json')
      ? [dir]
      : [joinPath(dir, SCHEDULER_CONFIG_FILE), joinPath(dir, 'scheduler', SCHEDULER_CONFIG_FILE)];
    const file = candidates.find((f) => fileStore(f).kind(f) === 'file');
    if (!file) throw new Error(`${dir}: no ${SCHEDULER_CONFIG_FILE} found (tried ${candidates.join(', ')})`);
    let json: unknown;
    try {
      json = parseStrictJson(readTextFile(file));
    } catch (e) {
      if (e instanceof JsonTextError) throw new Error(`${file}: not valid JSON (${e.message})`);
      throw e;
    }
    return DDPMWuerstchenScheduler.fromConfig(json as Record<string, unknown>, file);
  }

  /** The config as diffusers writes it. */
  toConfig(): Record<string, unknown> {
    return { _class_name: SCHEDULER_CLASS_NAME, s: this.config.s, scaler: this.config.scaler };
  }

  /** Write `<dir>/scheduler_config.json` (creates `dir`). */
  saveConfig(dir: string): string {
    const file = joinPath(dir, SCHEDULER_CONFIG_FILE);
    writeTextFile(file, `${JSON.stringify(this.toConfig(), null, 2)}\n`);
    return file;
  }

  /** The float32 timesteps set by `setTimesteps` (a copy); the pipelines call `step` for all but the last. */
  get timesteps(): Float32Array {
    return this.ts.slice();
  }

  /** Number of `step` calls of the current schedule (timesteps.length − 1). */
  get numInferenceSteps(): number {
    return Math.max(this.ts.length - 1, 0);
  }

  /**
   * `set_timesteps(n)` → float32 `linspace(1, 0, n + 1)` (see `linspaceF32`);
   * `set_timesteps(timesteps=L)` → `L` cast to float32 (e.g. `DEFAULT_STAGE_C_TIMESTEPS`, or the exact tensor of a
   * reference run). Returns the timesteps (a copy).
   */
  setTimesteps(arg: number | { numInferenceSteps: number } | { timesteps: TimestepsInput }): Float32Array {
    const where = 'DDPMWuerstchenScheduler.setTimesteps';
    if (typeof arg === 'number' || (typeof arg === 'object' && arg !== null && 'numInferenceSteps' in arg)) {
      const n = typeof arg === 'number' ? arg : arg.numInferenceSteps;
      if (!Number.isSafeInteger(n) || n < 1)
        throw new Error(`${where}: numInferenceSteps must be a positive integer, got ${String(n)}`);
      this.ts = linspaceF32(1.0, 0.0, n + 1);
      return this.timesteps;
    }
    if (typeof arg !== 'object' || arg === null || !('timesteps' in arg)) {
      throw new Error(`${where}: expected a number of steps or {timesteps: number[]}, got ${JSON.stringify(arg)}`);
    }
    const src = arg.timesteps;
    let values: Float32Array;
    if (src instanceof tf.Tensor) {
      if (src.rank !== 1) throw new Error(`${where}: timesteps tensor must be 1-D, got ${describe(src)}`);
      values = Float32Array.from(src.dataSync());
    } else if (src !== null && typeof src === 'object' && typeof (src as ArrayLike<number>).length === 'number') {
      values = Float32Array.from(
        Array.from(src as ArrayLike<number>, (v) => {
          if (typeof v !== 'number' || !Number.isFinite(v))
            throw new Error(`${where}: timesteps must be finite numbers, got ${JSON.stringify(v)}`);
          return v;
        }),
      );
    } else {
      throw new Error(`${where}: timesteps must be an array of numbers or a 1-D tensor`);
    }
    if (values.length < 2) throw new Error(`${where}: need at least 2 timesteps (one step), got ${values.length}`);
    if (!values.every(Number.isFinite)) throw new Error(`${where}: timesteps must be finite`);
    this.ts = values;
    return this.timesteps;
  }

  /** `_alpha_cumprod(t)`: ᾱ for every element of a float32 tensor `t` (same shape). */
  alphaCumprod(t: tf.Tensor): tf.Tensor {
    this.checkFloat(t, 't', 'alphaCumprod');
    const { s, scaler } = this.config;
    const s32 = f32(s);
    return tf.tidy(() => {
      let tt: tf.Tensor = t;
      // torch's pow specialises exponent 2 (x·x) and 0.5 (sqrt); mirror that, tf.pow for the rest.
      const pow = (x: tf.Tensor) => (scaler === 2 ? tf.square(x) : scaler === 0.5 ? tf.sqrt(x) : tf.pow(x, scaler));
      if (scaler > 1) tt = tf.sub(1, pow(tf.sub(1, tt)));
      else if (scaler < 1) tt = pow(tt);
      const arg = tf.mul(tf.mul(tf.div(tf.add(tt, s32), f32(1 + s32)), f32(Math.PI)), 0.5);
      const ac = tf.div(tf.square(tf.cos(arg)), this.initAlphaCumprod);
      return tf.clipByValue(ac, 0.0001, 0.9999);
    });
  }

  /**
   * `previous_timestep(t)`: `timesteps[argmin|timesteps − t[0]| + 1]` broadcast to `t`'s length, as a `[B]` float32
   * tensor. Reads `t[0]` from the device (synchronously).
   */
  previousTimestep(t: tf.Tensor | number): tf.Tensor {
    const b = typeof t === 'number' ? 1 : this.checkT(t, 'previousTimestep').shape[0]!;
    return tf.fill([b], this.previousTimestepValue(typeof t === 'number' ? t : t.dataSync()[0]), 'float32');
  }

  /** The previous timestep of a scalar timestep (as `previousTimestep`, on the host). */
  previousTimestepValue(t: number): number {
    const ts = this.ts;
    if (ts.length < 2) throw new Error('DDPMWuerstchenScheduler: call setTimesteps(...) before step/previousTimestep');
    const t0 = f32(t);
    let best = 0;
    let bestDist = Infinity;
    for (let k = 0; k < ts.length; k++) {
      const d = Math.abs(f32(ts[k] - t0));
      if (d < bestDist) {
        bestDist = d;
        best = k;
      }
    }
    if (best + 1 >= ts.length) {
      throw new Error(
        `DDPMWuerstchenScheduler: t=${t0} is the last timestep (${ts[ts.length - 1]}); it has no previous timestep to step to`,
      );
    }
    return ts[best + 1];
  }

  /**
   * One reverse step from `t` to the previous timestep. `modelOutput` (predicted noise) and `sample` have the same
   * shape `[B, ...]`; `t` is `[B]` (all equal, as the pipelines' `t.expand(B)`), `[1]`, or a number. The noise is
   * always drawn (also at the last step, where it is multiplied by 0) unless `opts.noise` is given.
   */
  step(modelOutput: tf.Tensor, t: tf.Tensor | number, sample: tf.Tensor, opts: StepOptions = {}): StepOutput {
    const where = 'step';
    this.checkFloat(modelOutput, 'modelOutput', where);
    this.checkFloat(sample, 'sample', where);
    if (sample.rank < 1)
      throw new Error(`DDPMWuerstchenScheduler.step: sample must have a batch axis, got ${describe(sample)}`);
    if (!sameShape(modelOutput.shape, sample.shape)) {
      throw new Error(
        `DDPMWuerstchenScheduler.step: modelOutput ${describe(modelOutput)} and sample ${describe(sample)} must have the same shape`,
      );
    }
    if (opts.noise !== undefined) {
      if (!(opts.noise instanceof tf.Tensor))
        throw new Error('DDPMWuerstchenScheduler.step: noise must be a tf.Tensor');
      this.checkFloat(opts.noise, 'noise', where);
      if (!sameShape(opts.noise.shape, sample.shape)) {
        throw new Error(
          `DDPMWuerstchenScheduler.step: noise ${describe(opts.noise)} must have the shape of sample ${describe(sample)}`,
        );
      }
    }
    if (opts.generator !== undefined && !(opts.generator instanceof Generator)) {
      throw new Error('DDPMWuerstchenScheduler.step: generator must be a Generator (rng.ts)');
    }
    const batch = sample.shape[0];
    if (typeof t !== 'number') {
      this.checkT(t, where);
      if (t.shape[0] !== batch && t.shape[0] !== 1) {
        throw new Error(
          `DDPMWuerstchenScheduler.step: t ${describe(t)} must have length 1 or the batch size ${batch} of sample ${describe(sample)}`,
        );
      }
    } else if (!Number.isFinite(t)) {
      throw new Error(`DDPMWuerstchenScheduler.step: t must be finite, got ${t}`);
    }
    const tValue = typeof t === 'number' ? t : t.dataSync()[0];
    const tPrevValue = this.previousTimestepValue(tValue);
    const prevSample = tf.tidy(() => {
      const tT = typeof t === 'number' ? tf.fill([1], t, 'float32') : t;
      const tPrev = tf.fill([tT.shape[0]!], tPrevValue, 'float32');
      const view = [tT.shape[0]!, ...new Array(sample.rank - 1).fill(1)];
      const a = tf.reshape(this.alphaCumprod(tT), view);
      const aPrev = tf.reshape(this.alphaCumprod(tPrev), view);
      const alpha = tf.div(a, aPrev);
      const oneMinusAlpha = tf.sub(1, alpha);
      const oneMinusA = tf.sub(1, a);
      const mu = tf.mul(
        tf.sqrt(tf.div(1, alpha)),
        tf.sub(sample, tf.div(tf.mul(oneMinusAlpha, modelOutput), tf.sqrt(oneMinusA))),
      );
      const noise = opts.noise ?? (opts.generator ?? this.fallbackGenerator()).randn(mu.shape);
      const std = tf.mul(tf.sqrt(tf.div(tf.mul(oneMinusAlpha, tf.sub(1, aPrev)), oneMinusA)), noise);
      const nonzero = tf.reshape(tf.cast(tf.notEqual(tPrev, 0), 'float32'), view);
      return tf.add(mu, tf.mul(std, nonzero));
    });
    return { prevSample };
  }

  /** `add_noise`: `sqrt(ᾱ(t))·original + sqrt(1 − ᾱ(t))·noise`, `t` `[B]` (or `[1]`) broadcast over the rest. */
  addNoise(original: tf.Tensor, noise: tf.Tensor, t: tf.Tensor): tf.Tensor {
    const where = 'addNoise';
    this.checkFloat(original, 'original', where);
    this.checkFloat(noise, 'noise', where);
    this.checkT(t, where);
    if (original.rank < 1)
      throw new Error(`DDPMWuerstchenScheduler.addNoise: original must have a batch axis, got ${describe(original)}`);
    if (!sameShape(original.shape, noise.shape)) {
      throw new Error(
        `DDPMWuerstchenScheduler.addNoise: noise ${describe(noise)} must have the shape of original ${describe(original)}`,
      );
    }
    if (t.shape[0] !== original.shape[0] && t.shape[0] !== 1) {
      throw new Error(
        `DDPMWuerstchenScheduler.addNoise: t ${describe(t)} must have length 1 or the batch size ${original.shape[0]}`,
      );
    }
    return tf.tidy(() => {
      const ac = tf.reshape(this.alphaCumprod(t), [t.shape[0]!, ...new Array(original.rank - 1).fill(1)]);
      return tf.add(tf.mul(tf.sqrt(ac), original), tf.mul(tf.sqrt(tf.sub(1, ac)), noise));
    });
  }

  private fallbackGenerator(): Generator {
    if (!this.defaultGenerator) this.defaultGenerator = Generator.random();
    return this.defaultGenerator;
  }

  private checkFloat(x: unknown, name: string, where: string): void {
    if (!(x instanceof tf.Tensor)) throw new Error(`DDPMWuerstchenScheduler.${where}: ${name} must be a tf.Tensor`);
    if (x.dtype !== 'float32')
      throw new Error(`DDPMWuerstchenScheduler.${where}: ${name} must be float32, got ${describe(x)}`);
  }

  private checkT(t: unknown, where: string): tf.Tensor {
    this.checkFloat(t, 't', where);
    const tt = t as tf.Tensor;
    if (tt.rank !== 1 || tt.shape[0] === 0)
      throw new Error(`DDPMWuerstchenScheduler.${where}: t must be a non-empty 1-D [B] tensor, got ${describe(tt)}`);
    return tt;
  }
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
