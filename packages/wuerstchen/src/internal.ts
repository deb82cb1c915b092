/**
 * `wuerstchen/internal`: helpers for this project's own packages and tools (@wuerstchen/train, the golden runners,
 * tests, scripts). Not part of the public API and not semver-stable: names may change in any release.
 */
export { fetchPipelineFolder, indexNumber, readModelIndex } from './loader';
export type { ModelIndex, PipelineClass } from './loader';
export { parseConfig } from './models/config_schema';
export { PRIOR_SCHEMA } from './models/prior';
export { DIFFNEXT_SCHEMA } from './models/diffnext';
export { PAELLA_VQ_SCHEMA } from './models/paella_vq';
export { CLIP_TEXT_BIGG, CLIP_TEXT_H, CLIP_TEXT_SCHEMA } from './models/clip_text';
export { EFFNET_SETTINGS, IMAGENET_MEAN, IMAGENET_STD, StochasticDepth, effnetOutSize } from './models/effnet';
export type { InvertedResidualConfig } from './models/effnet';
export {
  AttnBlock,
  ResBlock,
  ResBlockStageB,
  TimestepBlock,
  WuerstchenLayerNorm,
  genREmbedding,
} from './models/common';
export { collectTrace } from './models/trace';
export { encodeText, guidance } from './pipelines/shared';
export { checkImageSide, validImageSides } from './pipelines/combined';
export { roundHalfEven, toByte } from './pipelines/images';
export { registerTempFile, writeFileAtomic } from './pipelines/png';
export { LORA_ADAPTER_METADATA_KEY, loraComponents, parseLoraSpec } from './lora';
export { pipelineFolders } from './tiny';
export {
  COLOURS,
  EXTRA_PALETTE,
  HELD_OUT_PAIRS,
  POSITIONS,
  SHAPES,
  SIZES,
  isHeldOut,
  judgeImage,
  nearestColour,
  parseCaption,
  randomScene,
  renderScene,
  sceneCaption,
} from './shapes';
export type { ShapeScene } from './shapes';
