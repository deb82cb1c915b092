/**
 * `wuerstchen-train lora`: LoRA fine-tuning of a prior or a decoder (see lora.ts). Ends by writing
 * `<out>/pytorch_lora_weights.safetensors`, which `wuerstchen generate --lora` reads, and for the
 * prior diffusers' `WuerstchenPriorPipeline.load_lora_weights`.
 */
import * as path from 'path';
import { DEFAULT_LORA_TARGETS, useBackend } from '@wuerstchen/core';
import { LORA_WEIGHT_NAME } from 'wuerstchen';
import { CheckpointError, checkOutDir, removeTempFiles } from './checkpoint';
import { LoraRunOptions, LoraTrainer, createLoraTrainer, loraTrainConfig } from './lora';

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

const VALUE_FLAGS = [
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
];

export interface LoraCliArgs {
  run: LoraRunOptions;
  data: string;
  out: string;
  resume: boolean;
  maxSteps?: number;
  backend?: string;
  progress: 'auto' | 'plain' | 'none';
}

class LoraUsageError extends Error {}

/** Parse `lora`'s flags (after the subcommand). */
export function parseLoraArgs(argv: string[]): LoraCliArgs {
  const flags: Record<string, string> = {};
  let resume = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new LoraUsageError(`unexpected argument "${a}"`);
    const [k, inline] = a.slice(2).split(/=(.*)/s, 2);
    if (k === 'resume' && inline === undefined) resume = true;
    else if (VALUE_FLAGS.includes(k)) {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new LoraUsageError(`--${k} needs a value`);
      flags[k] = v;
    } else throw new LoraUsageError(`unknown option --${k}`);
  }
  for (const req of ['base', 'data', 'out']) if (!flags[req]) throw new LoraUsageError(`--${req} is required`);
  const num = (k: string, check: (v: number) => boolean, what: string): number | undefined => {
    if (flags[k] === undefined) return undefined;
    const v = Number(flags[k]);
    if (flags[k].trim() === '' || !check(v)) throw new LoraUsageError(`--${k} must be ${what}, got "${flags[k]}"`);
    return v;
  };
  const posInt = (v: number) => Number.isSafeInteger(v) && v > 0;
  const positive = (v: number) => Number.isFinite(v) && v > 0;
  const progress = flags.progress ?? 'auto';
  if (!['auto', 'plain', 'none'].includes(progress)) throw new LoraUsageError('--progress must be auto, plain or none');
  const targets = flags.targets
    ?.split(',')
    .map((t) => t.trim())
    .filter(Boolean);
  const stage = flags.stage ?? 'c';
  if (stage !== 'b' && stage !== 'c')
    throw new LoraUsageError(`--stage must be c (the prior) or b (the decoder), got "${stage}"`);
  if (targets && !targets.length) throw new LoraUsageError('--targets needs at least one module name');
  return {
    run: {
      stage,
      base: flags.base,
      rank: num('rank', posInt, 'a positive integer') ?? 4,
      alpha: num('alpha', positive, 'a positive number'),
      targets,
      steps: num('steps', posInt, 'a positive integer') ?? 1000,
      lr: num('lr', positive, 'a positive number') ?? 1e-4,
      batchSize: num('batch', posInt, 'a positive integer'),
      resolution: num('resolution', posInt, 'a positive integer'),
      effnet: flags.effnet,
      config: flags.config,
      seed: num('seed', (v) => Number.isSafeInteger(v) && v >= 0, 'a non-negative integer'),
      weightDecay: num('weight-decay', (v) => Number.isFinite(v) && v >= 0, 'a number >= 0'),
      warmup: num('warmup', (v) => Number.isSafeInteger(v) && v >= 0, 'a non-negative integer'),
      checkpointEvery: num('checkpoint-every', posInt, 'a positive integer'),
      sampleEvery: num('sample-every', (v) => Number.isSafeInteger(v) && v >= 0, 'a non-negative integer'),
    },
    data: flags.data,
    out: flags.out,
    resume,
    maxSteps: num('max-steps', posInt, 'a positive integer'),
    backend: flags.backend,
    progress: progress as LoraCliArgs['progress'],
  };
}

/** Runs `wuerstchen-train lora …`; returns the exit code. */
export async function loraCommand(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(`${LORA_USAGE}\n`);
    return 0;
  }
  let args: LoraCliArgs;
  try {
    args = parseLoraArgs(argv);
  } catch (e) {
    if (!(e instanceof LoraUsageError)) throw e;
    process.stderr.write(`wuerstchen-train lora: ${e.message}\n${LORA_USAGE}\n`);
    return 2;
  }
  try {
    checkOutDir(args.out);
  } catch (e) {
    if (!(e instanceof CheckpointError)) throw e;
    process.stderr.write(`wuerstchen-train lora: --out ${e.message}\n`);
    return 2;
  }
  let trainer: LoraTrainer | null = null;
  let signal: 'SIGINT' | 'SIGTERM' | undefined;
  const exitCode = (sig: 'SIGINT' | 'SIGTERM') => (sig === 'SIGINT' ? 130 : 143);
  const handlers: [NodeJS.Signals, () => void][] = [];
  try {
    await useBackend(args.backend);
    const config = loraTrainConfig(args.run);
    const t = (trainer = createLoraTrainer(
      { config, data: args.data, out: args.out, resume: args.resume, maxSteps: args.maxSteps, progress: args.progress },
      { rank: args.run.rank, alpha: args.run.alpha, targets: args.run.targets },
    ));
    for (const sig of ['SIGINT', 'SIGTERM'] as const) {
      const handler = () => {
        if (signal) {
          // a second signal: give up at once, leaving the last complete checkpoint
          removeTempFiles(args.out);
          process.exit(exitCode(sig));
        }
        signal = sig;
        process.stderr.write(
          `\nwuerstchen-train lora: ${sig}: finishing the current step and writing a checkpoint (again to abort)\n`,
        );
        t.requestStop();
      };
      process.on(sig, handler);
      handlers.push([sig, handler]);
    }
    await t.run();
    const file = path.join(args.out, LORA_WEIGHT_NAME);
    t.saveLora(file);
    const n = t.lora.parameters().reduce((a: number, [, p]) => a + p.size, 0);
    process.stderr.write(
      `wuerstchen-train lora: wrote ${file} (${t.lora.paths.length} adapted layers, ${n} parameters, step ${t.step})\n`,
    );
    return signal ? exitCode(signal) : 0;
  } catch (e) {
    removeTempFiles(args.out);
    const err = e instanceof Error ? e : new Error(String(e));
    process.stderr.write(
      `wuerstchen-train lora: ${process.env.WUERSTCHEN_DEBUG ? (err.stack ?? err.message) : err.message}\n`,
    );
    return 1;
  } finally {
    for (const [sig, handler] of handlers) process.off(sig, handler);
    trainer?.dispose();
  }
}
