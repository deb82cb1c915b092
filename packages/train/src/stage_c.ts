/**
 * Stage C (text-conditional prior) trainer, after dome272/Wuerstchen train_stage_C.py.
 *
 * x0 = (effnet(img) + 1)/42 from the frozen compressor (eval mode); conditioning = CLIP
 * `last_hidden_state` (77 tokens, post final LayerNorm); captions replaced by "" for the whole batch
 * with p = 0.05 (dome272; `caption_dropout_mode: "sample"` drops per sample); t from the 1.08 sampler;
 * ε-loss with p2 weights; AdamW(1e-4, wd 0.01) with 10k linear warm-up; clip 1.0; EMA every 100
 * updates (copy below 5000, then β = 0.9). Aspect-ratio phases pick one bucket per batch.
 */
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { HostTensor, Parameter } from '@wuerstchen/core';
import { EfficientNetEncoder, Generator, WuerstchenPrior, WuerstchenPriorConfig } from 'wuerstchen';
import { PhaseConfig, weightingOf } from './config';
import { loadDiffusersWeights, saveDiffusersModel } from './checkpoint';
import { Sample } from './data/dataset';
import { GridRow } from './data/grid';
import { priorInitRules } from './init';
import {
  RowCache,
  TextConditioner,
  saveTextEncoder,
  buildEffnet,
  effnetOutSize,
  emaStateDict,
  falseColour,
  saveModule,
} from './models_io';
import { addNoise, alphaCumprod, diffusionLoss, dropCaptions, sampleDDPM, sampleT } from './objectives';
import { AdamW, EMA, HostTensorSource } from './optim';
import { deriveSeed } from './rng';
import { SeededStochasticLayers } from './seeded';
import { GradAccumulator, Trainer, UpdateResult, addDiffusionLoss } from './trainer';

/** SC bucketeer sizes: ratio r = W/H, area d, dims floored to multiples of m. Returns [W, H]. */
export function bucketSize(r: number, area: number, m: number): [number, number] {
  const h = Math.max(m, Math.floor(Math.sqrt(area / r) / m) * m);
  const w = Math.max(m, Math.floor(Math.sqrt(area * r) / m) * m);
  return [w, h];
}

export class StageCTrainer extends Trainer {
  prior!: WuerstchenPrior;
  effnet!: EfficientNetEncoder;
  text!: TextConditioner;
  opt!: AdamW;
  ema: EMA | null = null;
  private seeded!: SeededStochasticLayers;
  /** x0 = (effnet + latent_std) / latent_mean; the prior pipeline's model_index.json carries the same two numbers. */
  latentScaling: { latent_mean: number; latent_std: number } = { latent_mean: 42, latent_std: 1 };
  private readonly effnetCache = new RowCache(65536);
  /** What the optimizer updates (the whole prior here; only adapters in LoraTrainer). */
  protected trained: [string, Parameter][] = [];

  /** Called once by setup(), after the prior is built and loaded, to pick the trained parameters. */
  protected trainedParameters(): [string, Parameter][] {
    return this.prior.trainableParameters();
  }

  protected setup(): void {
    const cfg = this.cfg;
    this.prior = new WuerstchenPrior(this.modelConfig<WuerstchenPriorConfig>());
    this.initOrLoad(this.prior, 'prior', priorInitRules(this.prior.config.depth));
    this.prior.train();
    this.seeded = new SeededStochasticLayers(this.prior);
    this.effnet = buildEffnet(cfg.effnet, cfg.seed, this.log, true).eval();
    this.text = new TextConditioner(cfg.text_encoder!, cfg.tokenizer!);
    if (this.text.hiddenSize !== this.prior.config.c_cond) {
      throw new Error(
        `text encoder ${cfg.text_encoder} has hidden_size ${this.text.hiddenSize} but the prior's c_cond is ${this.prior.config.c_cond}`,
      );
    }
    if (this.effnet.config.c_latent !== this.prior.config.c_in) {
      throw new Error(
        `the compressor's c_latent ${this.effnet.config.c_latent} differs from the prior's c_in ${this.prior.config.c_in}`,
      );
    }
    const ls = cfg.objective.latent_scaling;
    if (ls === 'fit') this.latentScaling = this.fitLatentScaling();
    else if (typeof ls === 'object') this.latentScaling = { ...ls };
    const o = cfg.optimizer;
    this.trained = this.trainedParameters();
    this.opt = new AdamW(this.trained, { lr: o.lr, betas: o.betas, eps: o.eps, weightDecay: o.weight_decay });
    this.ema = cfg.ema ? new EMA(this.trained) : null;
  }

  /** Mean and std of the compressor's map over 256 fixed training images: the scaling that makes x0 zero-mean, unit-std. */
  private fitLatentScaling(n = 256): { latent_mean: number; latent_std: number } {
    const phase = this.evalPhase(this.cfg.phases[this.cfg.phases.length - 1]);
    const e = phase.effnet_size!;
    const samples = this.fixedSamples(n);
    let sum = 0;
    let sumSq = 0;
    let count = 0;
    for (let i = 0; i < n; i += 32) {
      const x = Trainer.toTensor(
        samples.slice(i, i + 32).map((s) => this.effnetInput(this.cropSample(s, phase), e, e)),
      );
      const [s1, s2, c] = tf.tidy(() => {
        const f = this.effnet.forward(x);
        return [tf.sum(f).dataSync()[0], tf.sum(tf.square(f)).dataSync()[0], f.size];
      });
      x.dispose();
      sum += s1;
      sumSq += s2;
      count += c;
    }
    const mean = sum / count;
    const std = Math.sqrt(Math.max(1e-12, sumSq / count - mean * mean));
    this.log(
      `latent scaling fitted on ${n} images: compressor mean ${mean.toFixed(4)}, std ${std.toFixed(4)} → latent_mean ${std.toFixed(4)}, latent_std ${(-mean).toFixed(4)}`,
    );
    return { latent_mean: std, latent_std: -mean };
  }

  /** The prior's target for compressor maps: (effnet + latent_std) / latent_mean. */
  toLatents(effnet: tf.Tensor): tf.Tensor {
    const { latent_mean, latent_std } = this.latentScaling;
    return tf.tidy(() => tf.div(tf.add(effnet, latent_std), latent_mean));
  }

  protected override extraState(): Record<string, unknown> {
    return { latent_scaling: this.latentScaling };
  }

  protected override loadExtraState(extra: Record<string, unknown> | undefined): void {
    const ls = extra?.latent_scaling as { latent_mean: number; latent_std: number } | undefined;
    if (ls) this.latentScaling = { latent_mean: ls.latent_mean, latent_std: ls.latent_std };
  }

  /** Image crop size and compressor input size ([W, H]) for this batch (aspect buckets in AR phases). */
  private batchGeometry(batch: Sample[], phase: PhaseConfig): { crop?: [number, number]; eff: [number, number] } {
    const e = phase.effnet_size!;
    if (!phase.aspect_ratios?.length) return { eff: [e, e] };
    const ratios = [...new Set(phase.aspect_ratios.flatMap((r) => [r, 1 / r]))].sort((a, b) => a - b);
    const first = batch[0];
    const rng = first.rng.clone();
    let r: number;
    if (rng.nextFloat() < (phase.bucket_random_p ?? 0.05)) r = ratios[rng.int(ratios.length)];
    else {
      const ar = first.image.width / first.image.height;
      r = ratios.reduce(
        (best, x) => (Math.abs(Math.log(x / ar)) < Math.abs(Math.log(best / ar)) ? x : best),
        ratios[0],
      );
    }
    const [w, h] = bucketSize(r, e * e, phase.bucket_multiple ?? 32);
    const scale = phase.image_size / e;
    return { crop: [Math.round(w * scale), Math.round(h * scale)], eff: [w, h] };
  }

  /** Compressor maps of a batch (the compressor is frozen, so they are cached when crops are deterministic). */
  private effnetMaps(
    batch: Sample[],
    phase: PhaseConfig,
    geo: { crop?: [number, number]; eff: [number, number] },
  ): tf.Tensor {
    const [w, h] = geo.eff;
    const rowShape = [
      effnetOutSize(this.effnet.config, h),
      effnetOutSize(this.effnet.config, w),
      this.effnet.config.c_latent,
    ];
    return this.frozenRows(this.effnetCache, batch, phase, `${phase.image_size}/${w}x${h}`, rowShape, (ss) =>
      tf.tidy(() =>
        this.effnet.forward(
          Trainer.toTensor(ss.map((s) => this.effnetInput(this.cropSample(s, phase, geo.crop), w, h))),
        ),
      ),
    );
  }

  protected update(batch: Sample[], phase: PhaseConfig, accum: number): UpdateResult {
    const cfg = this.cfg;
    const geo = this.batchGeometry(batch, phase);
    const maps = this.effnetMaps(batch, phase, geo);
    const captions = dropCaptions(
      batch.map((s) => s.caption),
      cfg.objective.caption_dropout,
      cfg.objective.caption_dropout_mode,
      this.rng,
    );
    const t = sampleT(batch.length, this.rng, cfg.objective.t_sampler);
    const micro = batch.length / accum;
    const acc = new GradAccumulator(this.trained);
    let lossSum = 0;
    let adjSum = 0;
    let finite = true;
    for (let a = 0; a < accum; a++) {
      const sl = (xs: unknown[]) => xs.slice(a * micro, (a + 1) * micro);
      const x0 = tf.tidy(() => this.toLatents(tf.slice(maps, a * micro, micro)));
      const clip = this.text.encode(sl(captions) as string[]);
      const nb = addNoise(x0, sl(t) as number[], this.rng, weightingOf(cfg.objective));
      this.seeded.reseed(this.rng.nextUint32());
      const r = addDiffusionLoss(acc, nb, accum, () => this.prior.forward(nb.xt, nb.t, clip));
      lossSum += r.loss / accum;
      adjSum += r.adjusted;
      if (!Number.isFinite(r.loss) || !Number.isFinite(r.adjusted)) finite = false;
      tf.dispose([x0, clip, nb.xt, nb.noise, nb.t, nb.weights]);
    }
    maps.dispose();
    const lr = this.learningRate(phase, this.opt.step);
    const { gradNorm, skipped } = this.applyGradients(acc, this.opt, lr, finite);
    acc.dispose();
    if (!skipped && this.ema && cfg.ema && this.opt.step % cfg.ema.every === 0)
      this.ema.update(cfg.ema.beta, this.opt.step < cfg.ema.start);
    return {
      loss: lossSum,
      lossAdjusted: adjSum,
      gradNorm,
      lr,
      skipped,
      extra: {
        latent_h: effnetOutSize(this.effnet.config, geo.eff[1]),
        latent_w: effnetOutSize(this.effnet.config, geo.eff[0]),
      },
    };
  }

  protected saveModels(dir: string): void {
    saveModule(path.join(dir, 'prior'), 'WuerstchenPrior', this.prior.config, this.prior);
    // a seeded text encoder exists nowhere else: keep it with the weights that were trained against it
    if (this.cfg.text_encoder!.endsWith('.json')) saveTextEncoder(path.join(dir, 'text_encoder'), this.text.encoder);
    if (this.ema)
      saveDiffusersModel(
        path.join(dir, 'prior_ema'),
        'WuerstchenPrior',
        this.prior.config as unknown as Record<string, unknown>,
        emaStateDict(this.prior, this.ema),
      );
  }

  protected loadModels(dir: string): void {
    loadDiffusersWeights(this.prior, path.join(dir, 'prior'));
  }

  protected optimizerState(): { tensors: Map<string, HostTensor>; steps: Record<string, number> } {
    const tensors = this.opt.stateTensors('prior.');
    if (this.ema) for (const [k, v] of this.ema.stateTensors('ema.')) tensors.set(k, v);
    return { tensors, steps: this.optimizerSteps() };
  }

  protected optimizerSteps(): Record<string, number> {
    return { prior: this.opt.step };
  }

  protected loadOptimizerState(tensors: HostTensorSource, steps: Record<string, number>): void {
    this.opt.loadStateTensors(tensors, steps.prior ?? 0, 'prior.');
    this.ema?.load(tensors, 'ema.');
  }

  evalLoss(n = 8): number {
    const phase = this.evalPhase();
    const e = phase.effnet_size!;
    const fixed = this.fixedSamples(n);
    const x0 = tf.tidy(() =>
      this.toLatents(
        this.effnet.forward(Trainer.toTensor(fixed.map((s) => this.effnetInput(this.cropSample(s, phase), e, e)))),
      ),
    );
    const clip = this.text.encode(fixed.map((s) => s.caption));
    const nb = this.evalNoise(x0);
    const loss = Trainer.inEvalMode([this.prior], () =>
      tf.tidy(() => diffusionLoss(this.prior.forward(nb.xt, nb.t, clip), nb.noise, nb.weights).weighted.dataSync()[0]),
    );
    tf.dispose([x0, clip, nb.xt, nb.noise, nb.t, nb.weights]);
    return loss;
  }

  /**
   * How much the prior uses the text: x0-MSE at noise level `t` on `n` fixed training images with
   * their own captions and with the captions shuffled among them (fixed noise, eval mode). A prior
   * that ignores its text scores the same on both.
   */
  textGap(n = 64, t = 0.9): { correct: number; shuffled: number } {
    const phase = this.evalPhase(this.cfg.phases[this.cfg.phases.length - 1]);
    const e = phase.effnet_size!;
    const fixed = this.fixedSamples(n);
    const x0 = tf.tidy(() =>
      this.toLatents(
        this.effnet.forward(Trainer.toTensor(fixed.map((s) => this.effnetInput(this.cropSample(s, phase), e, e)))),
      ),
    );
    const nb = addNoise(
      x0,
      fixed.map(() => t),
      new Generator(deriveSeed(this.cfg.seed, 'text-gap')),
      { kind: 'none' },
    );
    const a = alphaCumprod(t);
    const captions = fixed.map((s) => s.caption);
    const mse = (caps: string[]) => {
      const clip = this.text.encode(caps);
      const v = Trainer.inEvalMode([this.prior], () =>
        tf.tidy(() => {
          const x0hat = tf.div(
            tf.sub(nb.xt, tf.mul(this.prior.forward(nb.xt, nb.t, clip), Math.sqrt(1 - a))),
            Math.sqrt(a),
          );
          return tf.mean(tf.squaredDifference(x0hat, x0)).dataSync()[0];
        }),
      );
      clip.dispose();
      return v;
    };
    const out = { correct: mse(captions), shuffled: mse(captions.map((_, i) => captions[(i + 1) % n])) };
    tf.dispose([x0, nb.xt, nb.noise, nb.t, nb.weights]);
    return out;
  }

  /** Latents the prior produces for a prompt list (DDPM with CFG), `[n, h, w, 16]`. */
  sample(prompts: string[], h: number, w: number, steps: number, cfgScale: number, seed: number): tf.Tensor4D {
    const rng = new Generator(seed);
    const cond = this.text.encode(prompts);
    const uncond = this.text.encode(prompts.map(() => ''));
    const n = prompts.length;
    try {
      return Trainer.inEvalMode([this.prior], () =>
        sampleDDPM([n, h, w, this.prior.config.c_in], steps, rng, (x, t) =>
          tf.tidy(() => {
            if (cfgScale <= 1) return this.prior.forward(x, tf.fill([n], t), cond);
            const eps = this.prior.forward(tf.concat([x, x]), tf.fill([2 * n], t), tf.concat([cond, uncond]));
            const [ec, eu] = tf.split(eps, 2);
            return tf.add(eu, tf.mul(tf.sub(ec, eu), cfgScale));
          }),
        ),
      ) as tf.Tensor4D;
    } finally {
      tf.dispose([cond, uncond]);
    }
  }

  /**
   * Preview grid: row 1 = the compressor's latents of fixed training images, row 2 = the prior's
   * samples for the preview prompts (false colour of channels 0–2), each under its caption. Stage C alone
   * cannot produce pixels; decoding needs Stage B + A.
   */
  protected preview(file: string): void {
    const gap = this.textGap();
    this.log(
      `step ${this.step}: text use (x0-MSE at t = 0.9): own captions ${gap.correct.toFixed(4)}, shuffled ${gap.shuffled.toFixed(4)} (${((1 - gap.correct / gap.shuffled) * 100).toFixed(1)}% lower)`,
    );
    const phase = this.cfg.phases[Math.min(this.cfg.phases.length - 1, this.currentPhaseIndex())];
    const e = phase.effnet_size!;
    const side = effnetOutSize(this.effnet.config, e);
    const fixed = this.fixedSamples(Math.min(this.cfg.sample_images, 8));
    const target = tf.tidy(() =>
      falseColour(
        this.effnet.forward(
          Trainer.toTensor(fixed.map((s) => this.effnetInput(this.cropSample(s, this.evalPhase(phase)), e, e))),
        ),
      ),
    );
    const lat = this.sample(
      this.cfg.sample_prompts,
      side,
      side,
      this.cfg.sample_steps,
      this.cfg.sample_cfg,
      deriveSeed(this.cfg.seed, 'preview'),
    );
    const fc = falseColour(lat);
    const rows: GridRow[] = [
      {
        label: `compressor latents of training images, false colour (step ${this.step})`,
        images: Trainer.toImages(target),
        captions: fixed.map((s) => s.caption),
      },
      {
        label: 'prior samples for the preview prompts, false colour',
        images: Trainer.toImages(fc),
        captions: this.cfg.sample_prompts,
      },
    ];
    tf.dispose([target, lat, fc]);
    this.writeGrid(file, rows);
  }

  private currentPhaseIndex(): number {
    let start = 0;
    for (let i = 0; i < this.cfg.phases.length; i++) {
      start += this.cfg.phases[i].steps;
      if (this.step <= start) return i;
    }
    return this.cfg.phases.length - 1;
  }

  dispose(): void {
    this.opt?.dispose();
    this.ema?.dispose();
    this.prior?.dispose();
    this.effnet?.dispose();
    this.text?.dispose();
    this.dataset.close();
  }
}
