/**
 * Seeds for training. Every random draw of a training run (t, noise, caption/effnet dropout,
 * dropout masks, data shuffling, crops, flips) comes from a `Generator` (the package `wuerstchen`'s
 * seeded xoshiro128** generator) whose state is saved in the checkpoint, or from one seeded with
 * {@link deriveSeed} of the run seed, so a resumed run replays exactly.
 */

/** splitmix32 finaliser of a 32-bit state (one step: add the golden gamma, then mix). */
function splitmix32(state: number): number {
  let z = (state + 0x9e3779b9) >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return (z ^ (z >>> 16)) >>> 0;
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
  return splitmix32(h);
}
