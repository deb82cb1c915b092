/**
 * The options of `wuerstchen generate` and `wuerstchen vary`, read with the shared command-line parser and
 * checked before anything loads: values, folders, limits and the output files. Every problem is a UsageError.
 */
import * as fs from 'fs';
import * as path from 'path';
import { BACKENDS } from '@wuerstchen/core';
import {
  OptionSpecs,
  ParsedOptions,
  UsageError,
  parseCommandLine,
  readChoice,
  readInteger,
  readNumber,
} from '@wuerstchen/core/cli';
import { limitProblem, outputProblem } from './cli_checks';
import { loraFile, parseLoraSpec } from './lora';
import { COMBINED_CALL_DEFAULTS } from './pipelines/combined';
import { TINY_MODEL, TINY_MODEL_DIR, pipelineFolders } from './tiny';

export type Command = 'generate' | 'vary';

export interface GenerateArgs {
  prior: string;
  decoder: string;
  /** the folder given with --model (holding wuerstchen-prior/ and wuerstchen/). */
  model?: string;
  /** true when no folder was given and the bundled tiny model is used. */
  bundled: boolean;
  prompts: string[];
  negativePrompt?: string;
  width: number;
  height: number;
  priorSteps: number;
  decoderSteps: number;
  priorGuidance: number;
  decoderGuidance: number;
  images: number;
  seed?: number;
  backend?: string;
  variant?: string;
  keepLoaded: boolean;
  /** refuse runs whose estimated peak memory is above this many MiB (default: the machine's memory). */
  maxMemoryMiB?: number;
  allowNonFinite: boolean;
  /** --lora files (prior and/or decoder adapters), in order. */
  loras: { file: string; scale: number }[];
  out: string;
  /** `vary`: the input picture and how far the prior may move it (0: decode its own compressor map). */
  image?: string;
  strength: number;
}

const SHARED_OPTIONS: OptionSpecs = {
  model: { kind: 'string' },
  prompt: { kind: 'list', allowEmpty: true },
  'negative-prompt': { kind: 'string', allowEmpty: true },
  width: { kind: 'string' },
  height: { kind: 'string' },
  'prior-steps': { kind: 'string' },
  'decoder-steps': { kind: 'string' },
  'prior-guidance': { kind: 'string' },
  'decoder-guidance': { kind: 'string' },
  images: { kind: 'string' },
  seed: { kind: 'string' },
  backend: { kind: 'string' },
  variant: { kind: 'string' },
  'keep-loaded': { kind: 'flag' },
  'max-memory': { kind: 'string' },
  'allow-nonfinite': { kind: 'flag' },
  out: { kind: 'string' },
};

/** The options of each command. */
export const COMMAND_OPTIONS: Record<Command, OptionSpecs> = {
  generate: { ...SHARED_OPTIONS, prior: { kind: 'string' }, decoder: { kind: 'string' }, lora: { kind: 'list' } },
  vary: { ...SHARED_OPTIONS, image: { kind: 'string' }, strength: { kind: 'string' } },
};

/** Parses the options of `generate` (or `vary`); `--help` and `--version` are main()'s to answer. */
export function parseGenerateArgs(argv: string[], command: Command = 'generate'): GenerateArgs {
  const line = parseCommandLine(argv, COMMAND_OPTIONS[command]);
  if (line.request !== 'run') throw new UsageError(`--${line.request} stands alone`);
  return generateArgs(line.options, command);
}

/** Checks the parsed options of `command` and fills in the defaults. */
export function generateArgs(o: ParsedOptions, command: Command): GenerateArgs {
  const int = (name: string, min: 0 | 1) => (o.has(name) ? readInteger(`--${name}`, o.string(name)!, min) : undefined);
  const num = (name: string) => (o.has(name) ? readNumber(`--${name}`, o.string(name)!, { min: 0 }) : undefined);
  // values first: a malformed one is the problem to report, even when something else is missing too
  const given = {
    width: int('width', 1),
    height: int('height', 1),
    priorSteps: int('prior-steps', 1),
    decoderSteps: int('decoder-steps', 1),
    priorGuidance: num('prior-guidance'),
    decoderGuidance: num('decoder-guidance'),
    images: int('images', 1),
    seed: int('seed', 0),
    maxMemoryMiB: int('max-memory', 1),
    strength: num('strength'),
    backend: o.has('backend') ? readChoice('--backend', o.string('backend')!, BACKENDS) : undefined,
  };
  o.require(command === 'vary' ? ['image', 'out'] : ['prompt', 'out']);
  const model = o.string('model');
  if (model !== undefined && (o.has('prior') || o.has('decoder')))
    throw new UsageError('--model replaces --prior and --decoder; give one or the other');
  if (o.has('prior') !== o.has('decoder')) {
    throw new UsageError(
      `${o.has('prior') ? '--decoder' : '--prior'} is missing (give both folders, or --model, or neither for the bundled model)`,
    );
  }
  const bundled = model === undefined && !o.has('prior');
  const folders = o.has('prior') ? { prior: o.string('prior')!, decoder: o.string('decoder')! } : modelFolders(model);
  const out = o.string('out')!;
  if (!out.toLowerCase().endsWith('.png'))
    throw new UsageError(`--out must name a .png file, got ${JSON.stringify(out)}`);
  for (const opt of ['prior', 'decoder'] as const) checkFolder(opt, folders[opt], model, bundled);
  const args: GenerateArgs = {
    ...folders,
    model,
    bundled,
    prompts: o.list('prompt'),
    negativePrompt: o.string('negative-prompt'),
    width: given.width ?? (bundled ? TINY_MODEL.width : COMBINED_CALL_DEFAULTS.width),
    height: given.height ?? (bundled ? TINY_MODEL.height : COMBINED_CALL_DEFAULTS.height),
    priorSteps: given.priorSteps ?? (bundled ? TINY_MODEL.priorSteps : COMBINED_CALL_DEFAULTS.priorNumInferenceSteps),
    decoderSteps: given.decoderSteps ?? COMBINED_CALL_DEFAULTS.numInferenceSteps,
    priorGuidance: given.priorGuidance ?? COMBINED_CALL_DEFAULTS.priorGuidanceScale,
    decoderGuidance: given.decoderGuidance ?? COMBINED_CALL_DEFAULTS.decoderGuidanceScale,
    images: given.images ?? 1,
    seed: given.seed,
    backend: given.backend,
    variant: o.string('variant'),
    keepLoaded: o.flag('keep-loaded'),
    maxMemoryMiB: given.maxMemoryMiB,
    allowNonFinite: o.flag('allow-nonfinite'),
    loras: o.list('lora').map(readLora),
    out,
    image: o.string('image'),
    strength: given.strength ?? 0,
  };
  if (command === 'vary') {
    if (args.strength > 1) throw new UsageError(`--strength must be in [0, 1], got ${args.strength}`);
    if (!fs.statSync(args.image!, { throwIfNoEntry: false })?.isFile())
      throw new UsageError(`--image: ${args.image} is not a file`);
    if (args.prompts.length > 1) throw new UsageError('vary takes at most one --prompt');
  }
  const prompts = command === 'vary' ? 1 : args.prompts.length;
  const count = prompts * args.images;
  const problem =
    limitProblem({ ...args, prompts }) ??
    outputProblem([...outputFiles(out, count), ...(count > 1 ? [manifestPath(out)] : [])]);
  if (problem !== undefined) throw new UsageError(problem);
  return args;
}

/** The prior and decoder folders inside `--model`, or inside the bundled model without it. */
function modelFolders(model: string | undefined): { prior: string; decoder: string } {
  if (model !== undefined && !fs.statSync(model, { throwIfNoEntry: false })?.isDirectory())
    throw new UsageError(`--model: folder ${model} does not exist`);
  return pipelineFolders(model ?? TINY_MODEL_DIR);
}

function checkFolder(opt: 'prior' | 'decoder', dir: string, model: string | undefined, bundled: boolean): void {
  const stat = fs.statSync(dir, { throwIfNoEntry: false });
  const where =
    model !== undefined
      ? `--model: ${model} holds no ${path.basename(dir)}/ folder`
      : bundled
        ? `the bundled model is missing ${dir}`
        : `--${opt}: folder ${dir} does not exist`;
  if (!stat) throw new UsageError(where);
  if (!stat.isDirectory()) throw new UsageError(`--${opt}: ${dir} is not a folder`);
}

/** `--lora <file>[:scale]`, whose file must exist. */
function readLora(value: string): { file: string; scale: number } {
  let lora: { file: string; scale: number };
  try {
    lora = parseLoraSpec(value);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (!fs.existsSync(loraFile(lora.file))) throw new UsageError(`--lora: ${loraFile(lora.file)} does not exist`);
  return lora;
}

/** Every file a run of `count` images writes. */
function outputFiles(out: string, count: number): string[] {
  return Array.from({ length: count }, (_, i) => outputPath(out, i, count));
}

/** Output file of image `i` of `count`: the name itself for one image, else `<base>-<i+1>.png`. */
export function outputPath(out: string, i: number, count: number): string {
  if (count === 1) return out;
  const ext = path.extname(out);
  return `${out.slice(0, out.length - ext.length)}-${i + 1}${ext}`;
}

/** The manifest of a run of several images: `<base>.json` next to them. */
export function manifestPath(out: string): string {
  return `${out.slice(0, out.length - path.extname(out).length)}.json`;
}
