/** `@wuerstchen/core` for Node: the browser-safe parts, plus backend selection, files on disk and file writing. */
export * from './browser';
export * from './backend';
export * from './regular_file';
export * from './disk';
export * from './safetensors';
