/**
 * The `wuerstchen` command line:
 *
 *   wuerstchen generate --prior <dir> --decoder <dir> --prompt "..." [options] --out image.png
 *
 * Exit codes: 0 done; 2 bad arguments (unknown or malformed options, unsupported sizes, missing
 * folders); 1 any other failure (unreadable checkpoints, errors while running).
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { BACKENDS, useBackend } from '@wuerstchen/core';
import { LoaderError } from './loader';
import { WuerstchenCombinedPipeline, COMBINED_CALL_DEFAULTS } from './pipelines/combined';
import { writeFileAtomic } from './pipelines/png';
import { ProgressCallback, plainProgress, ttyProgress } from './pipelines/progress';
import { PipelineArgumentError } from './pipelines/shared';
import { TINY_MODEL, TINY_MODEL_DIR, pipelineFolders } from './tiny';

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export const USAGE = `usage: wuerstchen generate --prompt <text> --out <file.png> [--prior <dir> --decoder <dir> | --model <dir>] [options]

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
  out: string;
}

type Spec = { key: keyof GenerateArgs; kind: 'string' | 'int' | 'number' | 'seed' | 'flag' | 'prompts' };

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
  '--out': { key: 'out', kind: 'string' },
};

/** Parses `generate`'s options; every problem is a UsageError (exit code 2). */
export function parseGenerateArgs(argv: string[]): GenerateArgs {
  const args: Partial<GenerateArgs> & { prompts: string[] } = { prompts: [], keepLoaded: false };
  const seen = new Set<string>();
  for (let i = 0; i < argv.length; i++) {
    let name = argv[i];
    let value: string | undefined;
    const eq = name.indexOf('=');
    if (name.startsWith('--') && eq > 0) {
      value = name.slice(eq + 1);
      name = name.slice(0, eq);
    }
    const spec = OPTIONS[name];
    if (!spec) {
      throw new UsageError(name.startsWith('-') ? `unknown option ${name}` : `unexpected argument ${JSON.stringify(name)} (options take the form --name value)`);
    }
    if (spec.kind !== 'prompts' && seen.has(name)) throw new UsageError(`${name} given twice`);
    seen.add(name);
    if (spec.kind === 'flag') {
      if (value !== undefined) throw new UsageError(`${name} takes no value`);
      (args as Record<string, unknown>)[spec.key] = true;
      continue;
    }
    if (value === undefined) {
      if (i + 1 >= argv.length) throw new UsageError(`${name} needs a value`);
      value = argv[++i];
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
      case 'int': {
        if (!/^\d+$/.test(value) || Number(value) < 1 || !Number.isSafeInteger(Number(value))) {
          throw new UsageError(`${name} must be a positive integer, got ${JSON.stringify(value)}`);
        }
        rec[spec.key] = Number(value);
        break;
      }
      case 'seed': {
        if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value))) {
          throw new UsageError(`${name} must be a non-negative integer below 2^53, got ${JSON.stringify(value)}`);
        }
        rec[spec.key] = Number(value);
        break;
      }
      case 'number': {
        const v = Number(value);
        if (value.trim() === '' || !Number.isFinite(v) || v < 0) throw new UsageError(`${name} must be a number >= 0, got ${JSON.stringify(value)}`);
        rec[spec.key] = v;
        break;
      }
    }
  }
  const missing = ['--prompt', '--out'].filter((o) => !seen.has(o));
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
  const outDir = path.dirname(path.resolve(args.out!));
  if (!fs.statSync(outDir, { throwIfNoEntry: false })?.isDirectory()) throw new UsageError(`--out: folder ${outDir} does not exist`);
  for (const opt of ['prior', 'decoder'] as const) {
    const dir = args[opt]!;
    const stat = fs.statSync(dir, { throwIfNoEntry: false });
    const where = model !== undefined ? `--model: ${model} holds no ${path.basename(dir)}/ folder` : bundled ? `the bundled model is missing ${dir}` : `--${opt}: folder ${dir} does not exist`;
    if (!stat) throw new UsageError(where);
    if (!stat.isDirectory()) throw new UsageError(`--${opt}: ${dir} is not a folder`);
  }
  return {
    bundled,
    width: bundled ? TINY_MODEL.width : COMBINED_CALL_DEFAULTS.width,
    height: bundled ? TINY_MODEL.height : COMBINED_CALL_DEFAULTS.height,
    priorSteps: bundled ? TINY_MODEL.priorSteps : COMBINED_CALL_DEFAULTS.priorNumInferenceSteps,
    decoderSteps: COMBINED_CALL_DEFAULTS.numInferenceSteps,
    priorGuidance: COMBINED_CALL_DEFAULTS.priorGuidanceScale,
    decoderGuidance: COMBINED_CALL_DEFAULTS.decoderGuidanceScale,
    images: 1,
    ...args,
  } as GenerateArgs;
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

async function generate(args: GenerateArgs, io: CliIO): Promise<number> {
  const started = Date.now();
  await useBackend(args.backend, { quiet: true });
  io.stderr.write(`wuerstchen: backend ${tf.getBackend()}\n`);
  io.stderr.write(
    args.bundled
      ? `wuerstchen: model: the bundled tiny shapes model (${TINY_MODEL_DIR}), ${args.width}×${args.height}\n`
      : `wuerstchen: model: ${args.prior} + ${args.decoder}\n`,
  );
  const pipe = WuerstchenCombinedPipeline.fromPretrained(args.prior, args.decoder, { variant: args.variant, offload: !args.keepLoaded });
  pipe.checkSize(args.width, args.height);
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
    png!.forEach((buf, i) => {
      const file = outputPath(args.out, i, png!.length);
      writeFileAtomic(file, buf);
      io.stdout.write(`${file}\n`);
    });
  } finally {
    pipe.release();
  }
  io.stderr.write(`wuerstchen: done in ${((Date.now() - started) / 1000).toFixed(1)} s, peak memory ${mib(peakRssBytes())} (RSS)\n`);
  return 0;
}

/** Runs the CLI with `argv` (without node and script); returns the exit code. */
export async function main(argv: string[], io: CliIO = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '-h' || command === '--help' || command === 'help') {
    (command === undefined ? io.stderr : io.stdout).write(USAGE);
    return command === undefined ? 2 : 0;
  }
  if (command !== 'generate') {
    io.stderr.write(`wuerstchen: unknown command ${JSON.stringify(command)}\n\n${USAGE}`);
    return 2;
  }
  if (rest.includes('-h') || rest.includes('--help')) {
    io.stdout.write(USAGE);
    return 0;
  }
  let args: GenerateArgs;
  try {
    args = parseGenerateArgs(rest);
  } catch (e) {
    if (e instanceof UsageError) {
      io.stderr.write(`wuerstchen: ${e.message}\nRun "wuerstchen generate --help" for the options.\n`);
      return 2;
    }
    throw e;
  }
  try {
    return await generate(args, io);
  } catch (e) {
    const err = e as Error;
    const usage = e instanceof PipelineArgumentError || e instanceof UsageError || /^(unknown backend|backend "[^"]+" is not available)/.test(err.message ?? '');
    io.stderr.write(`\nwuerstchen: ${usage ? '' : 'error: '}${err.message}\n`);
    if (!usage && !(e instanceof LoaderError) && process.env.WUERSTCHEN_DEBUG) io.stderr.write(`${err.stack}\n`);
    return usage ? 2 : 1;
  }
}

/** Entry point of `bin/wuerstchen.js`. */
export function runCli(): void {
  // tfjs's "install the node backend" banner would interleave with the progress output.
  tf.enableProdMode();
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
