export * from './linear';
export * from './conv';
export * from './norm';
export * from './activation';
export * from './shuffle';
export * from './attention';
export * from './embedding';
export * from './resize';
