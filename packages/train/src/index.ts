/**
 * `@wuerstchen/train`: the three stage trainers and the LoRA trainers, their configuration, datasets, checkpoints
 * and export to diffusers pipeline folders. Helpers for this project's own tools and tests are in `./internal`.
 */
import { TrainOptions, Trainer } from './trainer';
import { StageATrainer } from './stage_a';
import { StageBTrainer } from './stage_b';
import { StageCTrainer } from './stage_c';

export { StageATrainer } from './stage_a';
export { StageBTrainer } from './stage_b';
export { StageCTrainer } from './stage_c';
export { TrainError, Trainer } from './trainer';
export type { RunSummary, StepMetrics, TrainOptions } from './trainer';
export { ConfigError, loadConfig, parseConfig } from './config';
export type { OptimizerConfig, PhaseConfig, Stage, TrainConfig } from './config';
export { DatasetError, ImageTextDataset } from './data/dataset';
export type { DatasetOptions, Sample } from './data/dataset';
export { makeShapes } from './data/shapes';
export type { MakeShapesOptions } from './data/shapes';
export { CheckpointError, readLatest } from './checkpoint';
export { ExportError, exportPipelines } from './export';
export type { ExportOptions } from './export';
export { DecoderLoraTrainer, PriorLoraTrainer, createLoraTrainer, loraTrainConfig } from './lora';
export type { LoraRunOptions, LoraSettings, LoraTrainer } from './lora';

/** The trainer for `opts.config.stage`. */
export function createTrainer(opts: TrainOptions): Trainer {
  switch (opts.config.stage) {
    case 'a':
      return new StageATrainer(opts);
    case 'b':
      return new StageBTrainer(opts);
    case 'c':
      return new StageCTrainer(opts);
  }
}
