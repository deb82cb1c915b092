/**
 * `wuerstchen-train stage-a|stage-b|stage-c --config <file> --data <source> --out <dir> [--resume]`
 *
 * Options:
 *   --resume             continue the run in --out from its latest checkpoint
 *   --max-steps N        stop after N total updates (writes a checkpoint)
 *   --backend NAME       tfjs backend (auto, cpu, wasm, native, tensorflow; default $WUERSTCHEN_BACKEND or auto)
 *   --effnet DIR         override config effnet.from (Stage B/C)
 *   --vqgan DIR          override config vqgan.from (Stage B)
 *   --init-from DIR      override config init_from
 *   --progress MODE      auto (bar on a TTY), plain (log lines), none
 *   --strict-data        a bad shard, unreadable or oversized image, or malformed manifest line is an error
 *
 * Exit codes: 0 done, 1 failed (one line naming the file, key or argument), 2 bad arguments or an
 * unusable --out, 130 / 143 interrupted by SIGINT / SIGTERM (after writing a checkpoint).
 */
import * as fs from 'fs';
import * as path from 'path';
import { useBackend } from '@wuerstchen/core';
import { CheckpointError, checkOutDir, removeTempFiles } from './checkpoint';
import { Stage, TrainConfig, loadConfig } from './config';
import { createTrainer } from './index';
import { makeShapes } from './data/shapes';
import { exportPipelines } from './export';
import { LORA_USAGE, loraCommand } from './lora_cli';
import { Progress } from './progress';

const USAGE = `usage: wuerstchen-train stage-a|stage-b|stage-c --config <file> --data <source> --out <dir> [--resume]
       [--max-steps N] [--backend auto|cpu|wasm|native|tensorflow] [--effnet DIR] [--vqgan DIR] [--init-from DIR]
       [--progress auto|plain|none] [--strict-data]
  <source>: a folder of images with same-named .txt captions, a .jsonl manifest, or WebDataset .tar shards
            (a .tar file, a folder of .tar files, 'shard-{000..009}.tar', or a comma-separated list)
  --help on any command prints its options; wuerstchen-train --version prints the version`;

export interface CliArgs {
  stage: Stage;
  config: string;
  data: string;
  out: string;
  resume: boolean;
  maxSteps?: number;
  backend?: string;
  effnet?: string;
  vqgan?: string;
  initFrom?: string;
  progress: 'auto' | 'plain' | 'none';
  strictData: boolean;
}

export class UsageError extends Error {}

/** `--help` or `--version` in an option's place: its text goes to stdout and the exit code is 0. */
class InfoRequest extends Error {}

/** This package's version (package.json sits next to dist/ and src/ alike). */
function version(): string {
  return (JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8')) as { version: string }).version;
}

export function parseArgs(argv: string[]): CliArgs {
  const [cmd, ...rest] = argv;
  const m = /^stage-([abc])$/.exec(cmd ?? '');
  if (!m) throw new UsageError(cmd ? `unknown command "${cmd}"` : 'missing command');
  const flags: Record<string, string | boolean> = {};
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i];
    if (a === '-h') throw new InfoRequest(USAGE);
    if (!a.startsWith('--')) throw new UsageError(`unexpected argument "${a}"`);
    const [k, inline] = a.slice(2).split('=', 2);
    if (k === 'resume' || k === 'strict-data') {
      if (inline !== undefined) throw new UsageError(`--${k} takes no value`);
      flags[k] = true;
    } else if (['config', 'data', 'out', 'max-steps', 'backend', 'effnet', 'vqgan', 'init-from', 'progress'].includes(k)) {
      const v = inline ?? rest[++i];
      if (v === undefined || (inline === undefined && v.startsWith('--'))) throw new UsageError(`--${k} needs a value`);
      flags[k] = v;
    } else if (k === 'help' || k === 'version') throw new InfoRequest(k === 'help' ? USAGE : version());
    else throw new UsageError(`unknown option --${k}`);
  }
  for (const req of ['config', 'data', 'out']) if (!flags[req]) throw new UsageError(`--${req} is required`);
  const progress = (flags.progress as string | undefined) ?? 'auto';
  if (!['auto', 'plain', 'none'].includes(progress)) throw new UsageError('--progress must be auto, plain or none');
  let maxSteps: number | undefined;
  if (flags['max-steps'] !== undefined) {
    const v = flags['max-steps'] as string;
    maxSteps = /^\d{1,15}$/.test(v) ? Number(v) : NaN;
    if (!(maxSteps >= 1)) throw new UsageError(`--max-steps must be a positive integer, got "${v}"`);
  }
  return {
    stage: m[1] as Stage,
    config: flags.config as string,
    data: flags.data as string,
    out: flags.out as string,
    resume: Boolean(flags.resume),
    maxSteps,
    backend: flags.backend as string | undefined,
    effnet: flags.effnet as string | undefined,
    vqgan: flags.vqgan as string | undefined,
    initFrom: flags['init-from'] as string | undefined,
    progress: progress as CliArgs['progress'],
    strictData: Boolean(flags['strict-data']),
  };
}

export function applyOverrides(cfg: TrainConfig, args: CliArgs): TrainConfig {
  const out = { ...cfg };
  if (args.effnet) out.effnet = { ...(cfg.effnet ?? {}), from: path.resolve(args.effnet) };
  if (args.vqgan) out.vqgan = { ...(cfg.vqgan ?? {}), from: path.resolve(args.vqgan) };
  if (args.initFrom) out.init_from = path.resolve(args.initFrom);
  if (args.strictData) out.strict_data = true;
  return out;
}

const MAKE_SHAPES_USAGE = `usage: wuerstchen-train make-shapes --out <dir> --n N [--seed S] [--side PX] [--shards K] [--held-out exclude|only|any]
       [--colours c1,c2,...]
  writes the procedural shapes dataset: PNG + .txt pairs (or K WebDataset shards) whose captions read
  "a {size} {colour} {shape} {position} on a {background} background"; --held-out exclude (default) never
  draws the six held-out (colour, shape) pairs, only draws nothing else; --colours limits the shape
  colours (default the bundled model's eight; "pink" is a colour outside its world, for LoRA)`;

/**
 * `--name value` / `--name=value` flags of a subcommand, each from `allowed`. Returns the flags, or
 * the exit code after printing the problem, or after --help / --version (0, on stdout).
 */
function parseSubcommandFlags(cmd: string, argv: string[], allowed: string[], usage: string): Record<string, string> | number {
  const flags: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    if (['--help', '-h', '--version'].includes(argv[i])) {
      process.stdout.write(`${argv[i] === '--version' ? version() : usage}\n`);
      return 0;
    }
    const [k, inline] = argv[i].replace(/^--/, '').split('=', 2);
    if (!argv[i].startsWith('--') || !allowed.includes(k)) {
      process.stderr.write(`wuerstchen-train ${cmd}: unknown argument "${argv[i]}"\n${usage}\n`);
      return 2;
    }
    const v = inline ?? argv[++i];
    if (v === undefined) {
      process.stderr.write(`wuerstchen-train ${cmd}: --${k} needs a value\n`);
      return 2;
    }
    flags[k] = v;
  }
  return flags;
}

function makeShapesCommand(argv: string[]): number {
  const flags = parseSubcommandFlags('make-shapes', argv, ['out', 'n', 'seed', 'side', 'shards', 'held-out', 'colours'], MAKE_SHAPES_USAGE);
  if (typeof flags === 'number') return flags;
  const int = (k: string, def?: number): number => {
    const v = flags[k] === undefined ? def : /^\d+$/.test(flags[k]) ? Number(flags[k]) : NaN;
    if (v === undefined || !Number.isSafeInteger(v)) throw new UsageError(`--${k} must be a non-negative integer${flags[k] === undefined ? ' (required)' : `, got "${flags[k]}"`}`);
    return v;
  };
  try {
    if (!flags.out) throw new UsageError('--out is required');
    const heldOut = flags['held-out'] ?? 'exclude';
    if (!['exclude', 'only', 'any'].includes(heldOut)) throw new UsageError('--held-out must be exclude, only or any');
    const progress = new Progress(process.stderr, Boolean(process.stderr.isTTY), 1000);
    const t0 = Date.now();
    const n = int('n');
    const files = makeShapes({
      out: flags.out,
      n,
      seed: int('seed', 0),
      side: int('side', 64),
      shards: int('shards', 0),
      heldOut: heldOut as 'exclude',
      colours: flags.colours?.split(',').map((c) => c.trim()),
      onProgress: (done) => progress.update({ phase: 'shapes', step: done, total: n, itPerSec: done / Math.max(1e-3, (Date.now() - t0) / 1000), etaSec: ((n - done) * (Date.now() - t0)) / 1000 / done }),
    });
    progress.done();
    process.stderr.write(`wuerstchen-train make-shapes: wrote ${n} images (${files.length} files) to ${flags.out} in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
    return 0;
  } catch (e) {
    process.stderr.write(`wuerstchen-train make-shapes: ${(e as Error).message}\n`);
    return 2;
  }
}

const EXPORT_USAGE = `usage: wuerstchen-train export --prior <stage-c run> --decoder <stage-b run> --out <dir> [--vqgan <stage-a run>] [--dtype fp32|fp16]
  writes <dir>/wuerstchen-prior and <dir>/wuerstchen, diffusers pipeline folders that
  'wuerstchen generate --prior <dir>/wuerstchen-prior --decoder <dir>/wuerstchen' loads`;

function exportCommand(argv: string[]): number {
  const flags = parseSubcommandFlags('export', argv, ['prior', 'decoder', 'vqgan', 'out', 'dtype'], EXPORT_USAGE);
  if (typeof flags === 'number') return flags;
  for (const req of ['prior', 'decoder', 'out']) {
    if (!flags[req]) {
      process.stderr.write(`wuerstchen-train export: --${req} is required\n${EXPORT_USAGE}\n`);
      return 2;
    }
  }
  const dtype = flags.dtype ?? 'fp32';
  if (dtype !== 'fp32' && dtype !== 'fp16') {
    process.stderr.write(`wuerstchen-train export: --dtype must be fp32 or fp16, got "${dtype}"\n`);
    return 2;
  }
  try {
    const out = exportPipelines({ prior: flags.prior, decoder: flags.decoder, vqgan: flags.vqgan, out: flags.out, dtype, log: (l) => process.stderr.write(`${l}\n`) });
    process.stderr.write(`wuerstchen-train export: wrote ${out.prior} and ${out.decoder}\n`);
    return 0;
  } catch (e) {
    process.stderr.write(`wuerstchen-train export: ${(e as Error).message}\n`);
    return 1;
  }
}

export async function main(argv: string[]): Promise<number> {
  if (argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
    process.stdout.write(`${USAGE}\n\n${MAKE_SHAPES_USAGE}\n\n${EXPORT_USAGE}\n\n${LORA_USAGE}\n`);
    return 0;
  }
  if (argv[0] === '--version' || argv[0] === '-v') {
    process.stdout.write(`${version()}\n`);
    return 0;
  }
  if (argv[0] === 'make-shapes') return makeShapesCommand(argv.slice(1));
  if (argv[0] === 'export') return exportCommand(argv.slice(1));
  if (argv[0] === 'lora') return loraCommand(argv.slice(1));
  let args: CliArgs;
  try {
    args = parseArgs(argv);
  } catch (e) {
    if (e instanceof InfoRequest) {
      process.stdout.write(`${e.message}\n`);
      return 0;
    }
    if (e instanceof UsageError) {
      process.stderr.write(`wuerstchen-train: ${e.message}\n${USAGE}\n`);
      return 2;
    }
    throw e;
  }
  try {
    checkOutDir(args.out);
  } catch (e) {
    if (!(e instanceof CheckpointError)) throw e;
    process.stderr.write(`wuerstchen-train: --out ${e.message}\n`);
    return 2;
  }
  let signal: 'SIGINT' | 'SIGTERM' | undefined;
  const signalHandlers: [NodeJS.Signals, () => void][] = [];
  try {
    await useBackend(args.backend);
    const cfg = applyOverrides(loadConfig(args.config, args.stage), args);
    const trainer = createTrainer({ config: cfg, data: args.data, out: args.out, resume: args.resume, maxSteps: args.maxSteps, progress: args.progress });
    for (const sig of ['SIGINT', 'SIGTERM'] as const) {
      const handler = () => {
        if (signal) {
          // a second signal: give up at once, leaving the last complete checkpoint
          removeTempFiles(args.out);
          process.exit(exitCodeFor(sig));
        }
        signal = sig;
        process.stderr.write(`\nwuerstchen-train: ${sig}: finishing the current step and writing a checkpoint (again to abort)\n`);
        trainer.requestStop();
      };
      process.on(sig, handler);
      signalHandlers.push([sig, handler]);
    }
    await trainer.run();
    trainer.dispose();
    return signal ? exitCodeFor(signal) : 0;
  } catch (e) {
    removeTempFiles(args.out);
    process.stderr.write(`wuerstchen-train: ${errorLine(e)}\n`);
    return 1;
  } finally {
    for (const [sig, handler] of signalHandlers) process.off(sig, handler);
  }
}

/** The shell's convention: 128 + the signal number. */
const exitCodeFor = (sig: 'SIGINT' | 'SIGTERM'): number => (sig === 'SIGINT' ? 130 : 143);

/** One line for the user; the stack only with WUERSTCHEN_DEBUG set (as the `wuerstchen` CLI does). */
function errorLine(e: unknown): string {
  const err = e instanceof Error ? e : new Error(String(e));
  if (process.env.WUERSTCHEN_DEBUG) return err.stack ?? err.message;
  return err.message.split('\n')[0];
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e) => {
      process.stderr.write(`wuerstchen-train: ${errorLine(e)}\n`);
      process.exit(1);
    },
  );
}
