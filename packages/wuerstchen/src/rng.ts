/**
 * A small seeded random generator for sampling noise and training, independent of the tfjs backend.
 *
 * Algorithm (all documented, public-domain designs):
 *  - state: xoshiro128** (Blackman & Vigna, https://prng.di.unimi.it/xoshiro128starstar.c), four 32-bit words;
 *  - seeding: two outputs of SplitMix64 (https://prng.di.unimi.it/splitmix64.c) on the 64-bit seed, each split into
 *    its low and high 32-bit words (s0 = lo₁, s1 = hi₁, s2 = lo₂, s3 = hi₂), as Vigna recommends;
 *  - uniforms: `u1 = (x + 1)·2⁻³²` ∈ (0, 1], `u2 = y·2⁻³²` ∈ [0, 1) from two consecutive outputs x, y;
 *  - normals: Box–Muller in float64, `r = sqrt(−2·ln u1)`, `z0 = r·cos(2π·u2)`, `z1 = r·sin(2π·u2)`, rounded to
 *    float32. Each pair uses exactly two 32-bit outputs; `randn` of an odd count discards the last `z1`, so the state
 *    after a call depends only on the state before it and the element count (no hidden spare value), which keeps
 *    `state()` / `setState()` an exact resume point;
 *  - integers: `int(n)` is `x mod n` for the first 32-bit output x below the largest multiple of n (rejection, so
 *    unbiased); `permutation(n)` is Fisher–Yates on `int`.
 *
 * Numbers are generated on the JS side into a Float32Array and only then handed to tfjs, so a seed gives the same
 * tensors on every backend (cpu, wasm, webgl, native, tfjs-node). Box–Muller uses `Math.log/cos/sin`; V8 (Node) uses
 * the same fdlibm-derived implementations on every platform, so results are identical across machines for a given
 * Node major version; other JS engines could in principle differ in the last bit of a float64 intermediate.
 *
 * This does NOT reproduce PyTorch's generator (`torch.Generator` / `torch.randn`, MT19937 on CPU, Philox on CUDA):
 * the same seed gives different numbers than diffusers. To replay a PyTorch run, inject
 * its noise tensors instead (the scheduler's `step(..., {noise})`, the pipelines' initial latents).
 */
import * as tf from '@tensorflow/tfjs';

/** Serializable generator state (plain JSON). */
export interface GeneratorState {
  algorithm: 'xoshiro128**';
  /** The four 32-bit state words as unsigned integers. */
  s: [number, number, number, number];
}

const MASK64 = (1n << 64n) - 1n;
const TWO_POW_NEG_32 = 2 ** -32;
const TWO_POW_NEG_24 = 2 ** -24;
const TWO_PI = 2 * Math.PI;

function splitmix64(state: { x: bigint }): bigint {
  state.x = (state.x + 0x9e3779b97f4a7c15n) & MASK64;
  let z = state.x;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
  return z ^ (z >> 31n);
}

const rotl = (x: number, k: number): number => ((x << k) | (x >>> (32 - k))) >>> 0;

function checkCount(n: number, where: string): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${where}: count must be a non-negative integer, got ${n}`);
}

function checkShape(shape: readonly number[], where: string): number {
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new Error(`${where}: shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
  }
  return shape.reduce((a, b) => a * b, 1);
}

export class Generator {
  private s0 = 0;
  private s1 = 0;
  private s2 = 0;
  private s3 = 0;

  /**
   * @param seed an integer (any safe integer; negative values are taken modulo 2⁶⁴) or a bigint (modulo 2⁶⁴).
   */
  constructor(seed: number | bigint = 0) {
    this.seed(seed);
  }

  /** A generator with a random seed (from Math.random; not reproducible). */
  static random(): Generator {
    const hi = Math.floor(Math.random() * 2 ** 32);
    const lo = Math.floor(Math.random() * 2 ** 32);
    return new Generator((BigInt(hi) << 32n) | BigInt(lo));
  }

  /** A generator positioned at `state`. */
  static fromState(state: GeneratorState): Generator {
    const g = new Generator(0);
    g.setState(state);
    return g;
  }

  /** Re-seed in place (like `torch.Generator.manual_seed`). Returns this. */
  seed(seed: number | bigint): this {
    let x: bigint;
    if (typeof seed === 'bigint') x = BigInt.asUintN(64, seed);
    else if (typeof seed === 'number' && Number.isSafeInteger(seed)) x = BigInt.asUintN(64, BigInt(seed));
    else throw new Error(`Generator: seed must be a safe integer or a bigint, got ${String(seed)}`);
    const st = { x };
    const a = splitmix64(st);
    const b = splitmix64(st);
    this.s0 = Number(a & 0xffffffffn);
    this.s1 = Number(a >> 32n);
    this.s2 = Number(b & 0xffffffffn);
    this.s3 = Number(b >> 32n);
    // SplitMix64 never returns two zero outputs in a row in practice; guard the forbidden all-zero state anyway.
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
    return this;
  }

  /** Next 32-bit output of xoshiro128** as an unsigned integer. */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (this.s1 << 9) >>> 0;
    this.s2 = (this.s2 ^ this.s0) >>> 0;
    this.s3 = (this.s3 ^ this.s1) >>> 0;
    this.s1 = (this.s1 ^ this.s2) >>> 0;
    this.s0 = (this.s0 ^ this.s3) >>> 0;
    this.s2 = (this.s2 ^ t) >>> 0;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** A float32-exact uniform number in [0, 1) (24 random bits). */
  nextFloat(): number {
    return (this.nextUint32() >>> 8) * TWO_POW_NEG_24;
  }

  /**
   * A uniform integer in [0, n), for an integer 1 ≤ n ≤ 2³². Unbiased: a 32-bit output x is accepted when
   * x < 2³² − (2³² mod n) and mapped to x mod n, otherwise the next output is tried (so a call usually takes one
   * output and may take more; how many depends only on the state).
   */
  int(n: number): number {
    if (!Number.isSafeInteger(n) || n < 1 || n > 2 ** 32)
      throw new Error(`Generator.int: n must be an integer in [1, 2^32], got ${n}`);
    const limit = 2 ** 32 - (2 ** 32 % n);
    for (;;) {
      const x = this.nextUint32();
      if (x < limit) return x % n;
    }
  }

  /** A uniformly random permutation of 0..n−1 (Fisher–Yates: for i = n−1 down to 1, swap i with `int(i + 1)`). */
  permutation(n: number): number[] {
    checkCount(n, 'Generator.permutation');
    const p = Array.from({ length: n }, (_, i) => i);
    for (let i = n - 1; i > 0; i--) {
      const j = this.int(i + 1);
      [p[i], p[j]] = [p[j], p[i]];
    }
    return p;
  }

  /** `n` standard-normal float32 values (Box–Muller; see the file comment). */
  randnArray(n: number): Float32Array {
    checkCount(n, 'Generator.randnArray');
    const out = new Float32Array(n);
    for (let i = 0; i < n; i += 2) {
      const u1 = (this.nextUint32() + 1) * TWO_POW_NEG_32;
      const u2 = this.nextUint32() * TWO_POW_NEG_32;
      const r = Math.sqrt(-2 * Math.log(u1));
      const theta = TWO_PI * u2;
      out[i] = r * Math.cos(theta);
      if (i + 1 < n) out[i + 1] = r * Math.sin(theta);
    }
    return out;
  }

  /** `n` uniform float32 values in [0, 1). */
  randArray(n: number): Float32Array {
    checkCount(n, 'Generator.randArray');
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = this.nextFloat();
    return out;
  }

  /** A float32 tensor of standard-normal values (row-major fill, like `torch.randn(shape)` but not its numbers). */
  randn(shape: readonly number[]): tf.Tensor {
    const n = checkShape(shape, 'Generator.randn');
    return tf.tensor(this.randnArray(n), [...shape], 'float32');
  }

  /** A float32 tensor of uniform values in [0, 1). */
  rand(shape: readonly number[]): tf.Tensor {
    const n = checkShape(shape, 'Generator.rand');
    return tf.tensor(this.randArray(n), [...shape], 'float32');
  }

  /** The current state (a copy; JSON-serializable). */
  state(): GeneratorState {
    return { algorithm: 'xoshiro128**', s: [this.s0, this.s1, this.s2, this.s3] };
  }

  /** Restore a state from `state()`; the following numbers are exactly those that followed it. Returns this. */
  setState(state: GeneratorState): this {
    if (typeof state !== 'object' || state === null || state.algorithm !== 'xoshiro128**') {
      throw new Error(
        `Generator.setState: expected {algorithm: "xoshiro128**", s: [4 uint32]}, got ${JSON.stringify(state)}`,
      );
    }
    const s = state.s;
    if (!Array.isArray(s) || s.length !== 4 || !s.every((w) => Number.isInteger(w) && w >= 0 && w <= 0xffffffff)) {
      throw new Error(`Generator.setState: s must be four unsigned 32-bit integers, got ${JSON.stringify(s)}`);
    }
    if (s.every((w) => w === 0)) throw new Error('Generator.setState: the all-zero state is invalid for xoshiro128**');
    [this.s0, this.s1, this.s2, this.s3] = s;
    return this;
  }

  /** An independent copy at the same position. */
  clone(): Generator {
    return Generator.fromState(this.state());
  }
}
