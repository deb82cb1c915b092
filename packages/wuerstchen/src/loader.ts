/**
 * Loading diffusers-format checkpoint folders (diffusers' `save_pretrained` layout): a pipeline folder holds
 * `model_index.json` and one subfolder per component, each with its `config.json`
 * (`scheduler_config.json` for the scheduler) and its weights as single or sharded safetensors,
 * stored as float32, float16 or bfloat16 (upcast exactly to float32 on read).
 *
 * Every check that can be made without reading tensor data is made up front by
 * {@link readModelIndex} / {@link prepareModel}: the folder and files exist, the JSON
 * parses, the class names are the expected ones, and the module built from `config.json` has
 * exactly the keys and shapes of the weights' headers. Problems are reported as a
 * {@link LoaderError} that names the file and says what was expected. The weights themselves are
 * read later, by `PreparedModel.load()` (which does not compare the keys and shapes again), so the
 * pipelines can load and free the networks stage by stage.
 */
import { Checkpoint, FetchRequest, FetchedFolder, Module, NotRegularFileError, openCheckpoint } from '@wuerstchen/core';
import {
  JsonTextError,
  fileStore,
  joinPath,
  parentPath,
  parseStrictJson,
  readTextFile,
  unsafeRelativeName,
} from '@wuerstchen/core/internal';
import { CLIPTextConfig, CLIPTextModel, CLIP_TEXT_SCHEMA, parseCLIPTextConfig } from './models/clip_text';
import {
  ConfigError,
  ConfigSchema,
  ParameterCountError,
  checkParameterCount,
  moduleFits,
  storedParameterCount,
} from './models/config_schema';
import { EfficientNetEncoder, EfficientNetEncoderConfig, parseEfficientNetEncoderConfig } from './models/effnet';
import { DIFFNEXT_SCHEMA, WuerstchenDiffNeXt, WuerstchenDiffNeXtConfig, parseDiffNeXtConfig } from './models/diffnext';
import { PAELLA_VQ_SCHEMA, PaellaVQConfig, PaellaVQModel, parsePaellaVQConfig } from './models/paella_vq';
import { PRIOR_SCHEMA, WuerstchenPrior, WuerstchenPriorConfig, parsePriorConfig } from './models/prior';
import { CLIPTokenizer } from './tokenizer';

/** A folder, file or config problem found while loading; `file` is the path it concerns. */
export class LoaderError extends Error {
  constructor(
    readonly file: string,
    detail: string,
    options?: { cause?: unknown },
  ) {
    super(`${file}: ${detail}`, options);
    this.name = 'LoaderError';
  }
}

// ---------------------------------------------------------------------------------------------------------------
// JSON files

/**
 * Reads a JSON object file; a missing, unreadable or malformed file, or one holding a key twice, is a LoaderError
 * naming it (without quoting its content).
 */
export function readJsonFile(file: string, what: string): Record<string, unknown> {
  if (kindOf(file) === undefined) throw new LoaderError(file, `missing (expected ${what})`);
  let value: unknown;
  try {
    value = parseStrictJson(readTextFile(file));
  } catch (e) {
    if (e instanceof NotRegularFileError) throw new LoaderError(file, `${e.detail} (expected ${what})`);
    if (e instanceof JsonTextError) throw new LoaderError(file, `is not valid JSON (${e.message}); expected ${what}`);
    throw e;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new LoaderError(file, `is not a JSON object (expected ${what})`);
  return value as Record<string, unknown>;
}

/** 'file', 'folder' or undefined; a name no store covers (a URL not fetched, a path in a browser) is a LoaderError. */
function kindOf(name: string): 'file' | 'folder' | undefined {
  try {
    return fileStore(name).kind(name);
  } catch (e) {
    if (e instanceof NotRegularFileError) throw new LoaderError(name, e.detail);
    throw e;
  }
}

function requireDir(dir: string, what: string): void {
  const kind = kindOf(dir);
  if (!kind) throw new LoaderError(dir, `folder not found (expected ${what})`);
  if (kind !== 'folder') throw new LoaderError(dir, `is not a folder (expected ${what})`);
}

// ---------------------------------------------------------------------------------------------------------------
// model_index.json

/** The pipeline classes this project reads and the component class each one needs (the model_index.json of warp-ai/wuerstchen(-prior) and its older revisions). */
export const PIPELINE_COMPONENTS = {
  WuerstchenPriorPipeline: {
    prior: ['WuerstchenPrior'],
    text_encoder: ['CLIPTextModel'],
    tokenizer: ['CLIPTokenizer', 'CLIPTokenizerFast'],
    scheduler: ['DDPMWuerstchenScheduler'],
  },
  WuerstchenDecoderPipeline: {
    decoder: ['WuerstchenDiffNeXt'],
    vqgan: ['PaellaVQModel'],
    text_encoder: ['CLIPTextModel'],
    tokenizer: ['CLIPTokenizer', 'CLIPTokenizerFast'],
    scheduler: ['DDPMWuerstchenScheduler'],
  },
} as const;

export type PipelineClass = keyof typeof PIPELINE_COMPONENTS;

/** Class names of old hub revisions (the model_index.json of warp-ai/wuerstchen(-prior) and its older revisions), with what they became. */
const LEGACY_CLASSES: Record<string, string> = {
  Prior: 'WuerstchenPrior',
  DiffNeXt: 'WuerstchenDiffNeXt',
  VQModelPaella: 'PaellaVQModel',
  WuerstchenGeneratorPipeline: 'WuerstchenDecoderPipeline',
};

export interface ModelIndex {
  file: string;
  className: PipelineClass;
  /** component name → [library, class]. */
  components: Record<string, [string, string]>;
  /** the pipeline's own config (latent_mean, resolution_multiple, latent_dim_scale, ...). */
  config: Record<string, unknown>;
}

function legacyHint(cls: string): string {
  const now = LEGACY_CLASSES[cls];
  return now ? ` ("${cls}" is the name used by an old hub revision; the current diffusers name is ${now})` : '';
}

/** Reads and checks `<dir>/model_index.json` against the expected pipeline class(es). */
export function readModelIndex(dir: string, expected: PipelineClass[]): ModelIndex {
  requireDir(dir, `a diffusers pipeline folder with model_index.json (${expected.join(' or ')})`);
  const file = joinPath(dir, 'model_index.json');
  const json = readJsonFile(file, `the model_index.json of a ${expected.join(' or ')} folder`);
  const cls = json._class_name;
  if (typeof cls !== 'string') throw new LoaderError(file, `has no "_class_name" (expected ${expected.join(' or ')})`);
  if (!(expected as string[]).includes(cls)) {
    const known = Object.keys(PIPELINE_COMPONENTS);
    const why = known.includes(cls)
      ? `this folder holds a ${cls}`
      : `unknown pipeline class "${cls}"${legacyHint(cls)}`;
    throw new LoaderError(file, `${why}; expected ${expected.join(' or ')}`);
  }
  const className = cls as PipelineClass;
  const components: Record<string, [string, string]> = {};
  const config: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(json)) {
    if (key.startsWith('_')) continue;
    if (Array.isArray(value) && value.length === 2 && value.every((v) => typeof v === 'string' || v === null)) {
      components[key] = value as [string, string];
    } else {
      config[key] = value;
    }
  }
  for (const [name, classes] of Object.entries(PIPELINE_COMPONENTS[className])) {
    const entry = components[name];
    if (!entry || entry[1] === null) {
      throw new LoaderError(file, `component "${name}" is not listed (expected "${name}": [library, "${classes[0]}"])`);
    }
    if (!(classes as readonly string[]).includes(entry[1])) {
      throw new LoaderError(
        file,
        `component "${name}" has unknown class "${entry[1]}"${legacyHint(entry[1])}; expected ${classes.join(' or ')}`,
      );
    }
  }
  return { file, className, components, config };
}

/** A number from the pipeline config, or the diffusers default. */
export function indexNumber(index: ModelIndex, key: string, fallback: number): number {
  const v = index.config[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v))
    throw new LoaderError(index.file, `"${key}" must be a number, got ${JSON.stringify(v)}`);
  return v;
}

// ---------------------------------------------------------------------------------------------------------------
// Weights

export interface WeightsOptions {
  /** `fp16`, `bf16`, ...: read `<base>.<variant>.safetensors`. Without it, the plain file is used, or the only variant present. */
  variant?: string;
  /** Load weights holding NaN or ±Infinity (default: a NonFiniteWeightError naming the tensor). */
  allowNonFinite?: boolean;
}

const SAFETENSORS_RE = /^(.+?)(?:\.([A-Za-z0-9_]+))?\.safetensors(?:\.index(?:\.([A-Za-z0-9_]+))?\.json)?$/;

/**
 * Opens the component's checkpoint. Without a variant, a folder that has no plain
 * `<base>.safetensors` (or index) but exactly one variant file (e.g. only `.fp16.safetensors`)
 * uses that one; a folder with only PyTorch `.bin` files is an error that says to convert them.
 */
function openWeights(dir: string, base: string, opts: WeightsOptions): Checkpoint {
  const names = fileStore(dir).list(dir);
  const plain = [`${base}.safetensors`, `${base}.safetensors.index.json`];
  let variant = opts.variant;
  if (variant === undefined && !plain.some((n) => names.includes(n))) {
    const variants = new Set<string>();
    for (const n of names) {
      const m = SAFETENSORS_RE.exec(n);
      if (m && m[1] === base && (m[2] ?? m[3])) variants.add((m[2] ?? m[3])!);
    }
    if (variants.size === 1) variant = [...variants][0];
    else if (variants.size > 1) {
      throw new LoaderError(
        dir,
        `no ${base}.safetensors; found the variants ${[...variants].join(', ')}: choose one with the variant option`,
      );
    } else {
      const bins = names.filter((n) => n.endsWith('.bin'));
      const hint = bins.length
        ? ` (found ${bins.join(', ')}: PyTorch pickles are not read; convert them to safetensors)`
        : '';
      throw new LoaderError(
        joinPath(dir, `${base}.safetensors`),
        `missing (expected the weights as ${plain.join(' or ')})${hint}`,
      );
    }
  }
  try {
    return openCheckpoint(dir, { base, variant });
  } catch (e) {
    const msg = (e as Error).message;
    throw new LoaderError(dir, `cannot read the weights: ${msg}`, { cause: e });
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Models

export type ModelClass =
  'WuerstchenPrior' | 'WuerstchenDiffNeXt' | 'PaellaVQModel' | 'CLIPTextModel' | 'EfficientNetEncoder';

/** A model whose config and weight headers were checked; `load()` reads the weights. */
export interface PreparedModel<M extends Module> {
  className: ModelClass;
  dir: string;
  configFile: string;
  /** the parsed config (for `sizeMultiple`, `scale_factor`, ...). */
  config: M extends { config: infer C } ? C : unknown;
  /** bytes of float32 parameters once loaded. */
  bytes: number;
  /** Builds the module and reads its weights (float32 in memory). */
  load(): M;
}

type ModelOf<C extends ModelClass> = C extends 'WuerstchenPrior'
  ? WuerstchenPrior
  : C extends 'WuerstchenDiffNeXt'
    ? WuerstchenDiffNeXt
    : C extends 'PaellaVQModel'
      ? PaellaVQModel
      : C extends 'EfficientNetEncoder'
        ? EfficientNetEncoder
        : CLIPTextModel;

/** Class name declared by a component config (`_class_name`, or transformers' `architectures[0]`). */
function declaredClass(json: Record<string, unknown>): string | undefined {
  if (typeof json._class_name === 'string') return json._class_name;
  if (Array.isArray(json.architectures) && typeof json.architectures[0] === 'string') return json.architectures[0];
  if (json.model_type === 'clip_text_model') return 'CLIPTextModel';
  return undefined;
}

type ModelConfig =
  WuerstchenPriorConfig | WuerstchenDiffNeXtConfig | PaellaVQConfig | CLIPTextConfig | EfficientNetEncoderConfig;

/** Checks a config's types, ranges and list lengths; nothing is built yet. */
function parseModelConfig(cls: ModelClass, json: Record<string, unknown>, file: string): ModelConfig {
  try {
    switch (cls) {
      case 'WuerstchenPrior':
        return parsePriorConfig(json, file);
      case 'WuerstchenDiffNeXt':
        return parseDiffNeXtConfig(json, file);
      case 'PaellaVQModel':
        return parsePaellaVQConfig(json, file);
      case 'CLIPTextModel':
        return parseCLIPTextConfig(json, file);
      case 'EfficientNetEncoder':
        return parseEfficientNetEncoderConfig(json, file);
    }
  } catch (e) {
    if (e instanceof ConfigError) throw new LoaderError(file, e.reason, { cause: e });
    throw new LoaderError(file, (e as Error).message.replace(`${file}: `, ''), { cause: e });
  }
}

function build(cls: ModelClass, config: ModelConfig): Module {
  switch (cls) {
    case 'WuerstchenPrior':
      return new WuerstchenPrior(config as WuerstchenPriorConfig);
    case 'WuerstchenDiffNeXt':
      return new WuerstchenDiffNeXt(config as WuerstchenDiffNeXtConfig);
    case 'PaellaVQModel':
      return new PaellaVQModel(config as PaellaVQConfig);
    case 'CLIPTextModel':
      return new CLIPTextModel(config as CLIPTextConfig);
    case 'EfficientNetEncoder':
      return new EfficientNetEncoder(config as EfficientNetEncoderConfig);
  }
}

/** Models whose parameter count is known from the config alone, checked against the weights before building. */
const SCHEMAS: Partial<Record<ModelClass, ConfigSchema<object>>> = {
  WuerstchenPrior: PRIOR_SCHEMA as ConfigSchema<object>,
  WuerstchenDiffNeXt: DIFFNEXT_SCHEMA as ConfigSchema<object>,
  PaellaVQModel: PAELLA_VQ_SCHEMA as ConfigSchema<object>,
  CLIPTextModel: CLIP_TEXT_SCHEMA as ConfigSchema<object>,
};

/**
 * Compares the config's parameter count with the weights' headers, before building the module. A field that alone
 * explains a difference is a LoaderError naming it; otherwise the count becomes the first line of the key-by-key
 * comparison (the module is then built, within the config's caps, to list the keys).
 */
function checkCount(cls: ModelClass, config: ModelConfig, configFile: string, ckpt: Checkpoint): string | undefined {
  const schema = SCHEMAS[cls];
  if (schema === undefined) return undefined;
  const weights = ckpt.files.length === 1 ? ckpt.files[0] : parentPath(configFile);
  try {
    const found = storedParameterCount(ckpt, ignoredKeys(cls));
    const fits = (candidate: object) => moduleFits(() => build(cls, candidate as ModelConfig), ckpt, ignoredKeys(cls));
    checkParameterCount(schema, config, configFile, found, weights, fits);
    return undefined;
  } catch (e) {
    if (!(e instanceof ParameterCountError)) throw e;
    if (e.explanations.length) throw new LoaderError(configFile, e.reason, { cause: e });
    return e.reason;
  }
}

const KNOWN_MODELS: ModelClass[] = [
  'WuerstchenPrior',
  'WuerstchenDiffNeXt',
  'PaellaVQModel',
  'CLIPTextModel',
  'EfficientNetEncoder',
];

/** Keys in a checkpoint that are not parameters and are skipped (e.g. CLIP's `position_ids`). */
function ignoredKeys(cls: ModelClass): ((k: string) => boolean) | undefined {
  return cls === 'CLIPTextModel' ? CLIPTextModel.ignoredKeys : undefined;
}

/**
 * Checks a component folder (`config.json` + weights) without reading tensor data. `expected`
 * is the class the pipeline needs; without it, any known model class is accepted.
 */
export function prepareModel<C extends ModelClass>(
  dir: string,
  expected?: C,
  opts: WeightsOptions = {},
): PreparedModel<ModelOf<C>> {
  requireDir(dir, `a ${expected ?? 'model'} folder with config.json and safetensors weights`);
  const configFile = joinPath(dir, 'config.json');
  const json = readJsonFile(configFile, `the ${expected ?? 'model'} config`);
  const declared = declaredClass(json);
  const cls = (expected ?? declared) as ModelClass | undefined;
  if (declared === undefined && expected === undefined)
    throw new LoaderError(configFile, `has no "_class_name" (expected one of ${KNOWN_MODELS.join(', ')})`);
  if (
    declared !== undefined &&
    (!KNOWN_MODELS.includes(declared as ModelClass) || (expected && declared !== expected))
  ) {
    throw new LoaderError(
      configFile,
      `unknown class "${declared}"${legacyHint(declared)}; expected ${expected ?? KNOWN_MODELS.join(', ')}`,
    );
  }
  const base = cls === 'CLIPTextModel' ? 'model' : 'diffusion_pytorch_model';
  const config = parseModelConfig(cls!, json, configFile);
  const ckpt = openWeights(dir, base, opts);
  let module: Module;
  let checkedKeys: string[];
  try {
    const countNote = checkCount(cls!, config, configFile, ckpt);
    module = build(cls!, config);
    checkedKeys = module.checkStateDict(ckpt, {
      ignore: ignoredKeys(cls!),
      source: weightsName(ckpt, dir),
      against: configFile,
      preface: countNote,
    });
  } finally {
    ckpt.close();
  }
  const { variant, allowNonFinite } = opts;
  const weights: CheckedWeights = { variant, allowNonFinite, dir, base, configFile, checkedKeys };
  return {
    className: cls!,
    dir,
    configFile,
    config: (module as unknown as { config: unknown }).config as PreparedModel<ModelOf<C>>['config'],
    bytes: module.numParameters() * 4,
    load: () => loadModelFrom(build(cls!, config), weights) as unknown as ModelOf<C>,
  };
}

/** The weights file, or the folder of a sharded checkpoint, for error messages. */
function weightsName(ckpt: Checkpoint, dir: string): string {
  return ckpt.files.length === 1 ? ckpt.files[0] : dir;
}

/** Weights whose keys and shapes prepareModel compared with the module's. */
interface CheckedWeights extends WeightsOptions {
  dir: string;
  base: string;
  configFile: string;
  checkedKeys: string[];
}

/** Reads checked weights into `module` (their keys and shapes are not compared again). */
function loadModelFrom<M extends Module>(module: M, w: CheckedWeights): M {
  const ckpt = openWeights(w.dir, w.base, w);
  try {
    module.loadStateDict(ckpt, {
      checkedKeys: w.checkedKeys,
      source: weightsName(ckpt, w.dir),
      against: w.configFile,
      allowNonFinite: w.allowNonFinite,
    });
  } catch (e) {
    module.dispose();
    throw e;
  } finally {
    ckpt.close();
  }
  return module.eval();
}

/** Loads a model folder (`config.json` + weights), e.g. `.../prior` or `.../text_encoder`. */
export function loadModel<C extends ModelClass>(dir: string, expected?: C, opts: WeightsOptions = {}): ModelOf<C> {
  return prepareModel(dir, expected, opts).load();
}

/** Loads a tokenizer folder; errors name the folder. */
export function loadTokenizer(dir: string): CLIPTokenizer {
  requireDir(dir, 'a CLIP tokenizer folder (vocab.json, merges.txt)');
  for (const f of ['vocab.json', 'merges.txt']) {
    if (kindOf(joinPath(dir, f)) === undefined && kindOf(joinPath(dir, 'tokenizer.json')) === undefined) {
      throw new LoaderError(
        joinPath(dir, f),
        'missing (expected the CLIP BPE vocabulary: vocab.json + merges.txt, or tokenizer.json)',
      );
    }
  }
  try {
    return CLIPTokenizer.fromPretrained(dir);
  } catch (e) {
    throw new LoaderError(dir, `cannot read the tokenizer: ${(e as Error).message}`, { cause: e });
  }
}

/** Checks `scheduler/scheduler_config.json` and returns it. */
export function readSchedulerConfig(dir: string): Record<string, unknown> {
  requireDir(dir, 'a scheduler folder with scheduler_config.json');
  const file = joinPath(dir, 'scheduler_config.json');
  const json = readJsonFile(file, 'the DDPMWuerstchenScheduler config');
  if (json._class_name !== undefined && json._class_name !== 'DDPMWuerstchenScheduler') {
    throw new LoaderError(file, `unknown class "${String(json._class_name)}"; expected DDPMWuerstchenScheduler`);
  }
  for (const k of ['s', 'scaler']) {
    if (json[k] !== undefined && !(typeof json[k] === 'number' && Number.isFinite(json[k] as number))) {
      throw new LoaderError(file, `"${k}" must be a number, got ${JSON.stringify(json[k])}`);
    }
  }
  return json;
}

// ---------------------------------------------------------------------------------------------------------------
// Pipeline folders at a URL

/** The weights file name of a model component (`model` for transformers' text encoder, else diffusers' name). */
function weightsBase(component: string): string {
  return component === 'text_encoder' ? 'model' : 'diffusion_pytorch_model';
}

/** What a component folder holds besides its weights (an HTTP server cannot list a folder, so this is fixed). */
function componentFiles(component: string): FetchRequest[] {
  if (component === 'tokenizer') {
    return [
      { rel: 'tokenizer/vocab.json', what: 'the CLIP BPE vocabulary' },
      { rel: 'tokenizer/merges.txt', what: 'the CLIP BPE merges' },
      { rel: 'tokenizer/tokenizer_config.json', optional: true },
      { rel: 'tokenizer/special_tokens_map.json', optional: true },
    ];
  }
  if (component === 'scheduler')
    return [{ rel: 'scheduler/scheduler_config.json', what: 'the DDPMWuerstchenScheduler config' }];
  return [{ rel: `${component}/config.json`, what: `the ${component} config` }];
}

/**
 * Fetches a diffusers pipeline folder from `baseUrl` into memory (fetch works in browsers and in Node ≥ 18), so
 * that `fromPretrained(baseUrl)` reads it like a folder on disk. Weights are `<base>[.<variant>].safetensors`, else
 * its shard index and the shards it names. A failed request names the URL and what was expected.
 */
export async function fetchPipelineFolder(
  baseUrl: string,
  expected: PipelineClass,
  opts: WeightsOptions = {},
): Promise<FetchedFolder> {
  const folder = new FetchedFolder(baseUrl);
  try {
    await folder.fetch([{ rel: 'model_index.json', what: `the model_index.json of a ${expected} folder` }]);
    readModelIndex(folder.baseUrl, [expected]);
    const components = Object.keys(PIPELINE_COMPONENTS[expected]);
    const models = components.filter((c) => c !== 'tokenizer' && c !== 'scheduler');
    await folder.fetch(components.flatMap(componentFiles));
    await Promise.all(models.map((c) => fetchWeights(folder, c, opts.variant)));
    return folder;
  } catch (e) {
    folder.release();
    throw e;
  }
}

async function fetchWeights(folder: FetchedFolder, component: string, variant: string | undefined): Promise<void> {
  const base = `${component}/${weightsBase(component)}`;
  const single = variant === undefined ? `${base}.safetensors` : `${base}.${variant}.safetensors`;
  await folder.fetch([{ rel: single, optional: true }]);
  if (folder.kind(folder.url(single)) === 'file') return;
  const index = variant === undefined ? `${base}.safetensors.index.json` : `${base}.safetensors.index.${variant}.json`;
  await folder.fetch([{ rel: index, what: `the ${component} weights as ${single} or its shard index` }]);
  const weightMap = readJsonFile(folder.url(index), 'a safetensors shard index').weight_map;
  const shards = new Set(typeof weightMap === 'object' && weightMap !== null ? Object.values(weightMap) : []);
  for (const shard of shards) {
    const why = typeof shard === 'string' ? unsafeRelativeName(shard) : 'is not a string';
    if (why !== undefined)
      throw new LoaderError(
        folder.url(index),
        `shard name ${JSON.stringify(shard)} ${why}; an index may only name files in its own folder`,
      );
  }
  await folder.fetch(
    [...shards].map((shard) => ({ rel: `${component}/${shard as string}`, what: `a shard named by ${index}` })),
  );
}

// ---------------------------------------------------------------------------------------------------------------
// Lazily loaded components

/**
 * A network that is loaded on first use and can be freed again, so a pipeline holds only the
 * networks of the stage it is running. `ModelHandle.of(model)` wraps a model the caller owns: it
 * is never freed by the pipeline.
 */
export class ModelHandle<M extends Module> {
  private model: M | null;
  private constructor(
    private readonly loader: (() => M) | null,
    model: M | null,
    /** bytes of float32 parameters. */
    readonly bytes: number,
    /** the model's parsed config, known before it is loaded (for size and memory estimates). */
    readonly config: PreparedModel<M>['config'],
  ) {
    this.model = model;
  }

  /** Loads from a checked folder on first use; `release()` frees it. */
  static lazy<M extends Module>(prepared: PreparedModel<M>): ModelHandle<M> {
    return new ModelHandle(() => prepared.load(), null, prepared.bytes, prepared.config);
  }

  /** A model that stays owned by the caller. */
  static of<M extends Module>(model: M): ModelHandle<M> {
    return new ModelHandle<M>(
      null,
      model,
      model.numParameters() * 4,
      (model as unknown as { config: PreparedModel<M>['config'] }).config,
    );
  }

  /** A handle as is; a model as `of(model)`. */
  static from<M extends Module>(model: M | ModelHandle<M>): ModelHandle<M> {
    return model instanceof ModelHandle ? model : ModelHandle.of(model);
  }

  /** true for a handle that loads (and frees) the model itself. */
  get owned(): boolean {
    return this.loader !== null;
  }

  get loaded(): boolean {
    return this.model !== null;
  }

  get(): M {
    if (!this.model) this.model = this.loader!();
    return this.model;
  }

  /** Frees the weights of an owned model (read again on the next `get()`); no-op for `of(model)`. */
  release(): void {
    if (!this.loader) return;
    this.model?.dispose();
    this.model = null;
  }
}
