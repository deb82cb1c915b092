/**
 * The training loop shared by the three stages: phases, gradient accumulation, clipping,
 * non-finite skipping, warm-up, checkpoints, resume, metrics, progress and preview grids.
 * Stage specifics live in stage_a.ts / stage_b.ts / stage_c.ts.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { HostTensor, Module, Parameter } from '@wuerstchen/core';
import { ProgressBar, ProgressMode } from '@wuerstchen/core/cli';
import { variableGrads } from '@wuerstchen/core/internal';
import { Generator } from 'wuerstchen';
import { PhaseConfig, TrainConfig, phaseAt, totalSteps, weightingOf } from './config';
import {
  checkOutDir,
  existingRun,
  findResumeCheckpoint,
  loadDiffusersWeights,
  loadTensorFile,
  resolveModelDir,
  saveTensorFile,
  stepName,
  writeCheckpoint,
  writeFileSynced,
} from './checkpoint';
import { DatasetOptions, ImageTextDataset, Sample } from './data/dataset';
import { GridRow, makeGrid } from './data/grid';
import {
  RGBImage,
  centerCrop,
  hflip,
  normalize,
  randomCrop,
  resize,
  resizeShortSide,
  resizeToCover,
  encodePNG,
} from './data/image';
import { InitRule, initModule } from './init';
import { RowCache } from './models_io';
import { NoisedBatch, addNoise, diffusionLoss } from './objectives';
import { AdamW, HostTensorSource, clipGrads, globalNorm, oneCycleLR, warmupLR } from './optim';
import { deriveSeed } from './rng';
import { TRAINING_STATE_VERSION, TrainingState, parseTrainingState } from './training_state';

export interface TrainOptions {
  config: TrainConfig;
  /** dataset spec (folder, .jsonl, .tar shards). */
  data: string;
  /** run folder. */
  out: string;
  resume?: boolean;
  /** stop after this many total updates (a checkpoint is written there). */
  maxSteps?: number;
  /** log lines (warnings, checkpoint notices); default stderr via the progress display. */
  log?: (line: string) => void;
  /** progress display: 'auto' (bar on a TTY), 'plain' (a line every log_every steps), 'none'. */
  progress?: ProgressMode;
  /** called after every update with its metrics. */
  onStep?: (m: StepMetrics) => void;
}

export interface StepMetrics {
  step: number;
  phase: string;
  phase_index: number;
  /** unweighted loss (mean per-sample MSE for diffusion; generator loss for Stage A). */
  loss: number;
  /** the loss actually backpropagated (p2-weighted for diffusion). */
  loss_adjusted: number;
  ema_loss: number;
  grad_norm: number;
  lr: number;
  skipped: number;
  sec_per_step: number;
  /** CPU seconds (user + system) of this process for the update. */
  cpu_sec_per_step: number;
  [extra: string]: number | string;
}

/** The result of one stage-specific update (the base class applies optimizer steps through helpers). */
export interface UpdateResult {
  loss: number;
  lossAdjusted: number;
  gradNorm: number;
  lr: number;
  skipped: boolean;
  extra?: Record<string, number>;
}

/** Accumulates gradients of a set of parameters over micro-batches. */
export class GradAccumulator {
  readonly grads = new Map<string, tf.Tensor>();
  private readonly byVarName = new Map<string, string>();
  readonly vars: tf.Variable[];
  constructor(readonly params: [string, Parameter][]) {
    this.vars = params.map(([k, p]) => {
      this.byVarName.set(p.value.name, k);
      return p.value;
    });
  }
  /** Backprop `f` (a scalar loss) and add the gradients; returns the loss value. */
  add(f: () => tf.Scalar): number {
    const { value, grads } = variableGrads(f, this.vars);
    const v = value.dataSync()[0];
    value.dispose();
    for (const [name, g] of Object.entries(grads)) {
      const key = this.byVarName.get(name);
      if (!key) {
        g.dispose();
        continue;
      }
      const prev = this.grads.get(key);
      if (prev) {
        this.grads.set(key, tf.add(prev, g));
        prev.dispose();
        g.dispose();
      } else this.grads.set(key, g);
    }
    return v;
  }
  dispose(): void {
    for (const g of this.grads.values()) g.dispose();
    this.grads.clear();
  }
}

/**
 * One micro-batch of the ε-objective: `predict()` (run inside the gradient tape) returns ε̂ for `nb.xt`; the
 * p2-weighted loss, plus the sum of `aux()` when given (further loss terms, run in the same tape after
 * `predict`), divided by `accum` is backpropagated into `acc`. Returns the unweighted mean MSE (what is
 * logged), the backpropagated value and each aux term's value.
 */
export function addDiffusionLoss(
  acc: GradAccumulator,
  nb: NoisedBatch,
  accum: number,
  predict: () => tf.Tensor,
  aux?: () => tf.Tensor1D,
): { loss: number; adjusted: number; aux: number[] } {
  const kept: { per?: tf.Tensor; aux?: tf.Tensor1D } = {};
  const adjusted = acc.add(() => {
    const { perSample, weighted } = diffusionLoss(predict(), nb.noise, nb.weights);
    kept.per = tf.keep(perSample);
    if (!aux) return tf.div(weighted, accum) as tf.Scalar;
    kept.aux = tf.keep(aux());
    return tf.div(tf.add(weighted, tf.sum(kept.aux)), accum) as tf.Scalar;
  });
  const loss = tf.tidy(() => tf.mean(kept.per!).dataSync()[0]);
  const auxValues = kept.aux ? Array.from(kept.aux.dataSync()) : [];
  tf.dispose([kept.per!, ...(kept.aux ? [kept.aux] : [])]);
  return { loss, adjusted, aux: auxValues };
}

/** What a call of run() did, for the summary the CLI prints. */
export interface RunSummary {
  /** the step training started from (0, or the resumed checkpoint's). */
  startStep: number;
  step: number;
  totalSteps: number;
  /** `finished`: reached the last step; `already-finished`: a finished run was resumed, nothing trained;
   *  `max-steps`: stopped at --max-steps; `stopped`: stopped on request (a signal). */
  outcome: 'finished' | 'already-finished' | 'max-steps' | 'stopped';
  /** the checkpoint folder holding the last step. */
  checkpoint: string;
  /** the folder of preview grids, when the run has one. */
  samples?: string;
  /** wall-clock seconds of this call, set-up included. */
  seconds: number;
}

/** An error the CLI reports as a plain message (no stack): bad arguments, an occupied --out. */
export class TrainError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TrainError';
  }
}

export abstract class Trainer {
  readonly cfg: TrainConfig;
  readonly out: string;
  readonly rng: Generator;
  readonly dataset: ImageTextDataset;
  step = 0;
  skipped = 0;
  emaLoss: number | null = null;
  finished = false;
  protected progress: ProgressBar;
  protected readonly log: (line: string) => void;
  private metricsFile: string;
  private stopRequested = false;

  /** Finish the current update, write a checkpoint and return from run() (SIGINT/SIGTERM). */
  requestStop(): void {
    this.stopRequested = true;
  }

  constructor(readonly opts: TrainOptions) {
    this.cfg = opts.config;
    this.out = opts.out;
    this.rng = new Generator(this.cfg.seed);
    this.progress = new ProgressBar(process.stderr, { mode: opts.progress, every: this.cfg.log_every });
    this.log = opts.log ?? ((l) => this.progress.log(l));
    this.dataset = new ImageTextDataset(opts.data, this.datasetOptions(this.log));
    this.metricsFile = path.join(this.out, 'metrics.jsonl');
  }

  // ---- stage hooks --------------------------------------------------------------------------
  /** Build every model (seeded init or loaded weights). */
  protected abstract setup(): void;
  /** One optimizer update from `batch` samples split into `accum` micro-batches. */
  protected abstract update(batch: Sample[], phase: PhaseConfig, accum: number): UpdateResult;
  /** Write the model folders into a checkpoint folder. */
  protected abstract saveModels(dir: string): void;
  /** Load the model folders of a checkpoint folder. */
  protected abstract loadModels(dir: string): void;
  /** Optimizer / EMA tensors and their step counters. */
  protected abstract optimizerState(): { tensors: Map<string, HostTensor>; steps: Record<string, number> };
  protected abstract loadOptimizerState(tensors: HostTensorSource, steps: Record<string, number>): void;
  /** Write a PNG preview grid. */
  protected abstract preview(file: string): void;
  /** Free every tensor. */
  abstract dispose(): void;

  // ---- helpers for stages -------------------------------------------------------------------
  /** The `model` config of the run, with `dropout: 0` when the run switches dropout off. */
  protected modelConfig<C extends { dropout: number }>(): Partial<C> {
    const c = { ...(this.cfg.model as Partial<C>) };
    if (this.cfg.dropout === 'off') c.dropout = 0;
    return c;
  }

  /** The trained model's start: the `init_from` weights (its `name` sub-folder of a run), else the seeded init under `name`. */
  protected initOrLoad(model: Module, name: string, rules: InitRule[]): void {
    if (this.cfg.init_from) loadDiffusersWeights(model, resolveModelDir(this.cfg.init_from, name));
    else initModule(model, new Generator(deriveSeed(this.cfg.seed, 'init', name)), [...this.cfg.init_rules, ...rules]);
  }

  /** Run `f` with `models` in eval mode, then put each back in the mode it had. */
  protected static inEvalMode<T>(models: Module[], f: () => T): T {
    const was = models.map((m) => m.training);
    models.forEach((m) => m.eval());
    try {
      return f();
    } finally {
      models.forEach((m, i) => m.train(was[i]));
    }
  }

  /** `phase` (default the first) with deterministic crops: centre crop, no flip (evaluation and previews). */
  protected evalPhase(phase: PhaseConfig = this.cfg.phases[0]): PhaseConfig {
    return { ...phase, random_crop: false, hflip: false };
  }

  /** Base learning rate at the current update count (warm-up or OneCycle, over `phase`'s schedule span). */
  protected learningRate(phase: PhaseConfig, updates: number): number {
    const base = phase.lr ?? this.cfg.optimizer.lr;
    const span = this.scheduleSpan(phase);
    const u = Math.max(0, updates - span.start);
    if (this.cfg.one_cycle) {
      const oc = this.cfg.one_cycle;
      return oneCycleLR(base, span.length, u, oc.pct_start, oc.div_factor, oc.final_div_factor);
    }
    return warmupLR(base, this.cfg.optimizer.warmup, u);
  }

  /** The updates that `phase`'s learning-rate schedule runs over: the whole run, unless a stage splits it. */
  protected scheduleSpan(_phase: PhaseConfig): { start: number; length: number } {
    return { start: 0, length: totalSteps(this.cfg) };
  }

  /** Clip and apply accumulated gradients unless the loss or the norm is not finite. */
  protected applyGradients(
    acc: GradAccumulator,
    opt: AdamW,
    lr: number,
    lossFinite: boolean,
    clip = this.cfg.optimizer.grad_clip,
  ): { gradNorm: number; skipped: boolean } {
    const norm = globalNorm(acc.grads);
    if (!lossFinite || !Number.isFinite(norm)) return { gradNorm: norm, skipped: true };
    if (clip > 0) clipGrads(acc.grads, norm, clip);
    opt.apply(acc.grads, lr);
    return { gradNorm: norm, skipped: false };
  }

  /** Training crop of a sample: Resize(short side) → RandomCrop/CenterCrop → optional flip. */
  protected cropSample(s: Sample, phase: PhaseConfig, size?: [number, number]): RGBImage {
    const [w, h] = size ?? [phase.image_size, phase.image_size];
    const resized = size
      ? resizeToCover(s.image, w, h)
      : phase.resize
        ? resizeShortSide(s.image, phase.image_size)
        : s.image;
    let img = phase.random_crop ? randomCrop(resized, w, h, s.rng) : centerCrop(resized, w, h);
    if (phase.hflip && s.rng.nextFloat() < 0.5) img = hflip(img);
    return img;
  }

  /**
   * Per-sample outputs of a frozen network: cached (host memory, per sample id and `tag`) when the
   * phase's crops are deterministic, else computed for the whole batch. Returns `[B, ...rowShape]`.
   */
  protected frozenRows(
    cache: RowCache,
    batch: Sample[],
    phase: PhaseConfig,
    tag: string,
    rowShape: number[],
    f: (samples: Sample[]) => tf.Tensor,
  ): tf.Tensor {
    if (phase.random_crop || phase.hflip || phase.aspect_ratios?.length) return f(batch);
    const keys = batch.map((s) => `${tag}/${s.id}`);
    const byKey = new Map(batch.map((s, i) => [keys[i], s]));
    return cache.stack(keys, rowShape, (k) => f([byKey.get(k)!]));
  }

  /** The compressor's input: Resize(short side, bilinear AA) → CenterCrop → ImageNet Normalize. */
  protected effnetInput(img: RGBImage, w: number, h: number): RGBImage {
    const scaled = w === h ? centerCrop(resizeShortSide(img, w), w, h) : resize(img, w, h);
    return normalize(scaled);
  }

  protected static toTensor(images: RGBImage[]): tf.Tensor4D {
    const { width, height } = images[0];
    const data = new Float32Array(images.length * width * height * 3);
    images.forEach((im, i) => data.set(im.data, i * width * height * 3));
    return tf.tensor4d(data, [images.length, height, width, 3]);
  }

  protected static toImages(t: tf.Tensor): RGBImage[] {
    const [b, h, w] = t.shape as number[];
    const data = t.dataSync() as Float32Array;
    return Array.from({ length: b }, (_, i) => ({
      width: w,
      height: h,
      data: Float32Array.from(data.subarray(i * h * w * 3, (i + 1) * h * w * 3)),
    }));
  }

  /** Writes a labelled preview grid (atomically: a viewer never sees half a PNG). */
  protected writeGrid(file: string, rows: GridRow[]): void {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const tmp = `${file}.tmp-${process.pid}`;
    fs.writeFileSync(tmp, encodePNG(makeGrid(rows)));
    fs.renameSync(tmp, file);
  }

  private datasetOptions(log: (line: string) => void): DatasetOptions {
    return {
      seed: this.cfg.seed,
      shuffleBuffer: this.cfg.shuffle_buffer,
      maxImagePixels: this.cfg.max_image_pixels,
      strict: this.cfg.strict_data,
      log,
    };
  }

  /** The first `n` samples of the dataset in a fresh, seeded order (for previews; training state untouched). */
  protected fixedSamples(n: number): Sample[] {
    const ds = new ImageTextDataset(
      this.opts.data,
      this.datasetOptions(() => undefined),
    );
    try {
      return Array.from({ length: n }, () => ds.next());
    } finally {
      ds.close();
    }
  }

  // ---- loop ---------------------------------------------------------------------------------
  private state(): TrainingState {
    const { index, phase, stepInPhase } = phaseAt(this.cfg, this.step);
    const steps = this.optimizerSteps();
    return {
      version: TRAINING_STATE_VERSION,
      stage: this.cfg.stage,
      config_name: this.cfg.name,
      step: this.step,
      total_steps: totalSteps(this.cfg),
      phase: { index, name: phase.name, step_in_phase: stepInPhase },
      optimizer_steps: steps,
      skipped: this.skipped,
      ema_loss: this.emaLoss,
      rng: this.rng.state(),
      data: this.dataset.state(),
      finished: this.finished,
      extra: this.extraState(),
    };
  }

  protected abstract optimizerSteps(): Record<string, number>;
  protected extraState(): Record<string, unknown> | undefined {
    return undefined;
  }
  protected loadExtraState(_extra: Record<string, unknown> | undefined): void {}

  /** Write a checkpoint of the current state (atomic; `latest` switches at the end). */
  checkpoint(): string {
    const dir = writeCheckpoint(
      this.out,
      this.step,
      (tmp) => {
        this.saveModels(tmp);
        // test hook: hold the process inside a checkpoint write (to kill it there deliberately)
        const hold = Number(process.env.WUERSTCHEN_TRAIN_CHECKPOINT_HOLD_MS ?? 0);
        if (hold > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, hold);
        const { tensors } = this.optimizerState();
        saveTensorFile(path.join(tmp, 'optimizer.safetensors'), tensors);
        writeFileSynced(path.join(tmp, 'training_state.json'), JSON.stringify(this.state(), null, 2) + '\n');
      },
      this.cfg.keep_checkpoints,
    );
    return dir;
  }

  /** The checked `training_state.json` of a checkpoint folder named for `step`. */
  private readState(dir: string, step: number): TrainingState {
    return parseTrainingState(fs.readFileSync(path.join(dir, 'training_state.json'), 'utf8'), this.cfg.stage, step);
  }

  /** Restore everything from a checkpoint folder and its checked state. */
  restore(dir: string, st: TrainingState): void {
    this.loadModels(dir);
    const file = path.join(dir, 'optimizer.safetensors');
    const tensors = loadTensorFile(file);
    const source: HostTensorSource = {
      get: (k) => {
        const t = tensors.get(k);
        if (!t) throw new TrainError(`${file}: missing ${k}`);
        return t;
      },
    };
    this.loadOptimizerState(source, st.optimizer_steps);
    this.step = st.step;
    this.skipped = st.skipped;
    this.emaLoss = st.ema_loss;
    this.rng.setState(st.rng);
    this.dataset.restore(st.data);
    this.finished = st.finished;
    this.loadExtraState(st.extra);
  }

  /** Keep only metric lines up to the resumed step. */
  private truncateMetrics(): void {
    if (!fs.existsSync(this.metricsFile)) return;
    const kept = fs
      .readFileSync(this.metricsFile, 'utf8')
      .split('\n')
      .filter((l) => {
        if (!l.trim()) return false;
        try {
          return (JSON.parse(l) as { step: number }).step <= this.step;
        } catch {
          return false;
        }
      });
    fs.writeFileSync(this.metricsFile, kept.map((l) => l + '\n').join(''));
  }

  private ready = false;

  /** Build the models (idempotent; run() calls it). */
  init(): this {
    if (!this.ready) {
      this.setup();
      this.ready = true;
    }
    return this;
  }

  /**
   * A deterministic held-out style loss on fixed samples (centre crops, fixed t grid, fixed noise,
   * eval mode): the diffusion loss for Stage B/C, the reconstruction MSE for Stage A. Does not
   * touch the training state.
   */
  abstract evalLoss(n?: number): number;

  /** Fixed noise for a diffusion evalLoss on `x0`: t on an even grid over (0.05, 0.95), ε from the seed 'eval'. */
  protected evalNoise(x0: tf.Tensor): NoisedBatch {
    const n = x0.shape[0];
    const t = Array.from({ length: n }, (_, i) => 0.05 + (0.9 * (i + 0.5)) / n);
    return addNoise(x0, t, new Generator(deriveSeed(this.cfg.seed, 'eval')), weightingOf(this.cfg.objective));
  }

  /**
   * Where training starts: the newest intact checkpoint with `resume` (null when the run folder has
   * none at all); without `resume` a run folder that holds any checkpoint is refused.
   */
  private resumePoint(): { dir: string; state: TrainingState } | null {
    if (!this.opts.resume) {
      const existing = existingRun(this.out);
      if (existing)
        throw new TrainError(
          `${this.out} already holds a training run (${existing}); pass --resume to continue it or choose another --out`,
        );
      return null;
    }
    const point = findResumeCheckpoint(this.out, (dir, step) => this.readState(dir, step), this.log);
    if (!point) {
      this.log(`--resume: no checkpoint in ${this.out}; starting from scratch`);
      return null;
    }
    const total = totalSteps(this.cfg);
    if (point.step > total)
      throw new TrainError(
        `${point.dir}: the checkpoint is at step ${point.step}, past the ${total} steps of this configuration; nothing to train`,
      );
    return { dir: point.dir, state: point.value };
  }

  /** Run (or resume) training to the end of the schedule (or `maxSteps`). */
  async run(): Promise<RunSummary> {
    const started = Date.now();
    checkOutDir(this.out);
    fs.mkdirSync(this.out, { recursive: true });
    const start = this.resumePoint();
    this.init();
    // the resolved configuration, so tools (export) know the data geometry, tokenizer and text encoder of the run
    writeFileSynced(
      path.join(this.out, 'train_config.json'),
      JSON.stringify(this.cfg, (_k, v) => (v instanceof RegExp ? v.source : v), 2) + '\n',
    );
    if (start) {
      this.restore(start.dir, start.state);
      this.log(
        `resumed from ${path.relative(process.cwd(), start.dir) || start.dir} at step ${this.step} (phase ${phaseAt(this.cfg, this.step).phase.name})`,
      );
    }
    this.truncateMetrics();
    const total = totalSteps(this.cfg);
    const stopAt = Math.min(total, this.opts.maxSteps ?? total);
    const startStep = this.step;
    let checkpoint = start?.dir;
    let shownPhase = -1;
    if (this.step < total && this.step >= stopAt)
      this.log(`nothing to train: the run is at step ${this.step}, --max-steps is ${stopAt}`);
    while (this.step < stopAt && !this.stopRequested) {
      const { index, phase } = phaseAt(this.cfg, this.step);
      if (index !== shownPhase) {
        if (shownPhase >= 0) this.progress.finish();
        this.progress.start(phase.name, total, this.step);
        shownPhase = index;
      }
      const tStep = Date.now();
      const cpu0 = process.cpuUsage();
      const batch = Array.from({ length: phase.batch_size }, () => this.dataset.next());
      const r = this.update(batch, phase, phase.grad_accum);
      this.step++;
      if (r.skipped) this.skipped++;
      else if (Number.isFinite(r.loss))
        this.emaLoss = this.emaLoss === null ? r.loss : 0.99 * this.emaLoss + 0.01 * r.loss;
      const secPerStep = (Date.now() - tStep) / 1000;
      const cpu = process.cpuUsage(cpu0);
      const m: StepMetrics = {
        step: this.step,
        phase: phase.name,
        phase_index: index,
        loss: r.loss,
        loss_adjusted: r.lossAdjusted,
        ema_loss: this.emaLoss ?? NaN,
        grad_norm: r.gradNorm,
        lr: r.lr,
        skipped: this.skipped,
        sec_per_step: secPerStep,
        cpu_sec_per_step: (cpu.user + cpu.system) / 1e6,
        ...(r.extra ?? {}),
      };
      fs.appendFileSync(this.metricsFile, JSON.stringify(m) + '\n');
      this.progress.update(this.step, `loss ${r.loss.toFixed(4)}`);
      this.opts.onStep?.(m);
      if (this.step === total) this.finished = true;
      if (this.step % this.cfg.checkpoint_every === 0 || this.step === stopAt) checkpoint = this.checkpoint();
      if (this.cfg.sample_every > 0 && (this.step % this.cfg.sample_every === 0 || this.step === total)) {
        this.preview(path.join(this.out, 'samples', `step-${String(this.step).padStart(8, '0')}.png`));
      }
      // let signals and I/O through
      await new Promise((res) => setImmediate(res));
    }
    if (checkpoint === undefined || path.basename(checkpoint) !== stepName(this.step)) checkpoint = this.checkpoint();
    if (shownPhase >= 0) this.progress.finish();
    const skippedData = this.dataset.warningSummary();
    if (skippedData) this.log(`data: skipped ${skippedData}`);
    if (this.skipped) this.log(`skipped ${this.skipped} update(s) with a non-finite loss or gradient`);
    const samples = path.join(this.out, 'samples');
    return {
      startStep,
      step: this.step,
      totalSteps: total,
      outcome:
        this.step < total
          ? this.stopRequested
            ? 'stopped'
            : 'max-steps'
          : startStep === total
            ? 'already-finished'
            : 'finished',
      checkpoint,
      samples: fs.existsSync(samples) ? samples : undefined,
      seconds: (Date.now() - started) / 1000,
    };
  }
}
