/**
 * `@wuerstchen/core/internal`: helpers for this project's own packages and tools (wuerstchen, train, the golden
 * runners, tests, scripts). Not part of the public API and not semver-stable: names may change in any release.
 * Browser-safe, like browser.ts; in Node, the main entry is what installs the disk file store.
 */
export { fileStore, joinPath, memoryFile, parentPath, readTextFile, writeTextFile } from './files';
export { adamwUpdate } from './adamw';
export type { AdamWStep } from './adamw';
export { variableGrads } from './grads';
export { JsonTextError, parseStrictJson, quoteValue } from './strict_json';
export { unsafeRelativeName } from './safetensors_read';
export { toNCHW, toNHWC } from './layout';
export { pipe } from './module';
export {
  activation,
  antialiasWeights,
  gelu,
  multiHeadAttention,
  pixelShuffle,
  pixelUnshuffle,
  quickGelu,
  replicatePad,
  resizeBicubicAA,
  silu,
} from './layers';
export type { AAWeights } from './layers';
