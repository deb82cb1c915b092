/**
 * `@wuerstchen/train/internal`: helpers for this project's own tools and tests (scripts, jest). Not part of the
 * public API and not semver-stable: names may change in any release.
 */
export { AdamW, EMA, clipGrads, globalNorm, oneCycleLR, warmupLR } from './optim';
export { CaptionWordHead, captionWordTargets } from './caption_words';
export { PatchHead, patchTargets } from './patch_head';
export { alphaCumprod, p2Weight, sampleT } from './objectives';
export { phaseAt, totalSteps } from './config';
export {
  configJson,
  modelArgs,
  prune,
  readLatestPointer,
  readModelConfig,
  writeCheckpoint,
  writeFileSynced,
} from './checkpoint';
export { parseTrainingState } from './training_state';
export type { TrainingState } from './training_state';
export { expandBraces } from './data/dataset';
export {
  ImageTooLargeError,
  centerCrop,
  decodeImage,
  hflip,
  imageDimensions,
  normalize,
  resize,
  resizeShortSide,
} from './data/image';
export { TarError, TarReader, splitWdsName, wdsSamples, writeTar } from './data/tar';
export { SeededStochasticLayers } from './seeded';
export { bucketSize } from './stage_c';
export { encodeToy, makeToyDataset, makeToyShards, toyImage } from './testing';
export { resolveLoraBase } from './lora';
export { saveModule } from './models_io';
