export * from './host_tensor';
export * from './module';
export * from './layers';
export * from './backend';
export * from './layout';
export * from './safetensors';
export * from './regular_file';
export * from './strict_json';
