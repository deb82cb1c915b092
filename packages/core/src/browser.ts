/**
 * `@wuerstchen/core` for browsers: everything but the Node-only parts (backend selection with the native addon,
 * the disk, writing files). Model files are read from URL folders fetched with {@link FetchedFolder}.
 */
export * from './host_tensor';
export * from './module';
export * from './layers';
export * from './layout';
export * from './safetensors_read';
export * from './strict_json';
export * from './files';
