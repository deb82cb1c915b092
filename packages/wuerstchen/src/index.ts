/** The `wuerstchen` package: models, tokenizer, scheduler, generator, loader, pipelines. */
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
export * from './pipelines/shared';
export * from './pipelines/progress';
export * from './pipelines/png';
export * from './pipelines/prior';
export * from './pipelines/decoder';
export * from './pipelines/combined';
