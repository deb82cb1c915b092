/**
 * The `wuerstchen-train` command line: `stage-a|stage-b|stage-c` train a stage, `make-shapes` writes the shapes
 * dataset, `export` assembles pipeline folders from trained runs, `lora` trains adapters (lora_cli.ts). `--help`
 * on any of them prints its options.
 *
 * Exit codes: 0 done (a finished run resumed included), 1 failed (one line naming the file, key or argument),
 * 2 bad arguments, an unusable --out or an unavailable backend, 130 / 143 interrupted by SIGINT / SIGTERM (after
 * writing a checkpoint).
 */
import * as path from 'path';
import { useBackend } from '@wuerstchen/core';
import {
  CommandIO,
  OptionSpecs,
  ParsedOptions,
  ProgressBar,
  ProgressMode,
  packageVersion,
  readChoice,
  readInteger,
  runCommand,
} from '@wuerstchen/core/cli';
import { CheckpointError, checkOutDir, removeTempFiles } from './checkpoint';
import { SignalStopper, errorLine, isBackendError, readBackend, readMaxSteps, readProgressMode } from './cli_support';
import { Stage, TrainConfig, loadConfig } from './config';
import { createTrainer } from './index';
import { makeShapes } from './data/shapes';
import { exportPipelines } from './export';
import { LORA_OPTIONS, LORA_USAGE, loraArgs, runLora } from './lora_cli';
import { describeRun } from './run_summary';

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
  progress: ProgressMode;
  strictData: boolean;
}

const TRAIN_OPTIONS: OptionSpecs = {
  config: { kind: 'string' },
  data: { kind: 'string' },
  out: { kind: 'string' },
  resume: { kind: 'flag' },
  'max-steps': { kind: 'string' },
  backend: { kind: 'string' },
  effnet: { kind: 'string' },
  vqgan: { kind: 'string' },
  'init-from': { kind: 'string' },
  progress: { kind: 'string' },
  'strict-data': { kind: 'flag' },
};

/** This package's version. */
const version = (): string => packageVersion(path.join(__dirname, '..'));

/** The checked options of `stage-<stage>`. */
function trainArgs(stage: Stage, o: ParsedOptions): CliArgs {
  // values first: a malformed one is the problem to report, even when something else is missing too
  const [maxSteps, backend, progress] = [readMaxSteps(o), readBackend(o), readProgressMode(o)];
  o.require(['config', 'data', 'out']);
  return {
    stage,
    config: o.string('config')!,
    data: o.string('data')!,
    out: o.string('out')!,
    resume: o.flag('resume'),
    maxSteps,
    backend,
    effnet: o.string('effnet'),
    vqgan: o.string('vqgan'),
    initFrom: o.string('init-from'),
    progress,
    strictData: o.flag('strict-data'),
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

const MAKE_SHAPES_OPTIONS: OptionSpecs = {
  out: { kind: 'string' },
  n: { kind: 'string' },
  seed: { kind: 'string' },
  side: { kind: 'string' },
  shards: { kind: 'string' },
  'held-out': { kind: 'string' },
  colours: { kind: 'string' },
};

interface MakeShapesArgs {
  out: string;
  n: number;
  seed: number;
  side: number;
  shards: number;
  heldOut: 'exclude' | 'only' | 'any';
  colours?: string[];
}

function makeShapesArgs(o: ParsedOptions): MakeShapesArgs {
  const int = (name: string, min: 0 | 1) => (o.has(name) ? readInteger(`--${name}`, o.string(name)!, min) : undefined);
  const args = {
    n: int('n', 1),
    seed: int('seed', 0) ?? 0,
    side: int('side', 1) ?? 64,
    shards: int('shards', 0) ?? 0,
    heldOut: o.has('held-out')
      ? readChoice('--held-out', o.string('held-out')!, ['exclude', 'only', 'any'] as const)
      : 'exclude',
    colours: o
      .string('colours')
      ?.split(',')
      .map((c) => c.trim()),
  };
  o.require(['out', 'n']);
  return { ...args, out: o.string('out')!, n: args.n! };
}

function makeShapesCommand(args: MakeShapesArgs, io: CommandIO): number {
  const progress = new ProgressBar(io.stderr, { every: 1000 });
  const t0 = Date.now();
  try {
    progress.start('shapes', args.n);
    const files = makeShapes({ ...args, onProgress: (done) => progress.update(done) });
    progress.finish();
    io.stderr.write(
      `wuerstchen-train make-shapes: wrote ${args.n} images (${files.length} files) to ${args.out} in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`,
    );
    return 0;
  } catch (e) {
    // the generator's own checks (an unknown colour, an unusable --out) are argument problems
    io.stderr.write(`wuerstchen-train make-shapes: ${(e as Error).message}\n`);
    return 2;
  }
}

const EXPORT_USAGE = `usage: wuerstchen-train export --prior <stage-c run> --decoder <stage-b run> --out <dir> [--vqgan <stage-a run>] [--dtype fp32|fp16]
  writes <dir>/wuerstchen-prior and <dir>/wuerstchen, diffusers pipeline folders that
  'wuerstchen generate --prior <dir>/wuerstchen-prior --decoder <dir>/wuerstchen' loads`;

const EXPORT_OPTIONS: OptionSpecs = {
  prior: { kind: 'string' },
  decoder: { kind: 'string' },
  vqgan: { kind: 'string' },
  out: { kind: 'string' },
  dtype: { kind: 'string' },
};

interface ExportArgs {
  prior: string;
  decoder: string;
  vqgan?: string;
  out: string;
  dtype: 'fp32' | 'fp16';
}

function exportArgs(o: ParsedOptions): ExportArgs {
  const dtype = o.has('dtype') ? readChoice('--dtype', o.string('dtype')!, ['fp32', 'fp16'] as const) : 'fp32';
  o.require(['prior', 'decoder', 'out']);
  return {
    prior: o.string('prior')!,
    decoder: o.string('decoder')!,
    vqgan: o.string('vqgan'),
    out: o.string('out')!,
    dtype,
  };
}

function exportCommand(args: ExportArgs, io: CommandIO): number {
  try {
    const out = exportPipelines({ ...args, log: (l) => io.stderr.write(`${l}\n`) });
    io.stderr.write(`wuerstchen-train export: wrote ${out.prior} and ${out.decoder}\n`);
    return 0;
  } catch (e) {
    io.stderr.write(`wuerstchen-train export: ${errorLine(e)}\n`);
    return 1;
  }
}

async function trainCommand(args: CliArgs, io: CommandIO): Promise<number> {
  try {
    checkOutDir(args.out);
  } catch (e) {
    if (!(e instanceof CheckpointError)) throw e;
    io.stderr.write(`wuerstchen-train: --out ${e.message}\n`);
    return 2;
  }
  const stopper = new SignalStopper('wuerstchen-train', args.out, io);
  try {
    await useBackend(args.backend);
    const cfg = applyOverrides(loadConfig(args.config, args.stage), args);
    const trainer = createTrainer({
      config: cfg,
      data: args.data,
      out: args.out,
      resume: args.resume,
      maxSteps: args.maxSteps,
      progress: args.progress,
    });
    stopper.watch(trainer);
    const summary = await trainer.run();
    trainer.dispose();
    io.stderr.write(describeRun('wuerstchen-train', args.out, summary));
    return stopper.exitCode();
  } catch (e) {
    removeTempFiles(args.out);
    io.stderr.write(`wuerstchen-train: ${errorLine(e)}\n`);
    return isBackendError(e) ? 2 : 1;
  } finally {
    stopper.release();
  }
}

const STAGES: Stage[] = ['a', 'b', 'c'];

/** Runs the CLI with `argv` (without node and script); returns the exit code. */
export async function main(
  argv: string[],
  io: CommandIO = { stdout: process.stdout, stderr: process.stderr },
): Promise<number> {
  const [command, ...rest] = argv;
  if (command === '--help' || command === '-h' || command === 'help') {
    io.stdout.write(`${USAGE}\n\n${MAKE_SHAPES_USAGE}\n\n${EXPORT_USAGE}\n\n${LORA_USAGE}\n`);
    return 0;
  }
  if (command === '--version' || command === '-v') {
    io.stdout.write(`${version()}\n`);
    return 0;
  }
  const common = { program: 'wuerstchen-train', command: command ?? '', version };
  const stage = STAGES.find((s) => command === `stage-${s}`);
  if (stage) {
    return runCommand(
      {
        ...common,
        usage: USAGE,
        options: TRAIN_OPTIONS,
        read: (o) => trainArgs(stage, o),
        run: (a) => trainCommand(a, io),
      },
      rest,
      io,
    );
  }
  switch (command) {
    case 'make-shapes':
      return runCommand(
        {
          ...common,
          usage: MAKE_SHAPES_USAGE,
          options: MAKE_SHAPES_OPTIONS,
          read: makeShapesArgs,
          run: (a) => makeShapesCommand(a, io),
        },
        rest,
        io,
      );
    case 'export':
      return runCommand(
        { ...common, usage: EXPORT_USAGE, options: EXPORT_OPTIONS, read: exportArgs, run: (a) => exportCommand(a, io) },
        rest,
        io,
      );
    case 'lora':
      return runCommand(
        { ...common, usage: LORA_USAGE, options: LORA_OPTIONS, read: loraArgs, run: (a) => runLora(a, io) },
        rest,
        io,
      );
  }
  io.stderr.write(
    `wuerstchen-train: ${command === undefined ? 'missing command' : `unknown command ${JSON.stringify(command)}`}\n${USAGE}\n`,
  );
  return 2;
}

/** Entry point of `bin/wuerstchen-train.js`. */
export function runCli(): void {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e) => {
      process.stderr.write(`wuerstchen-train: ${errorLine(e)}\n`);
      process.exit(1);
    },
  );
}
