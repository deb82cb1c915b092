/**
 * The `wuerstchen` package for browsers: models, tokenizer, scheduler, generator, loader, pipelines, with model
 * folders fetched from URLs (`WuerstchenCombinedPipeline.fromUrl`). index.ts adds the Node-only parts.
 */
export * from './models/config_schema';
export * from './models/common';
export * from './models/prior';
export * from './models/diffnext';
export * from './models/paella_vq';
export * from './models/effnet';
export * from './models/clip_text';
export * from './models/trace';
export * from './tokenizer';
export * from './scheduler';
export * from './rng';
export * from './loader';
export * from './lora';
export * from './pipelines/shared';
export * from './pipelines/progress';
export * from './pipelines/images';
export * from './pipelines/prior';
export * from './pipelines/decoder';
export * from './pipelines/combined';
export * from './pipelines/memory';
export * from './shapes';
export * from './tiny';
