/** The `wuerstchen` package for Node: everything of browser.ts, plus writing image and LoRA files and image variation. */
export * from './browser';
export * from './lora_save';
export * from './pipelines/png';
export * from './pipelines/variation';
