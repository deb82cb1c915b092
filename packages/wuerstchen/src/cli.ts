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
import { BACKENDS, BackendUnavailableError, UnknownBackendError, useBackend } from '@wuerstchen/core';
import { CommandIO, ProgressBar, ProgressStream, UsageError, packageVersion, runCommand } from '@wuerstchen/core/cli';
import { COMMAND_OPTIONS, Command, GenerateArgs, generateArgs, manifestPath, outputPath } from './cli_args';
import { GENERATE_LIMITS } from './cli_checks';
import { runManifest } from './cli_manifest';
import { LoaderError } from './loader';
import { loraFile } from './lora';
import { WuerstchenCombinedPipeline, COMBINED_CALL_DEFAULTS } from './pipelines/combined';
import { estimateGenerateMemory } from './pipelines/memory';
import { RawImage, decodePng, removeTempFiles, writeFileAtomic } from './pipelines/png';
import { ProgressCallback } from './pipelines/progress';
import { PipelineArgumentError } from './pipelines/shared';
import { WuerstchenVariationPipeline } from './pipelines/variation';
import { TINY_MODEL, TINY_MODEL_DIR } from './tiny';

export type { GenerateArgs } from './cli_args';
export { outputPath, parseGenerateArgs } from './cli_args';

export const USAGE = `usage: wuerstchen generate --prompt <text> --out <file.png> [--prior <dir> --decoder <dir> | --model <dir>] [options]
       wuerstchen vary --image <in.png> --out <file.png> [--prompt <text>] [--strength <s>]   (see wuerstchen vary --help)

Text to image with Würstchen (diffusers-format folders of warp-ai/wuerstchen-prior and warp-ai/wuerstchen).
Without --prior/--decoder/--model it uses the bundled tiny model, trained by this project on
pictures of shapes: prompts read "a {small|large} {colour} {circle|square|triangle} {on the left|
on the right|at the top|at the bottom|in the middle} on a {colour} background", colours red, orange,
yellow, green, blue, purple, white, black; it draws ${TINY_MODEL.width}×${TINY_MODEL.height} pictures.

required:
  --prompt <text>           what to draw (repeat for several prompts)
  --out <file.png>          output PNG; with several images: <file>-1.png, <file>-2.png, ... and <file>.json,
                            which names each image's prompt, seed and settings

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
  --out <file.png>          output PNG; with several images: <file>-1.png, <file>-2.png, ... and <file>.json
  --prompt <text>           text for Stage B, and for the prior when --strength > 0 (default "")
  --strength <s>            0 (default) to 1: how far the prior may move the picture's latent
  --model <dir>             a folder holding wuerstchen-prior/, wuerstchen/ and effnet/
  --images <n>              variations (default 1)
  --width, --height, --prior-steps, --decoder-steps, --prior-guidance, --decoder-guidance, --seed,
  --backend, --variant, --keep-loaded, --max-memory, --allow-nonfinite: as for generate
  -h, --help                show this help
  --version                 print the version
`;

export type CliIO = CommandIO;

const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;

/** Peak resident memory of this process so far, in bytes. */
export function peakRssBytes(): number {
  return process.resourceUsage().maxRSS * 1024;
}

/**
 * Writes the PNGs (numbered when several) and prints each file name on stdout; several images also get a
 * manifest naming each one's prompt, seed and settings.
 */
function writeOutputs(png: Buffer[], command: Command, args: GenerateArgs, seed: number, io: CliIO): void {
  const files = png.map((buf, i) => {
    const file = outputPath(args.out, i, png.length);
    writeFileAtomic(file, buf);
    io.stdout.write(`${file}\n`);
    return file;
  });
  if (files.length === 1) return;
  const manifest = manifestPath(args.out);
  writeFileAtomic(manifest, Buffer.from(`${JSON.stringify(runManifest(command, args, seed, files), null, 2)}\n`));
  io.stderr.write(`wuerstchen: ${manifest} names the prompt, seed and settings of each image\n`);
}

/** The pipelines' per-stage progress events, drawn by the progress display both CLIs share. */
function progressDisplay(stream: ProgressStream): ProgressCallback {
  const bar = new ProgressBar(stream);
  return (e) => {
    if (e.step === 0) bar.start(e.stage, e.total);
    bar.update(e.step);
    if (e.step >= e.total) bar.finish();
  };
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
      onProgress: progressDisplay(io.stderr),
    });
    writeOutputs(png!, 'generate', args, seed, io);
  } finally {
    pipe.release();
  }
  io.stderr.write(
    `wuerstchen: done in ${((Date.now() - started) / 1000).toFixed(1)} s, peak memory ${mib(peakRssBytes())} (RSS)\n`,
  );
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
  if (width < 1 || height < 1 || width * height > MAX_INPUT_PIXELS)
    throw new UsageError(`--image: ${file} declares ${width}×${height} pixels; at most ${MAX_INPUT_PIXELS} are read`);
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
  io.stderr.write(
    `wuerstchen: backend ${tf.getBackend()}\nwuerstchen: model: ${args.bundled ? 'the bundled tiny shapes model ' : ''}${dir}\n`,
  );
  const pipe = WuerstchenVariationPipeline.fromPretrained(dir, {
    variant: args.variant,
    offload: !args.keepLoaded,
    allowNonFinite: args.allowNonFinite,
  });
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
      onProgress: progressDisplay(io.stderr),
    });
    writeOutputs(png!, 'vary', args, seed, io);
  } finally {
    pipe.release();
  }
  io.stderr.write(
    `wuerstchen: done in ${((Date.now() - started) / 1000).toFixed(1)} s, peak memory ${mib(peakRssBytes())} (RSS)\n`,
  );
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
    const limit =
      args.maxMemoryMiB === undefined ? `this machine's ${mib(budget)}` : `--max-memory ${args.maxMemoryMiB}`;
    throw new UsageError(
      `this run would need ${what}, more than ${limit}; lower --width/--height or --images, or raise --max-memory`,
    );
  }
  io.stderr.write(`wuerstchen: estimated peak memory ${what}\n`);
}

/** This package's version. */
const version = (): string => packageVersion(path.join(__dirname, '..'));

/** Usage errors (exit code 2): bad options, and a backend that is unknown or cannot start here. */
function isUsageError(e: unknown): boolean {
  return (
    e instanceof UsageError ||
    e instanceof PipelineArgumentError ||
    e instanceof UnknownBackendError ||
    e instanceof BackendUnavailableError
  );
}

/** Runs the CLI with `argv` (without node and script); returns the exit code. */
export async function main(
  argv: string[],
  io: CliIO = { stdout: process.stdout, stderr: process.stderr },
): Promise<number> {
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
  return runCommand(
    {
      program: 'wuerstchen',
      command,
      usage: command === 'vary' ? VARY_USAGE : USAGE,
      version,
      options: COMMAND_OPTIONS[command],
      read: (options) => generateArgs(options, command),
      run: (args) => runReportingErrors(command, args, io),
    },
    rest,
    io,
  );
}

/** Runs `command`; an error is one line on stderr (its stack with WUERSTCHEN_DEBUG) and exit code 2 or 1. */
async function runReportingErrors(command: Command, args: GenerateArgs, io: CliIO): Promise<number> {
  try {
    return await (command === 'vary' ? vary(args, io) : generate(args, io));
  } catch (e) {
    const err = e as Error;
    const usage = isUsageError(e);
    io.stderr.write(`\nwuerstchen: ${usage ? '' : 'error: '}${err.message}\n`);
    if (!usage && !(e instanceof LoaderError) && process.env.WUERSTCHEN_DEBUG) io.stderr.write(`${err.stack}\n`);
    return usage ? 2 : 1;
  }
}

/**
 * SIGINT / SIGTERM: remove the temporary files of unfinished writes, then exit 130 / 143 (128 + the signal number)
 * so that scripts can tell an interrupted run from a finished one.
 */
export function exitOnInterrupt(
  proc: Pick<NodeJS.Process, 'once' | 'exit'> = process,
  stderr: CliIO['stderr'] = process.stderr,
): void {
  for (const [signal, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const) {
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
