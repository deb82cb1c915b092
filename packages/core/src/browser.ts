/**
 * `@wuerstchen/core` for browsers: the module system and layers, safetensors reading and file stores, without the
 * Node-only parts (backend selection with the native addon, the disk, writing files). Model files are read from URL
 * folders fetched with {@link FetchedFolder}. Helpers for this project's own packages are in `./internal`.
 */
export { Module, ModuleList, NonFiniteWeightError, Parameter, Sequential, StateDictError, init } from './module';
export type {
  Callable,
  Init,
  Layer,
  Layout,
  LoadOptions,
  ParameterOptions,
  ShapeMismatch,
  StateDictCheck,
  StateDictComparison,
  TensorSource,
} from './module';
export type { HostData, HostTensor, SafetensorsDtype } from './host_tensor';
export {
  Activation,
  Attention,
  BatchNorm2d,
  ChannelLayerNorm,
  Conv2d,
  ConvTranspose2d,
  DEFAULT_LORA_TARGETS,
  Dropout,
  Embedding,
  GELU,
  GlobalResponseNorm,
  Identity,
  LayerNorm,
  LeakyReLU,
  Linear,
  LoraAdapter,
  LoraError,
  LoraNetwork,
  PixelShuffle,
  PixelUnshuffle,
  SiLU,
} from './layers';
export type {
  ActivationName,
  AttentionOptions,
  Conv2dOptions,
  LoraConfig,
  LoraTarget,
  LoraTensors,
  OutputDelta,
  PaddingMode,
} from './layers';
export { SafetensorsError, loadSafetensors, openCheckpoint, openSafetensors } from './safetensors_read';
export type { Checkpoint, CheckpointOptions, SafetensorsFile, TensorInfo, TensorReader } from './safetensors_read';
export { FetchedFolder, NotRegularFileError, addFileStore } from './files';
export type { FetchRequest, FileStore, RandomAccessFile } from './files';
