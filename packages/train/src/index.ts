/** `@wuerstchen/train`: data, objectives, optimisation, schedules, checkpoints and the three stage trainers. */
import { TrainOptions, Trainer } from './trainer';
import { StageATrainer } from './stage_a';
import { StageBTrainer } from './stage_b';
import { StageCTrainer } from './stage_c';

export * from './rng';
export * from './config';
export * from './checkpoint';
export * from './manifest';
export * from './objectives';
export * from './optim';
export * from './init';
export * from './seeded';
export * from './trainer';
export * from './training_state';
export * from './data/tar';
export * from './data/image';
export * from './data/dataset';
export * from './data/shapes';
export * from './export';
export * from './models_io';
export * from './discriminator';
export * from './testing';
export { StageATrainer } from './stage_a';
export { StageBTrainer } from './stage_b';
export { StageCTrainer, bucketSize } from './stage_c';
export * from './lora';

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
