/**
 * The `wuerstchen` command line:
 *
 *   wuerstchen generate --prior <dir> --decoder <dir> --prompt "..." [options] --out image.png
 *   wuerstchen vary --image in.png [--prompt "..."] [--strength s] [--model <dir>] --out image.png
 *
 * Exit codes: 0 done; 2 bad arguments (unknown or malformed options, unsupported sizes, missing
 * folders); 1 any other failure (unreadable checkpoints, errors while running).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { BACKENDS, useBackend } from '@wuerstchen/core';
import { GENERATE_LIMITS, limitProblem, looksLikeOption, outputProblem, parseDecimal } from './cli_checks';
import { LoaderError } from './loader';
import { loraFile, parseLoraSpec } from './lora';
import { WuerstchenCombinedPipeline, COMBINED_CALL_DEFAULTS } from './pipelines/combined';
import { estimateGenerateMemory } from './pipelines/memory';
import { RawImage, decodePng, removeTempFiles, writeFileAtomic } from './pipelines/png';
import { ProgressCallback, plainProgress, ttyProgress } from './pipelines/progress';
import { PipelineArgumentError } from './pipelines/shared';
import { WuerstchenVariationPipeline } from './pipelines/variation';
import { TINY_MODEL, TINY_MODEL_DIR, pipelineFolders } from './tiny';

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export const USAGE = `usage: wuerstchen generate --prompt <text> --out <file.png> [--prior <dir> --decoder <dir> | --model <dir>] [options]
       wuerstchen vary --image <in.png> --out <file.png> [--prompt <text>] [--strength <s>]   (see wuerstchen vary --help)

Text to image with Würstchen (diffusers-format folders of warp-ai/wuerstchen-prior and warp-ai/wuerstchen).
Without --prior/--decoder/--model it uses the bundled tiny model, trained by this project on
pictures of shapes: prompts read "a {small|large} {colour} {circle|square|triangle} {on the left|
on the right|at the top|at the bottom|in the middle} on a {colour} background", colours red, orange,
yellow, green, blue, purple, white, black; it draws ${TINY_MODEL.width}×${TINY_MODEL.height} pictures.

required:
  --prompt <text>           what to draw (repeat for several prompts)
  --out <file.png>          output PNG; with several images: <file>-1.png, <file>-2.png, ...

model (default: the bundled tiny model, ${TINY_MODEL_DIR}):
  --prior <dir>             WuerstchenPriorPipeline folder (model_index.json, prior/, text_encoder/, tokenizer/, scheduler/)
  --decoder <dir>           WuerstchenDecoderPipeline folder (model_index.json, decoder/, vqgan/, text_encoder/, tokenizer/, scheduler/)
  --model <dir>             a folder holding both, as wuerstchen-prior/ and wuerstchen/ (what 'wuerstchen-train export' writes)

options:
  --negative-prompt <text>  what to avoid (used where guidance > 1; default "")
  --width <px>              image width (default ${COMBINED_CALL_DEFAULTS.width}; ${TINY_MODEL.width} for the bundled model)
  --height <px>             image height (default ${COMBINED_CALL_DEFAULTS.height}; ${TINY_MODEL.height} for the bundled model)
  --prior-steps <n>         prior sampling steps (default ${COMBINED_CALL_DEFAULTS.priorNumInferenceSteps}; ${TINY_MODEL.priorSteps} for the bundled model)
  --decoder-steps <n>       decoder sampling steps (default ${COMBINED_CALL_DEFAULTS.numInferenceSteps})
  --prior-guidance <w>      prior classifier-free guidance scale (default ${COMBINED_CALL_DEFAULTS.priorGuidanceScale})
  --decoder-guidance <w>    decoder guidance scale (default ${COMBINED_CALL_DEFAULTS.decoderGuidanceScale}: none)
  --images <n>              images per prompt (default 1)
  --seed <n>                random seed; the same seed gives the same image (default: random, printed)
  --backend <name>          tfjs backend: ${BACKENDS.join(', ')} (default: auto, or $WUERSTCHEN_BACKEND)
  --variant <name>          read <weights>.<name>.safetensors (e.g. fp16, bf16)
  --keep-loaded             keep every network in memory (default: load and free stage by stage)
  --max-memory <MiB>        refuse runs whose estimated peak memory is above this (default: the machine's memory)
  --allow-nonfinite         load weights holding NaN or infinite values (default: an error naming the tensor)
  --lora <file>[:scale]     a LoRA (diffusers' pytorch_lora_weights.safetensors, or its folder; prior.* keys
                            go on the prior, decoder.* on the decoder) at strength scale (default 1); repeatable
  -h, --help                show this help
  -v, --version             print the version

limits: at most ${GENERATE_LIMITS.steps} prior and decoder steps, ${GENERATE_LIMITS.images} images per run, ${GENERATE_LIMITS.side} px per side,
and an estimated peak memory within --max-memory; larger runs exit with code 2 before anything loads.
`;

export const VARY_USAGE = `usage: wuerstchen vary --image <in.png> --out <file.png> [--prompt <text>] [--strength <s>] [--model <dir>] [options]

Variations of a picture: it goes through the EfficientNetV2 compressor to a Stage C latent, which Stage B and
Stage A decode. With --strength s > 0 the prior first renoises that latent to time s and resamples it under the
prompt (image to image through Stage C). The model folder needs effnet/ (the compressor the prior was trained
on; 'wuerstchen-train export' writes it); without --model the bundled tiny model is used.

  --image <in.png>          the picture (PNG)
  --out <file.png>          output PNG; with several images: <file>-1.png, <file>-2.png, ...
  --prompt <text>           text for Stage B, and for the prior when --strength > 0 (default "")
  --strength <s>            0 (default) to 1: how far the prior may move the picture's latent
  --model <dir>             a folder holding wuerstchen-prior/, wuerstchen/ and effnet/
  --images <n>              variations (default 1)
  --width, --height, --prior-steps, --decoder-steps, --prior-guidance, --decoder-guidance, --seed,
  --backend, --variant, --keep-loaded, --max-memory, --allow-nonfinite: as for generate
  -h, --help                show this help
`;

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

export type Command = 'generate' | 'vary';

type Spec = { key: keyof GenerateArgs; kind: 'string' | 'int' | 'number' | 'seed' | 'flag' | 'prompts' | 'lora' };

const OPTIONS: Record<string, Spec> = {
  '--prior': { key: 'prior', kind: 'string' },
  '--decoder': { key: 'decoder', kind: 'string' },
  '--model': { key: 'model', kind: 'string' },
  '--prompt': { key: 'prompts', kind: 'prompts' },
  '--negative-prompt': { key: 'negativePrompt', kind: 'string' },
  '--width': { key: 'width', kind: 'int' },
  '--height': { key: 'height', kind: 'int' },
  '--prior-steps': { key: 'priorSteps', kind: 'int' },
  '--decoder-steps': { key: 'decoderSteps', kind: 'int' },
  '--prior-guidance': { key: 'priorGuidance', kind: 'number' },
  '--decoder-guidance': { key: 'decoderGuidance', kind: 'number' },
  '--images': { key: 'images', kind: 'int' },
  '--seed': { key: 'seed', kind: 'seed' },
  '--backend': { key: 'backend', kind: 'string' },
  '--variant': { key: 'variant', kind: 'string' },
  '--keep-loaded': { key: 'keepLoaded', kind: 'flag' },
  '--max-memory': { key: 'maxMemoryMiB', kind: 'int' },
  '--allow-nonfinite': { key: 'allowNonFinite', kind: 'flag' },
  '--out': { key: 'out', kind: 'string' },
  '--lora': { key: 'loras', kind: 'lora' },
  '--image': { key: 'image', kind: 'string' },
  '--strength': { key: 'strength', kind: 'number' },
};

/** Options of one command only. */
const ONLY: Record<string, Command> = { '--image': 'vary', '--strength': 'vary', '--prior': 'generate', '--decoder': 'generate', '--lora': 'generate' };

/** Parses the options of `generate` (or `vary`); every problem is a UsageError (exit code 2). */
export function parseGenerateArgs(argv: string[], command: Command = 'generate'): GenerateArgs {
  const args: Partial<GenerateArgs> & Pick<GenerateArgs, 'prompts' | 'loras'> = { prompts: [], loras: [], keepLoaded: false, allowNonFinite: false };
  const seen = new Set<string>();
  for (let i = 0; i < argv.length; i++) {
    let name = argv[i];
    let value: string | undefined;
    const eq = name.indexOf('=');
    if (name.startsWith('--') && eq > 0) {
      value = name.slice(eq + 1);
      name = name.slice(0, eq);
    }
    const spec = ONLY[name] && ONLY[name] !== command ? undefined : OPTIONS[name];
    if (!spec) {
      throw new UsageError(name.startsWith('-') ? `unknown option ${name}` : `unexpected argument ${JSON.stringify(name)} (options take the form --name value)`);
    }
    if (spec.kind !== 'prompts' && spec.kind !== 'lora' && seen.has(name)) throw new UsageError(`${name} given twice`);
    seen.add(name);
    if (spec.kind === 'flag') {
      if (value !== undefined) throw new UsageError(`${name} takes no value`);
      (args as Record<string, unknown>)[spec.key] = true;
      continue;
    }
    if (value === undefined) {
      if (i + 1 >= argv.length) throw new UsageError(`${name} needs a value`);
      value = argv[++i];
      if (looksLikeOption(value)) {
        throw new UsageError(`${name} needs a value, but the next argument is the option ${value} (write ${name}=${value} if that is the value)`);
      }
    }
    const rec = args as Record<string, unknown>;
    switch (spec.kind) {
      case 'string':
        if (value === '' && name !== '--negative-prompt') throw new UsageError(`${name} needs a non-empty value`);
        rec[spec.key] = value;
        break;
      case 'prompts':
        args.prompts.push(value);
        break;
      case 'lora': {
        let lora: { file: string; scale: number };
        try {
          lora = parseLoraSpec(value);
        } catch (e) {
          throw new UsageError((e as Error).message);
        }
        if (!fs.existsSync(loraFile(lora.file))) throw new UsageError(`--lora: ${loraFile(lora.file)} does not exist`);
        args.loras.push(lora);
        break;
      }
      case 'int': {
        const v = parseDecimal(value, true);
        if (v === undefined || v < 1) throw new UsageError(`${name} must be a positive integer, got ${JSON.stringify(value)} (decimal digits only)`);
        rec[spec.key] = v;
        break;
      }
      case 'seed': {
        const v = parseDecimal(value, true);
        if (v === undefined) throw new UsageError(`${name} must be a non-negative integer below 2^53, got ${JSON.stringify(value)} (decimal digits only)`);
        rec[spec.key] = v;
        break;
      }
      case 'number': {
        const v = parseDecimal(value, false);
        if (v === undefined) throw new UsageError(`${name} must be a number >= 0, got ${JSON.stringify(value)} (decimal notation only, like 4 or 7.5)`);
        rec[spec.key] = v;
        break;
      }
    }
  }
  const missing = (command === 'vary' ? ['--image', '--out'] : ['--prompt', '--out']).filter((o) => !seen.has(o));
  if (missing.length) throw new UsageError(`missing ${missing.join(', ')}`);
  const model = args.model;
  if (model !== undefined && (seen.has('--prior') || seen.has('--decoder'))) throw new UsageError('--model replaces --prior and --decoder; give one or the other');
  if (seen.has('--prior') !== seen.has('--decoder')) throw new UsageError(`${seen.has('--prior') ? '--decoder' : '--prior'} is missing (give both folders, or --model, or neither for the bundled model)`);
  const bundled = model === undefined && !seen.has('--prior');
  if (!seen.has('--prior')) {
    const dir = model ?? TINY_MODEL_DIR;
    if (model !== undefined && !fs.statSync(dir, { throwIfNoEntry: false })?.isDirectory()) throw new UsageError(`--model: folder ${dir} does not exist`);
    const both = pipelineFolders(dir);
    args.prior = both.prior;
    args.decoder = both.decoder;
  }
  if (!args.out!.toLowerCase().endsWith('.png')) throw new UsageError(`--out must name a .png file, got ${JSON.stringify(args.out)}`);
  if (args.backend !== undefined && !(BACKENDS as string[]).includes(args.backend)) {
    throw new UsageError(`--backend must be one of ${BACKENDS.join(', ')}, got ${JSON.stringify(args.backend)}`);
  }
  for (const opt of ['prior', 'decoder'] as const) {
    const dir = args[opt]!;
    const stat = fs.statSync(dir, { throwIfNoEntry: false });
    const where = model !== undefined ? `--model: ${model} holds no ${path.basename(dir)}/ folder` : bundled ? `the bundled model is missing ${dir}` : `--${opt}: folder ${dir} does not exist`;
    if (!stat) throw new UsageError(where);
    if (!stat.isDirectory()) throw new UsageError(`--${opt}: ${dir} is not a folder`);
  }
  const parsed = {
    bundled,
    width: bundled ? TINY_MODEL.width : COMBINED_CALL_DEFAULTS.width,
    height: bundled ? TINY_MODEL.height : COMBINED_CALL_DEFAULTS.height,
    priorSteps: bundled ? TINY_MODEL.priorSteps : COMBINED_CALL_DEFAULTS.priorNumInferenceSteps,
    decoderSteps: COMBINED_CALL_DEFAULTS.numInferenceSteps,
    priorGuidance: COMBINED_CALL_DEFAULTS.priorGuidanceScale,
    decoderGuidance: COMBINED_CALL_DEFAULTS.decoderGuidanceScale,
    images: 1,
    strength: 0,
    ...args,
  } as GenerateArgs;
  if (command === 'vary') {
    if (parsed.strength > 1) throw new UsageError(`--strength must be in [0, 1], got ${parsed.strength}`);
    if (!fs.statSync(parsed.image!, { throwIfNoEntry: false })?.isFile()) throw new UsageError(`--image: ${parsed.image} is not a file`);
    if (parsed.prompts.length > 1) throw new UsageError('vary takes at most one --prompt');
  }
  const prompts = command === 'vary' ? 1 : parsed.prompts.length;
  const problem = limitProblem({ ...parsed, prompts }) ?? outputProblem(outputFiles(parsed.out, prompts * parsed.images));
  if (problem !== undefined) throw new UsageError(problem);
  return parsed;
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

export interface CliIO {
  stdout: { write(s: string): unknown };
  stderr: { write(s: string): unknown; isTTY?: boolean };
}

const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;

/** Peak resident memory of this process so far, in bytes. */
export function peakRssBytes(): number {
  return process.resourceUsage().maxRSS * 1024;
}

/** Writes the PNGs (numbered when several) and prints each file name on stdout. */
function writeOutputs(png: Buffer[], out: string, io: CliIO): void {
  png.forEach((buf, i) => {
    const file = outputPath(out, i, png.length);
    writeFileAtomic(file, buf);
    io.stdout.write(`${file}\n`);
  });
}

async function generate(args: GenerateArgs, io: CliIO): Promise<number> {
  const started = Date.now();
  await useBackend(args.backend, { quiet: true });
  io.stderr.write(`wuerstchen: backend ${tf.getBackend()}\n`);
  io.stderr.write(
    args.bundled
      ? `wuerstchen: model: the bundled tiny shapes model (${TINY_MODEL_DIR}), ${args.width}×${args.height}\n`
      : `wuerstchen: model: ${args.prior} + ${args.decoder}\n`,
  );
  const pipe = WuerstchenCombinedPipeline.fromPretrained(args.prior, args.decoder, {
    variant: args.variant,
    offload: !args.keepLoaded,
    allowNonFinite: args.allowNonFinite,
  });
  pipe.checkSize(args.width, args.height);
  checkMemory(pipe, args, io);
  for (const { file, scale } of args.loras) {
    const nets = pipe.loadLora(file, { scale });
    const on = Object.entries(nets).map(([c, n]) => `${n.paths.length} layers of the ${c}`);
    io.stderr.write(`wuerstchen: LoRA ${loraFile(file)} on ${on.join(' and ')}, scale ${scale}\n`);
  }
  const seed = args.seed ?? Math.floor(Math.random() * 2 ** 31);
  if (args.seed === undefined) io.stderr.write(`wuerstchen: seed ${seed} (pass --seed ${seed} to reproduce)\n`);
  const onProgress: ProgressCallback = io.stderr.isTTY ? ttyProgress(io.stderr) : plainProgress(io.stderr);
  try {
    const { png } = await pipe(args.prompts, {
      negativePrompt: args.negativePrompt,
      width: args.width,
      height: args.height,
      priorNumInferenceSteps: args.priorSteps,
      numInferenceSteps: args.decoderSteps,
      priorGuidanceScale: args.priorGuidance,
      decoderGuidanceScale: args.decoderGuidance,
      numImagesPerPrompt: args.images,
      seed,
      outputType: 'png',
      onProgress,
    });
    writeOutputs(png!, args.out, io);
  } finally {
    pipe.release();
  }
  io.stderr.write(`wuerstchen: done in ${((Date.now() - started) / 1000).toFixed(1)} s, peak memory ${mib(peakRssBytes())} (RSS)\n`);
  return 0;
}

/** Largest input picture `vary` decodes (checked from the PNG header first). */
const MAX_INPUT_PIXELS = 8192 * 8192;

/** Reads a PNG for `vary`, refusing anything else or an oversized one before decoding. */
function readInputPng(file: string): RawImage {
  const bytes = fs.readFileSync(file);
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  if (bytes.length < 24 || !bytes.subarray(0, 8).equals(signature) || bytes.toString('latin1', 12, 16) !== 'IHDR') {
    throw new UsageError(`--image: ${file} is not a PNG file`);
  }
  const width = bytes.readUInt32BE(16);
  const height = bytes.readUInt32BE(20);
  if (width < 1 || height < 1 || width * height > MAX_INPUT_PIXELS) throw new UsageError(`--image: ${file} declares ${width}×${height} pixels; at most ${MAX_INPUT_PIXELS} are read`);
  try {
    return decodePng(bytes);
  } catch (e) {
    throw new UsageError(`--image: ${file} cannot be decoded as PNG (${(e as Error).message})`);
  }
}

async function vary(args: GenerateArgs, io: CliIO): Promise<number> {
  const started = Date.now();
  const image = readInputPng(args.image!);
  await useBackend(args.backend, { quiet: true });
  const dir = args.model ?? TINY_MODEL_DIR;
  io.stderr.write(`wuerstchen: backend ${tf.getBackend()}\nwuerstchen: model: ${args.bundled ? 'the bundled tiny shapes model ' : ''}${dir}\n`);
  const pipe = WuerstchenVariationPipeline.fromPretrained(dir, { variant: args.variant, offload: !args.keepLoaded, allowNonFinite: args.allowNonFinite });
  const seed = args.seed ?? Math.floor(Math.random() * 2 ** 31);
  if (args.seed === undefined) io.stderr.write(`wuerstchen: seed ${seed} (pass --seed ${seed} to reproduce)\n`);
  try {
    const { png } = await pipe(image, {
      prompt: args.prompts[0],
      strength: args.strength,
      width: args.bundled || args.width !== COMBINED_CALL_DEFAULTS.width ? args.width : undefined,
      height: args.bundled || args.height !== COMBINED_CALL_DEFAULTS.height ? args.height : undefined,
      priorNumInferenceSteps: args.priorSteps,
      priorGuidanceScale: args.priorGuidance,
      decoderNumInferenceSteps: args.decoderSteps,
      decoderGuidanceScale: args.decoderGuidance,
      numImagesPerPrompt: args.images,
      seed,
      outputType: 'png',
      onProgress: io.stderr.isTTY ? ttyProgress(io.stderr) : plainProgress(io.stderr),
    });
    writeOutputs(png!, args.out, io);
  } finally {
    pipe.release();
  }
  io.stderr.write(`wuerstchen: done in ${((Date.now() - started) / 1000).toFixed(1)} s, peak memory ${mib(peakRssBytes())} (RSS)\n`);
  return 0;
}

/** Estimates the run's peak memory from the configs (nothing is loaded yet) and refuses it above the budget. */
function checkMemory(pipe: WuerstchenCombinedPipeline, args: GenerateArgs, io: CliIO): void {
  const estimate = estimateGenerateMemory(pipe, {
    width: args.width,
    height: args.height,
    prompts: args.prompts.length,
    imagesPerPrompt: args.images,
    priorGuidance: args.priorGuidance,
    decoderGuidance: args.decoderGuidance,
    keepLoaded: args.keepLoaded,
  });
  const budget = args.maxMemoryMiB === undefined ? os.totalmem() : args.maxMemoryMiB * 2 ** 20;
  const what = `about ${mib(estimate.total)} (weights ${mib(estimate.weights)}, ${estimate.stage} activations ${mib(estimate.activations)})`;
  if (estimate.total > budget) {
    const limit = args.maxMemoryMiB === undefined ? `this machine's ${mib(budget)}` : `--max-memory ${args.maxMemoryMiB}`;
    throw new UsageError(`this run would need ${what}, more than ${limit}; lower --width/--height or --images, or raise --max-memory`);
  }
  io.stderr.write(`wuerstchen: estimated peak memory ${what}\n`);
}

/** This package's version (package.json sits next to dist/ and src/ alike). */
function version(): string {
  return (JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8')) as { version: string }).version;
}

/** `--help` or `--version` where an option name goes (not as another option's value), if any. */
function infoOption(argv: string[]): '--help' | '--version' | undefined {
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '-h' || argv[i] === '--help') return '--help';
    if (argv[i] === '--version') return '--version';
    const spec = OPTIONS[argv[i]];
    if (spec && spec.kind !== 'flag') i++;
  }
  return undefined;
}

/** Runs the CLI with `argv` (without node and script); returns the exit code. */
export async function main(argv: string[], io: CliIO = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '-h' || command === '--help' || command === 'help') {
    (command === undefined ? io.stderr : io.stdout).write(USAGE);
    return command === undefined ? 2 : 0;
  }
  if (command === '--version' || command === '-v') {
    io.stdout.write(`${version()}\n`);
    return 0;
  }
  if (command !== 'generate' && command !== 'vary') {
    io.stderr.write(`wuerstchen: unknown command ${JSON.stringify(command)}\n\n${USAGE}`);
    return 2;
  }
  const info = infoOption(rest);
  if (info) {
    io.stdout.write(info === '--help' ? (command === 'vary' ? VARY_USAGE : USAGE) : `${version()}\n`);
    return 0;
  }
  let args: GenerateArgs;
  try {
    args = parseGenerateArgs(rest, command);
  } catch (e) {
    if (e instanceof UsageError) {
      io.stderr.write(`wuerstchen: ${e.message}\nRun "wuerstchen ${command} --help" for the options.\n`);
      return 2;
    }
    throw e;
  }
  try {
    return await (command === 'vary' ? vary(args, io) : generate(args, io));
  } catch (e) {
    const err = e as Error;
    const usage = e instanceof PipelineArgumentError || e instanceof UsageError || /^(unknown backend|backend "[^"]+" is not available)/.test(err.message ?? '');
    io.stderr.write(`\nwuerstchen: ${usage ? '' : 'error: '}${err.message}\n`);
    if (!usage && !(e instanceof LoaderError) && process.env.WUERSTCHEN_DEBUG) io.stderr.write(`${err.stack}\n`);
    return usage ? 2 : 1;
  }
}

/**
 * SIGINT / SIGTERM: remove the temporary files of unfinished writes, then exit 130 / 143 (128 + the signal number)
 * so that scripts can tell an interrupted run from a finished one.
 */
export function exitOnInterrupt(proc: Pick<NodeJS.Process, 'once' | 'exit'> = process, stderr: CliIO['stderr'] = process.stderr): void {
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    proc.once(signal, () => {
      removeTempFiles();
      stderr.write(`\nwuerstchen: interrupted (${signal})\n`);
      proc.exit(code);
    });
  }
}

/** Entry point of `bin/wuerstchen.js`. */
export function runCli(): void {
  // tfjs's "install the node backend" banner would interleave with the progress output.
  tf.enableProdMode();
  exitOnInterrupt();
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      process.stderr.write(`wuerstchen: error: ${(e as Error).stack ?? e}\n`);
      process.exitCode = 1;
    },
  );
}
