/**
 * The public API of each package entry, pinned: adding a name to (or removing one from) an entry must be a deliberate
 * change of these lists. Helpers that only the project's own packages, tools and tests need go to the `internal`
 * entries, which are not part of the API. Values are what the entry exports at run time; types are the names of its
 * `export type { … }` declarations (they leave nothing at run time).
 */
import * as fs from 'fs';
import * as path from 'path';
import * as ts from 'typescript';
import * as core from '@wuerstchen/core';
import * as coreInternal from '@wuerstchen/core/internal';
import * as coreBrowser from '../packages/core/src/browser';
import * as wuerstchen from 'wuerstchen';
import * as wuerstchenInternal from 'wuerstchen/internal';
import * as wuerstchenBrowser from '../packages/wuerstchen/src/browser';
import * as train from '@wuerstchen/train';
import * as trainInternal from '@wuerstchen/train/internal';

const SRC = path.resolve(__dirname, '../packages');

const CORE_BROWSER_VALUES = [
  'Activation',
  'Attention',
  'BatchNorm2d',
  'ChannelLayerNorm',
  'Conv2d',
  'ConvTranspose2d',
  'DEFAULT_LORA_TARGETS',
  'Dropout',
  'Embedding',
  'FetchedFolder',
  'GELU',
  'GlobalResponseNorm',
  'Identity',
  'LayerNorm',
  'LeakyReLU',
  'Linear',
  'LoraAdapter',
  'LoraError',
  'LoraNetwork',
  'Module',
  'ModuleList',
  'NonFiniteWeightError',
  'NotRegularFileError',
  'Parameter',
  'PixelShuffle',
  'PixelUnshuffle',
  'SafetensorsError',
  'Sequential',
  'SiLU',
  'StateDictError',
  'addFileStore',
  'init',
  'loadSafetensors',
  'openCheckpoint',
  'openSafetensors',
];
const CORE_BROWSER_TYPES = [
  'ActivationName',
  'AttentionOptions',
  'Callable',
  'Checkpoint',
  'CheckpointOptions',
  'Conv2dOptions',
  'FetchRequest',
  'FileStore',
  'HostData',
  'HostTensor',
  'Init',
  'Layer',
  'Layout',
  'LoadOptions',
  'LoraConfig',
  'LoraTarget',
  'LoraTensors',
  'OutputDelta',
  'PaddingMode',
  'ParameterOptions',
  'RandomAccessFile',
  'SafetensorsDtype',
  'SafetensorsFile',
  'ShapeMismatch',
  'StateDictCheck',
  'StateDictComparison',
  'TensorInfo',
  'TensorReader',
  'TensorSource',
];
const CORE_NODE_VALUES = [
  ...CORE_BROWSER_VALUES,
  'BACKENDS',
  'BackendUnavailableError',
  'UnknownBackendError',
  'useBackend',
  'writeSafetensors',
];
const CORE_NODE_TYPES = [...CORE_BROWSER_TYPES, 'BackendName'];

const WUERSTCHEN_BROWSER_VALUES = [
  'CLIPTextModel',
  'CLIPTokenizer',
  'ConfigError',
  'DDPMWuerstchenScheduler',
  'DEFAULT_STAGE_C_TIMESTEPS',
  'EfficientNetEncoder',
  'Generator',
  'LORA_WEIGHT_NAME',
  'LoaderError',
  'ModelHandle',
  'NonFiniteImageError',
  'PaellaVQModel',
  'PipelineArgumentError',
  'TINY_MODEL',
  'TINY_MODEL_DIR',
  'WuerstchenCombinedPipeline',
  'WuerstchenDecoderPipeline',
  'WuerstchenDiffNeXt',
  'WuerstchenPrior',
  'WuerstchenPriorPipeline',
  'decodePng',
  'encodePng',
  'loadLoraFile',
  'loadModel',
  'parseCLIPTextConfig',
  'parseDiffNeXtConfig',
  'parseEfficientNetEncoderConfig',
  'parsePaellaVQConfig',
  'parsePriorConfig',
  'prepareModel',
  'readLoraFile',
  'tensorToImages',
  'tensorToPng',
];
const WUERSTCHEN_BROWSER_TYPES = [
  'CLIPTextConfig',
  'CLIPTextForwardOptions',
  'CLIPTextOutput',
  'CLIPTokenizerCallOptions',
  'CLIPTokenizerData',
  'CLIPTokenizerOutput',
  'CombinedCallOptions',
  'CombinedOutput',
  'DDPMWuerstchenSchedulerConfig',
  'DecoderCallOptions',
  'DecoderOutput',
  'DecoderPipelineConfig',
  'EfficientNetEncoderConfig',
  'GeneratorState',
  'LoraComponent',
  'LoraStack',
  'ModelClass',
  'OutputType',
  'PaellaVQConfig',
  'PipelineComponents',
  'PipelineLoadOptions',
  'PreparedModel',
  'PriorCallOptions',
  'PriorOutput',
  'PriorPipelineConfig',
  'ProgressCallback',
  'ProgressEvent',
  'ProgressStage',
  'RawImage',
  'SamplingOptions',
  'SpecialTokens',
  'StepOptions',
  'StepOutput',
  'TextComponents',
  'TimestepsInput',
  'VQOutput',
  'WeightsOptions',
  'WuerstchenDiffNeXtConfig',
  'WuerstchenPriorConfig',
];
const WUERSTCHEN_NODE_VALUES = [...WUERSTCHEN_BROWSER_VALUES, 'WuerstchenVariationPipeline', 'saveLoraFile'];
const WUERSTCHEN_NODE_TYPES = [...WUERSTCHEN_BROWSER_TYPES, 'VariationCallOptions', 'VariationInput'];

const TRAIN_VALUES = [
  'CheckpointError',
  'ConfigError',
  'DatasetError',
  'DecoderLoraTrainer',
  'ExportError',
  'ImageTextDataset',
  'PriorLoraTrainer',
  'StageATrainer',
  'StageBTrainer',
  'StageCTrainer',
  'TrainError',
  'Trainer',
  'createLoraTrainer',
  'createTrainer',
  'exportPipelines',
  'loadConfig',
  'loraTrainConfig',
  'makeShapes',
  'parseConfig',
  'readLatest',
];
const TRAIN_TYPES = [
  'DatasetOptions',
  'ExportOptions',
  'LoraRunOptions',
  'LoraSettings',
  'LoraTrainer',
  'MakeShapesOptions',
  'OptimizerConfig',
  'PhaseConfig',
  'RunSummary',
  'Sample',
  'Stage',
  'StepMetrics',
  'TrainConfig',
  'TrainOptions',
];

/** The names of an entry file's `export type { … }` declarations. */
function typeExports(file: string): string[] {
  const source = ts.createSourceFile(file, fs.readFileSync(file, 'utf8'), ts.ScriptTarget.ES2022);
  return source.statements.flatMap((s) =>
    ts.isExportDeclaration(s) && s.isTypeOnly && s.exportClause && ts.isNamedExports(s.exportClause)
      ? s.exportClause.elements.map((e) => e.name.text)
      : [],
  );
}

const sorted = (names: string[]) => [...names].sort();

const ENTRIES: [string, object, string, string[], string[]][] = [
  ['@wuerstchen/core', core, 'core/src/index.ts', CORE_NODE_VALUES, CORE_NODE_TYPES],
  ['@wuerstchen/core (browser)', coreBrowser, 'core/src/browser.ts', CORE_BROWSER_VALUES, CORE_BROWSER_TYPES],
  ['wuerstchen', wuerstchen, 'wuerstchen/src/index.ts', WUERSTCHEN_NODE_VALUES, WUERSTCHEN_NODE_TYPES],
  [
    'wuerstchen (browser)',
    wuerstchenBrowser,
    'wuerstchen/src/browser.ts',
    WUERSTCHEN_BROWSER_VALUES,
    WUERSTCHEN_BROWSER_TYPES,
  ],
  ['@wuerstchen/train', train, 'train/src/index.ts', TRAIN_VALUES, TRAIN_TYPES],
];

test.each(ENTRIES)('%s exports exactly its pinned public names', (_name, module, file, values, types) => {
  expect(sorted(Object.keys(module))).toEqual(sorted(values));
  expect(sorted(typeExports(path.join(SRC, file)))).toEqual(sorted(types));
});

test.each([
  ['@wuerstchen/core/internal', coreInternal, core, 'core/src/internal.ts', 'core/src/index.ts'],
  ['wuerstchen/internal', wuerstchenInternal, wuerstchen, 'wuerstchen/src/internal.ts', 'wuerstchen/src/index.ts'],
  ['@wuerstchen/train/internal', trainInternal, train, 'train/src/internal.ts', 'train/src/index.ts'],
])('%s holds only names the public entry does not', (_name, internal, pub, internalFile, pubFile) => {
  const publicNames = new Set([...Object.keys(pub), ...typeExports(path.join(SRC, pubFile))]);
  const internalNames = [...Object.keys(internal), ...typeExports(path.join(SRC, internalFile))];
  expect(internalNames.length).toBeGreaterThan(0);
  expect(internalNames.filter((n) => publicNames.has(n))).toEqual([]);
});
