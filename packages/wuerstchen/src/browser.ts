/**
 * The `wuerstchen` package for browsers: pipelines, models, tokenizer, scheduler, generator, loader and LoRA files,
 * with model folders fetched from URLs (`WuerstchenCombinedPipeline.fromUrl`). index.ts adds the Node-only parts;
 * helpers for this project's own packages are in `./internal`.
 */
export { WuerstchenCombinedPipeline } from './pipelines/combined';
export type { CombinedCallOptions, CombinedOutput } from './pipelines/combined';
export { WuerstchenPriorPipeline } from './pipelines/prior';
export type { PriorCallOptions, PriorOutput, PriorPipelineConfig } from './pipelines/prior';
export { WuerstchenDecoderPipeline } from './pipelines/decoder';
export type { DecoderCallOptions, DecoderOutput, DecoderPipelineConfig, OutputType } from './pipelines/decoder';
export { PipelineArgumentError } from './pipelines/shared';
export type { PipelineComponents, PipelineLoadOptions, SamplingOptions, TextComponents } from './pipelines/shared';
export type { ProgressCallback, ProgressEvent, ProgressStage } from './pipelines/progress';
export { NonFiniteImageError, decodePng, encodePng, tensorToImages, tensorToPng } from './pipelines/images';
export type { RawImage } from './pipelines/images';
export { LoaderError, ModelHandle, loadModel, prepareModel } from './loader';
export type { ModelClass, PreparedModel, WeightsOptions } from './loader';
export { ConfigError } from './models/config_schema';
export { WuerstchenPrior, parsePriorConfig } from './models/prior';
export type { WuerstchenPriorConfig } from './models/prior';
export { WuerstchenDiffNeXt, parseDiffNeXtConfig } from './models/diffnext';
export type { WuerstchenDiffNeXtConfig } from './models/diffnext';
export { PaellaVQModel, parsePaellaVQConfig } from './models/paella_vq';
export type { PaellaVQConfig, VQOutput } from './models/paella_vq';
export { CLIPTextModel, parseCLIPTextConfig } from './models/clip_text';
export type { CLIPTextConfig, CLIPTextForwardOptions, CLIPTextOutput } from './models/clip_text';
export { EfficientNetEncoder, parseEfficientNetEncoderConfig } from './models/effnet';
export type { EfficientNetEncoderConfig } from './models/effnet';
export { CLIPTokenizer } from './tokenizer';
export type { CLIPTokenizerCallOptions, CLIPTokenizerData, CLIPTokenizerOutput, SpecialTokens } from './tokenizer';
export { DDPMWuerstchenScheduler, DEFAULT_STAGE_C_TIMESTEPS } from './scheduler';
export type { DDPMWuerstchenSchedulerConfig, StepOptions, StepOutput, TimestepsInput } from './scheduler';
export { Generator } from './rng';
export type { GeneratorState } from './rng';
export { LORA_WEIGHT_NAME, loadLoraFile, readLoraFile } from './lora';
export type { LoraComponent, LoraStack } from './lora';
export { TINY_MODEL, TINY_MODEL_DIR } from './tiny';
