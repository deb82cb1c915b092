/**
 * Seeded, serialisable random numbers for training. Every random draw of a training run
 * (t, noise, caption/effnet dropout, dropout masks, data shuffling, crops, flips) comes from a
 * {@link Generator} whose state is saved in the checkpoint, or from a seed derived
 * deterministically from the run seed ({@link deriveSeed}), so a resumed run replays exactly.
 *
 * Generator: xoshiro128** (Blackman & Vigna) on four uint32 words, seeded through splitmix32.
 */

/** splitmix32 step: returns [next state, output]. */
function splitmix32(state: number): [number, number] {
  state = (state + 0x9e3779b9) >>> 0;
  let z = state;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return [state, (z ^ (z >>> 16)) >>> 0];
}

/** 32-bit FNV-1a-then-mix hash of a list of numbers/strings: a stable seed for a (run, purpose, index) tuple. */
export function deriveSeed(...parts: (number | string)[]): number {
  let h = 0x811c9dc5;
  const mixByte = (b: number) => {
    h ^= b & 0xff;
    h = Math.imul(h, 0x01000193) >>> 0;
  };
  for (const part of parts) {
    const s = typeof part === 'number' ? `n${part}` : `s${part}`;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      mixByte(c);
      mixByte(c >>> 8);
    }
    mixByte(0x1f);
  }
  return splitmix32(h)[1];
}

export type GeneratorState = [number, number, number, number];

export class Generator {
  private s: Uint32Array = new Uint32Array(4);

  constructor(seed: number | string = 0) {
    this.seed(seed);
  }

  seed(seed: number | string): this {
    let x = typeof seed === 'number' ? seed >>> 0 : deriveSeed(seed);
    for (let i = 0; i < 4; i++) {
      const [nx, out] = splitmix32(x);
      x = nx;
      this.s[i] = out;
    }
    if ((this.s[0] | this.s[1] | this.s[2] | this.s[3]) === 0) this.s[0] = 1;
    return this;
  }

  /** A copy of the state (JSON-serialisable). */
  state(): GeneratorState {
    return [this.s[0], this.s[1], this.s[2], this.s[3]];
  }

  setState(state: GeneratorState | number[]): this {
    if (!Array.isArray(state) || state.length !== 4 || state.some((v) => !Number.isInteger(v) || v < 0 || v > 0xffffffff)) {
      throw new Error(`Generator.setState: expected four uint32 words, got ${JSON.stringify(state)}`);
    }
    this.s.set(state);
    return this;
  }

  clone(): Generator {
    return new Generator().setState(this.state());
  }

  /** Next uint32 (xoshiro128**). */
  nextUint32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** Uniform double in [0, 1) with 53 random bits. */
  random(): number {
    const a = this.nextUint32() >>> 5;
    const b = this.nextUint32() >>> 6;
    return (a * 67108864 + b) / 9007199254740992;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.random() * n);
  }

  /** n uniform float32 values in [0, 1). */
  rand(n: number): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = this.random();
    return out;
  }

  /** n standard normal float32 values (Box–Muller, pairs; an odd count discards the spare). */
  randn(n: number): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i += 2) {
      let u1 = this.random();
      if (u1 < 1e-300) u1 = 1e-300;
      const u2 = this.random();
      const r = Math.sqrt(-2 * Math.log(u1));
      out[i] = r * Math.cos(2 * Math.PI * u2);
      if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * u2);
    }
    return out;
  }

  /** A uniformly random permutation of 0..n-1 (Fisher–Yates). */
  permutation(n: number): number[] {
    const p = Array.from({ length: n }, (_, i) => i);
    for (let i = n - 1; i > 0; i--) {
      const j = this.int(i + 1);
      [p[i], p[j]] = [p[j], p[i]];
    }
    return p;
  }

  /** A seed for a sub-stream (tf.dropout seeds, per-sample augmentation). */
  nextSeed(): number {
    return this.nextUint32();
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
