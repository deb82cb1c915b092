/**
 * `wuerstchen-train lora`: LoRA fine-tuning of a prior or a decoder (see lora.ts). Ends by writing
 * `<out>/pytorch_lora_weights.safetensors`, which `wuerstchen generate --lora` reads, and for the
 * prior diffusers' `WuerstchenPriorPipeline.load_lora_weights`.
 */
import * as path from 'path';
import { DEFAULT_LORA_TARGETS, useBackend } from '@wuerstchen/core';
import {
  CommandIO,
  OptionSpecs,
  ParsedOptions,
  ProgressMode,
  UsageError,
  parseCommandLine,
  readChoice,
  readInteger,
  readNumber,
} from '@wuerstchen/core/cli';
import { LORA_WEIGHT_NAME } from 'wuerstchen';
import { CheckpointError, checkOutDir, removeTempFiles } from './checkpoint';
import { SignalStopper, errorLine, isBackendError, readBackend, readMaxSteps, readProgressMode } from './cli_support';
import { LoraRunOptions, LoraTrainer, createLoraTrainer, loraTrainConfig } from './lora';
import { describeRun } from './run_summary';

export const LORA_USAGE = `usage: wuerstchen-train lora --base <dir> --data <source> --out <dir> [--stage c|b] [--rank 4] [--alpha R]
       [--targets ${DEFAULT_LORA_TARGETS.join(',')}] [--steps 1000] [--lr 1e-4] [--batch N] [--resolution PX]
       [--effnet DIR] [--config FILE] [--seed S] [--weight-decay W] [--warmup N] [--checkpoint-every N]
       [--sample-every N] [--resume] [--max-steps N] [--backend NAME] [--progress auto|plain|none]
  trains low-rank adapters on a frozen prior (--stage c, default) or decoder (--stage b) and writes
  <out>/${LORA_WEIGHT_NAME} (keys prior.… or decoder.…)
  --base     a WuerstchenPriorPipeline (stage c) or WuerstchenDecoderPipeline (stage b) folder, a folder holding
             it as wuerstchen-prior/ or wuerstchen/ (the bundled model's layout), or its prior/ or decoder/
  --targets  comma-separated module names (peft's rule: a module path equal to a name or ending in .name);
             Linear and 1×1 conv layers, e.g. also kv_mapper.1,channelwise.0,channelwise.4
  --alpha    scale = alpha / rank (default alpha = rank)
  --config   a configuration of the stage to take the objective, crop geometry, batch and previews from
             (stage c default: diffusers' LoRA example — uniform t, plain ε-MSE, 512 px; stage b: required)
  --effnet   the compressor the prior was trained on (default: effnet/ in or next to the base folder)`;

/** `lora`'s options. */
export const LORA_OPTIONS: OptionSpecs = {
  resume: { kind: 'flag' },
  ...Object.fromEntries(
    [
      'stage',
      'base',
      'data',
      'out',
      'rank',
      'alpha',
      'targets',
      'steps',
      'lr',
      'batch',
      'resolution',
      'effnet',
      'config',
      'seed',
      'weight-decay',
      'warmup',
      'checkpoint-every',
      'sample-every',
      'max-steps',
      'backend',
      'progress',
    ].map((name) => [name, { kind: 'string' } as const]),
  ),
};

export interface LoraCliArgs {
  run: LoraRunOptions;
  data: string;
  out: string;
  resume: boolean;
  maxSteps?: number;
  backend?: string;
  progress: ProgressMode;
}

/** Parse `lora`'s options (after the subcommand); a problem is a UsageError. */
export function parseLoraArgs(argv: string[]): LoraCliArgs {
  const line = parseCommandLine(argv, LORA_OPTIONS);
  if (line.request !== 'run') throw new UsageError(`--${line.request} stands alone`);
  return loraArgs(line.options);
}

/** The checked options of `lora`. */
export function loraArgs(o: ParsedOptions): LoraCliArgs {
  // values first: a malformed one is the problem to report, even when something else is missing too
  const int = (name: string, min: 0 | 1) => (o.has(name) ? readInteger(`--${name}`, o.string(name)!, min) : undefined);
  // rates and decays are written like 1e-4
  const real = (name: string, above: boolean) =>
    o.has(name) ? readNumber(`--${name}`, o.string(name)!, { min: 0, above, exponent: true }) : undefined;
  const stage = o.has('stage') ? readChoice('--stage', o.string('stage')!, ['c', 'b'] as const) : 'c';
  const targets = o
    .string('targets')
    ?.split(',')
    .map((t) => t.trim())
    .filter(Boolean);
  if (targets && !targets.length) throw new UsageError('--targets needs at least one module name');
  const run = {
    stage,
    rank: int('rank', 1) ?? 4,
    alpha: real('alpha', true),
    targets,
    steps: int('steps', 1) ?? 1000,
    lr: real('lr', true) ?? 1e-4,
    batchSize: int('batch', 1),
    resolution: int('resolution', 1),
    effnet: o.string('effnet'),
    config: o.string('config'),
    seed: int('seed', 0),
    weightDecay: real('weight-decay', false),
    warmup: int('warmup', 0),
    checkpointEvery: int('checkpoint-every', 1),
    sampleEvery: int('sample-every', 0),
  };
  const [maxSteps, backend, progress] = [readMaxSteps(o), readBackend(o), readProgressMode(o)];
  o.require(['base', 'data', 'out']);
  return {
    run: { ...run, base: o.string('base')! },
    data: o.string('data')!,
    out: o.string('out')!,
    resume: o.flag('resume'),
    maxSteps,
    backend,
    progress,
  };
}

/** Runs `wuerstchen-train lora` with checked options; returns the exit code. */
export async function runLora(args: LoraCliArgs, io: CommandIO): Promise<number> {
  try {
    checkOutDir(args.out);
  } catch (e) {
    if (!(e instanceof CheckpointError)) throw e;
    io.stderr.write(`wuerstchen-train lora: --out ${e.message}\n`);
    return 2;
  }
  let trainer: LoraTrainer | null = null;
  const stopper = new SignalStopper('wuerstchen-train lora', args.out, io);
  try {
    await useBackend(args.backend);
    const config = loraTrainConfig(args.run);
    const t = (trainer = createLoraTrainer(
      { config, data: args.data, out: args.out, resume: args.resume, maxSteps: args.maxSteps, progress: args.progress },
      { rank: args.run.rank, alpha: args.run.alpha, targets: args.run.targets },
    ));
    stopper.watch(t);
    const summary = await t.run();
    const file = path.join(args.out, LORA_WEIGHT_NAME);
    t.adapters.save(file);
    const n = t.adapters.network.parameters().reduce((a: number, [, p]) => a + p.size, 0);
    io.stderr.write(describeRun('wuerstchen-train lora', args.out, summary));
    io.stderr.write(
      `wuerstchen-train lora: wrote ${file} (${t.adapters.network.paths.length} adapted layers, ${n} parameters, step ${t.step})\n`,
    );
    return stopper.exitCode();
  } catch (e) {
    removeTempFiles(args.out);
    io.stderr.write(`wuerstchen-train lora: ${errorLine(e)}\n`);
    return isBackendError(e) ? 2 : 1;
  } finally {
    stopper.release();
    trainer?.dispose();
  }
}
