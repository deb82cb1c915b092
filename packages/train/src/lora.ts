/**
 * LoRA fine-tuning of a trained prior (Stage C) or decoder (Stage B): the stage's own trainer with
 * the base network frozen and low-rank adapters (by default on its attention projections) as the
 * only trained parameters, after diffusers' `train_text_to_image_lora_prior.py`. Stage B's
 * compressor and Stage A stay frozen too.
 *
 * Checkpoints hold `pytorch_lora_weights.safetensors` (diffusers' key convention, see
 * `wuerstchen`'s lora.ts) instead of the model folders, plus the adapters' AdamW moments; resume
 * works as for the other stages. The run's result is `<out>/pytorch_lora_weights.safetensors`.
 */
import * as fs from 'fs';
import * as path from 'path';
import { LoraNetwork, Module, Parameter, loadSafetensors } from '@wuerstchen/core';
import { LORA_WEIGHT_NAME, LoraComponent, saveLoraFile } from 'wuerstchen';
import { indexNumber, readModelIndex } from 'wuerstchen/internal';
import { TrainConfig, parseConfig } from './config';
import { modelArgs, readModelConfig } from './checkpoint';
import { StageBTrainer } from './stage_b';
import { StageCTrainer } from './stage_c';
import { TrainError, TrainOptions } from './trainer';

export interface LoraSettings {
  rank: number;
  /** default: rank. */
  alpha?: number;
  targets?: readonly string[];
}

/**
 * The adapters a LoRA trainer trains: injected into the frozen base model, the only parameters in
 * the optimizer, and the only weights its checkpoints save and load.
 */
class TrainedAdapters {
  network!: LoraNetwork;

  constructor(
    readonly component: LoraComponent,
    readonly settings: LoraSettings,
    /** prefix of the parameter keys in the optimizer state. */
    readonly keyPrefix = '',
  ) {}

  inject(model: Module, seed: number): [string, Parameter][] {
    const { rank, alpha, targets } = this.settings;
    this.network = LoraNetwork.inject(model, { rank, alpha, targets, seed });
    return this.network.parameters().map(([k, p]) => [`${this.keyPrefix}${k}`, p]);
  }

  /** `pytorch_lora_weights.safetensors`, keys `<component>.<module>.lora_A.weight`, … */
  save(file: string): void {
    saveLoraFile(file, this.network, this.component);
  }

  load(checkpointDir: string): void {
    const file = path.join(checkpointDir, LORA_WEIGHT_NAME);
    if (!fs.existsSync(file))
      throw new TrainError(`${checkpointDir}: no ${LORA_WEIGHT_NAME} (not a checkpoint of a LoRA run)`);
    const scope = `${this.component}.`;
    const tensors = new Map(
      [...loadSafetensors(file)].filter(([k]) => k.startsWith(scope)).map(([k, t]) => [k.slice(scope.length), t]),
    );
    this.network.loadStateDict(tensors, file);
  }

  dispose(): void {
    this.network?.dispose();
  }
}

/** LoRA on the prior (diffusers' keys `prior.…`); the base prior stays as loaded. */
export class PriorLoraTrainer extends StageCTrainer {
  readonly adapters: TrainedAdapters;

  constructor(opts: TrainOptions, settings: LoraSettings) {
    super(opts);
    this.adapters = new TrainedAdapters('prior', settings);
  }

  protected override trainedParameters(): [string, Parameter][] {
    return this.adapters.inject(this.prior, this.cfg.seed);
  }

  protected override saveModels(dir: string): void {
    this.adapters.save(path.join(dir, LORA_WEIGHT_NAME));
  }

  protected override loadModels(dir: string): void {
    this.adapters.load(dir);
  }

  override dispose(): void {
    this.adapters.dispose();
    super.dispose();
  }
}

/**
 * LoRA on the decoder, saved under `decoder.` (our prefix; diffusers has no decoder LoRA loader).
 * The base decoder, the compressor and Stage A stay as loaded. Parameters are keyed `decoder.…`,
 * the keys a frozen-compressor phase trains.
 */
export class DecoderLoraTrainer extends StageBTrainer {
  readonly adapters: TrainedAdapters;

  constructor(opts: TrainOptions, settings: LoraSettings) {
    super(opts);
    this.adapters = new TrainedAdapters('decoder', settings, 'decoder.');
  }

  protected override trainedParameters(): [string, Parameter][] {
    return this.adapters.inject(this.decoder, this.cfg.seed);
  }

  protected override saveModels(dir: string): void {
    this.adapters.save(path.join(dir, LORA_WEIGHT_NAME));
  }

  protected override loadModels(dir: string): void {
    this.adapters.load(dir);
  }

  override dispose(): void {
    this.adapters.dispose();
    super.dispose();
  }
}

export type LoraTrainer = PriorLoraTrainer | DecoderLoraTrainer;

/** The LoRA trainer for `opts.config.stage` ('c' prior, 'b' decoder). */
export function createLoraTrainer(opts: TrainOptions, settings: LoraSettings): LoraTrainer {
  if (opts.config.stage === 'c') return new PriorLoraTrainer(opts, settings);
  if (opts.config.stage === 'b') return new DecoderLoraTrainer(opts, settings);
  throw new TrainError(`LoRA trains the prior (stage c) or the decoder (stage b), not stage ${opts.config.stage}`);
}

const LAYOUT = {
  c: { pipeline: 'WuerstchenPriorPipeline', model: 'prior', holder: 'wuerstchen-prior' },
  b: { pipeline: 'WuerstchenDecoderPipeline', model: 'decoder', holder: 'wuerstchen' },
} as const;

/** The pipeline folder and its model folder (`prior/` or `decoder/`) of a `--base` argument. */
export function resolveLoraBase(base: string, stage: 'b' | 'c'): { pipeline: string; model: string } {
  const l = LAYOUT[stage];
  const has = (...p: string[]) => fs.existsSync(path.join(...p));
  let pipeline: string | null = null;
  if (has(base, 'model_index.json') && has(base, l.model, 'config.json')) pipeline = base;
  else if (has(base, l.holder, 'model_index.json')) pipeline = path.join(base, l.holder);
  else if (has(base, 'config.json') && has(base, '..', 'model_index.json')) pipeline = path.dirname(path.resolve(base));
  if (!pipeline) {
    throw new TrainError(
      `--base ${base}: expected a ${l.pipeline} folder (model_index.json, ${l.model}/, text_encoder/, tokenizer/), a folder holding one as ${l.holder}/, or the ${l.model}/ folder inside one`,
    );
  }
  readModelIndex(pipeline, [l.pipeline]);
  return { pipeline: path.resolve(pipeline), model: path.resolve(pipeline, l.model) };
}

/** The compressor the base was trained with: `--effnet`, else `effnet/` in or next to the pipeline folder (the bundled model's layout). */
export function resolveEffnet(pipeline: string, effnet?: string): string {
  if (effnet) return path.resolve(effnet);
  for (const dir of [path.join(pipeline, 'effnet'), path.join(pipeline, '..', 'effnet')]) {
    if (fs.existsSync(path.join(dir, 'config.json'))) return path.resolve(dir);
  }
  throw new TrainError(
    `no semantic compressor found in or next to ${pipeline}: pass --effnet <folder or Stage B run> — the EfficientNetV2-S the model was trained with ` +
      "(Stage B training writes it as effnet/; for warp-ai/wuerstchen-prior it is the effnet of dome272's Stage B checkpoint)",
  );
}

export interface LoraRunOptions extends LoraSettings {
  /** 'c' (default): LoRA on the prior; 'b': on the decoder. */
  stage?: 'b' | 'c';
  base: string;
  effnet?: string;
  /** a configuration of the same stage whose objective, geometry, batch and preview settings are used (required for stage b). */
  config?: string;
  steps: number;
  lr: number;
  batchSize?: number;
  /** side of the crop (default: the template's, else 512 as diffusers); Stage C's compressor input too. */
  resolution?: number;
  weightDecay?: number;
  warmup?: number;
  seed?: number;
  checkpointEvery?: number;
  sampleEvery?: number;
}

function readTemplate(file: string, stage: 'b' | 'c'): Record<string, unknown> {
  let t: Record<string, unknown>;
  try {
    t = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new TrainError(`${file}: cannot read the configuration (${(e as Error).message})`);
  }
  if (t.stage !== undefined && t.stage !== stage)
    throw new TrainError(
      `${file}: a stage-${stage} LoRA run needs a stage-${stage} configuration, this one is stage ${String(t.stage)}`,
    );
  return t;
}

/**
 * The TrainConfig of a LoRA run. The model, its weights, the text encoder, the tokenizer, the
 * compressor, Stage A and the prior's latent scaling always come from the base (they must match
 * what it was trained with); the rest from `--config` when given. Without it (Stage C only):
 * diffusers' LoRA example — uniform t, plain ε-MSE, no caption dropout, 512 px. Either way AdamW
 * without weight decay, constant lr after `warmup`, clip 1, no EMA.
 */
export function loraTrainConfig(o: LoraRunOptions): TrainConfig {
  const stage = o.stage ?? 'c';
  const { pipeline, model } = resolveLoraBase(o.base, stage);
  if (stage === 'b' && !o.config)
    throw new TrainError(
      'a decoder LoRA needs --config: a stage-b configuration for its crop geometry and objective (e.g. configs/tiny-b.json)',
    );
  const template = o.config ? readTemplate(o.config, stage) : {};
  const phases = template.phases as Record<string, unknown>[] | undefined;
  const last = phases?.[phases.length - 1] ?? {};
  const side = o.resolution ?? (last.image_size as number | undefined) ?? 512;
  // the compressor's input: Stage C's own setting (default the crop side); Stage B keeps the template's ratio to the crop
  const effnetSize =
    stage === 'c'
      ? (o.resolution ?? (last.effnet_size as number | undefined) ?? side)
      : Math.round(((last.effnet_size as number) * side) / (last.image_size as number));
  const optimizer = (template.optimizer as Record<string, unknown> | undefined) ?? {};
  const objective = (template.objective as Record<string, unknown> | undefined) ?? {
    t_sampler: 'uniform',
    p2: null,
    caption_dropout: 0,
  };
  const stageC = () => {
    const index = readModelIndex(pipeline, ['WuerstchenPriorPipeline']);
    return {
      latent_scaling: {
        latent_mean: indexNumber(index, 'latent_mean', 42),
        latent_std: indexNumber(index, 'latent_std', 1),
      },
    };
  };
  const raw: Record<string, unknown> = {
    ...template,
    stage,
    name: `lora-${LAYOUT[stage].model}-r${o.rank}`,
    seed: o.seed ?? (template.seed as number | undefined) ?? 0,
    model: modelArgs(readModelConfig(model)),
    init_from: model,
    init_rules: [],
    text_encoder: path.join(pipeline, 'text_encoder'),
    tokenizer: path.join(pipeline, 'tokenizer'),
    effnet: { from: resolveEffnet(pipeline, o.effnet) },
    vqgan: stage === 'b' ? { from: path.join(pipeline, 'vqgan') } : undefined,
    optimizer: {
      ...optimizer,
      lr: o.lr,
      weight_decay: o.weightDecay ?? 0,
      warmup: o.warmup ?? 0,
      grad_clip: optimizer.grad_clip ?? 1,
    },
    ema: null,
    // the compressor is frozen in a decoder LoRA run: no compressor heads
    objective: stage === 'c' ? { ...objective, ...stageC() } : { ...objective, effnet_words: 0, effnet_patches: 0 },
    phases: [
      {
        random_crop: false,
        ...last,
        name: 'lora',
        steps: o.steps,
        batch_size: o.batchSize ?? (last.batch_size as number | undefined) ?? 4,
        grad_accum: 1,
        image_size: side,
        effnet_size: effnetSize,
        aspect_ratios: undefined,
        freeze_effnet: stage === 'b' ? true : undefined,
        lr: undefined,
      },
    ],
    checkpoint_every: o.checkpointEvery ?? Math.min(o.steps, 500),
    sample_every: o.sampleEvery ?? 0,
  };
  return parseConfig(raw, o.config ?? path.join(pipeline, 'model_index.json'), stage);
}
