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
 */
import * as path from 'path';
import { useBackend } from '@wuerstchen/core';
import { ConfigError, Stage, TrainConfig, loadConfig } from './config';
import { DatasetError } from './data/dataset';
import { createTrainer } from './index';
import { TrainError } from './trainer';

const USAGE = `usage: wuerstchen-train stage-a|stage-b|stage-c --config <file> --data <source> --out <dir> [--resume]
       [--max-steps N] [--backend auto|cpu|wasm|native|tensorflow] [--effnet DIR] [--vqgan DIR] [--init-from DIR]
       [--progress auto|plain|none]
  <source>: a folder of images with same-named .txt captions, a .jsonl manifest, or WebDataset .tar shards
            (a .tar file, a folder of .tar files, 'shard-{000..009}.tar', or a comma-separated list)`;

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
}

export class UsageError extends Error {}

export function parseArgs(argv: string[]): CliArgs {
  const [cmd, ...rest] = argv;
  const m = /^stage-([abc])$/.exec(cmd ?? '');
  if (!m) throw new UsageError(cmd ? `unknown command "${cmd}"` : 'missing command');
  const flags: Record<string, string | boolean> = {};
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i];
    if (!a.startsWith('--')) throw new UsageError(`unexpected argument "${a}"`);
    const [k, inline] = a.slice(2).split('=', 2);
    if (k === 'resume') flags.resume = true;
    else if (['config', 'data', 'out', 'max-steps', 'backend', 'effnet', 'vqgan', 'init-from', 'progress'].includes(k)) {
      const v = inline ?? rest[++i];
      if (v === undefined) throw new UsageError(`--${k} needs a value`);
      flags[k] = v;
    } else if (k === 'help' || k === 'h') throw new UsageError('');
    else throw new UsageError(`unknown option --${k}`);
  }
  for (const req of ['config', 'data', 'out']) if (!flags[req]) throw new UsageError(`--${req} is required`);
  const progress = (flags.progress as string | undefined) ?? 'auto';
  if (!['auto', 'plain', 'none'].includes(progress)) throw new UsageError('--progress must be auto, plain or none');
  let maxSteps: number | undefined;
  if (flags['max-steps'] !== undefined) {
    maxSteps = Number(flags['max-steps']);
    if (!Number.isInteger(maxSteps) || maxSteps < 1) throw new UsageError('--max-steps must be a positive integer');
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
  };
}

export function applyOverrides(cfg: TrainConfig, args: CliArgs): TrainConfig {
  const out = { ...cfg };
  if (args.effnet) out.effnet = { ...(cfg.effnet ?? {}), from: path.resolve(args.effnet) };
  if (args.vqgan) out.vqgan = { ...(cfg.vqgan ?? {}), from: path.resolve(args.vqgan) };
  if (args.initFrom) out.init_from = path.resolve(args.initFrom);
  return out;
}

export async function main(argv: string[]): Promise<number> {
  let args: CliArgs;
  try {
    args = parseArgs(argv);
  } catch (e) {
    if (e instanceof UsageError) {
      if (e.message) process.stderr.write(`wuerstchen-train: ${e.message}\n`);
      process.stderr.write(`${USAGE}\n`);
      return e.message ? 2 : 0;
    }
    throw e;
  }
  try {
    await useBackend(args.backend);
    const cfg = applyOverrides(loadConfig(args.config, args.stage), args);
    const trainer = createTrainer({ config: cfg, data: args.data, out: args.out, resume: args.resume, maxSteps: args.maxSteps, progress: args.progress });
    let stopping = false;
    const onSignal = (sig: string) => {
      if (stopping) process.exit(130);
      stopping = true;
      process.stderr.write(`\nwuerstchen-train: ${sig}: finishing the current step and writing a checkpoint (again to abort)\n`);
      trainer.requestStop();
    };
    process.on('SIGINT', () => onSignal('SIGINT'));
    process.on('SIGTERM', () => onSignal('SIGTERM'));
    await trainer.run();
    trainer.dispose();
    return 0;
  } catch (e) {
    if (e instanceof ConfigError || e instanceof DatasetError || e instanceof TrainError) {
      process.stderr.write(`wuerstchen-train: ${e.message}\n`);
      return 1;
    }
    process.stderr.write(`wuerstchen-train: ${(e as Error).stack ?? String(e)}\n`);
    return 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e) => {
      process.stderr.write(`wuerstchen-train: ${(e as Error).stack ?? String(e)}\n`);
      process.exit(1);
    },
  );
}
