/**
 * Stage C (text-conditional prior) trainer — spec training.md §2.
 *
 * x0 = (effnet(img) + 1)/42 from the frozen compressor (eval mode); conditioning = CLIP
 * `last_hidden_state` (77 tokens, post final LayerNorm); captions replaced by "" for the whole batch
 * with p = 0.05 (dome272; `caption_dropout_mode: "sample"` drops per sample); t from the 1.08 sampler;
 * ε-loss with p2 weights; AdamW(1e-4, wd 0.01) with 10k linear warm-up; clip 1.0; EMA every 100
 * updates (copy below 5000, then β = 0.9). Aspect-ratio phases pick one bucket per batch.
 */
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { HostTensor } from '@wuerstchen/core';
import { EfficientNetEncoder, Generator, WuerstchenPrior, WuerstchenPriorConfig, toPriorLatents } from 'wuerstchen';
import { PhaseConfig } from './config';
import { loadDiffusersWeights, saveDiffusersModel } from './checkpoint';
import { Sample } from './data/dataset';
import { RGBImage, upscaleNearest } from './data/image';
import { priorInitRules } from './init';
import { TextConditioner, buildEffnet, effnetOutSize, emaStateDict, falseColour, saveModule } from './models_io';
import { addNoise, diffusionLoss, dropCaptions, sampleDDPM, sampleT } from './objectives';
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

  protected setup(): void {
    const cfg = this.cfg;
    this.prior = new WuerstchenPrior(this.modelConfig<WuerstchenPriorConfig>());
    this.initOrLoad(this.prior, 'prior', priorInitRules(this.prior.config.depth));
    this.prior.train();
    this.seeded = new SeededStochasticLayers(this.prior);
    this.effnet = buildEffnet(cfg.effnet, cfg.seed, this.log, true).eval();
    this.text = new TextConditioner(cfg.text_encoder!, cfg.tokenizer!);
    if (this.text.hiddenSize !== this.prior.config.c_cond) {
      throw new Error(`text encoder ${cfg.text_encoder} has hidden_size ${this.text.hiddenSize} but the prior's c_cond is ${this.prior.config.c_cond}`);
    }
    if (this.effnet.config.c_latent !== this.prior.config.c_in) {
      throw new Error(`the compressor's c_latent ${this.effnet.config.c_latent} differs from the prior's c_in ${this.prior.config.c_in}`);
    }
    const o = cfg.optimizer;
    this.opt = new AdamW(this.prior.trainableParameters(), { lr: o.lr, betas: o.betas, eps: o.eps, weightDecay: o.weight_decay });
    this.ema = cfg.ema ? new EMA(this.prior.trainableParameters()) : null;
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
      r = ratios.reduce((best, x) => (Math.abs(Math.log(x / ar)) < Math.abs(Math.log(best / ar)) ? x : best), ratios[0]);
    }
    const [w, h] = bucketSize(r, e * e, phase.bucket_multiple ?? 32);
    const scale = phase.image_size / e;
    return { crop: [Math.round(w * scale), Math.round(h * scale)], eff: [w, h] };
  }

  protected update(batch: Sample[], phase: PhaseConfig, accum: number): UpdateResult {
    const cfg = this.cfg;
    const geo = this.batchGeometry(batch, phase);
    const effImages = batch.map((s) => this.effnetInput(this.cropSample(s, phase, geo.crop), geo.eff[0], geo.eff[1]));
    const captions = dropCaptions(batch.map((s) => s.caption), cfg.objective.caption_dropout, cfg.objective.caption_dropout_mode, this.rng);
    const t = sampleT(batch.length, this.rng, cfg.objective.t_sampler);
    const micro = batch.length / accum;
    const acc = new GradAccumulator(this.prior.trainableParameters());
    let lossSum = 0;
    let adjSum = 0;
    let finite = true;
    for (let a = 0; a < accum; a++) {
      const sl = (xs: unknown[]) => xs.slice(a * micro, (a + 1) * micro);
      const x0 = tf.tidy(() => toPriorLatents(this.effnet.forward(Trainer.toTensor(sl(effImages) as RGBImage[]))));
      const clip = this.text.encode(sl(captions) as string[]);
      const nb = addNoise(x0, sl(t) as number[], this.rng, cfg.objective.p2);
      this.seeded.reseed(this.rng.nextUint32());
      const r = addDiffusionLoss(acc, nb, accum, () => this.prior.forward(nb.xt, nb.t, clip));
      lossSum += r.loss / accum;
      adjSum += r.adjusted;
      if (!Number.isFinite(r.loss) || !Number.isFinite(r.adjusted)) finite = false;
      tf.dispose([x0, clip, nb.xt, nb.noise, nb.t, nb.weights]);
    }
    const lr = this.learningRate(phase, this.opt.step);
    const { gradNorm, skipped } = this.applyGradients(acc, this.opt, lr, finite);
    acc.dispose();
    if (!skipped && this.ema && cfg.ema && this.opt.step % cfg.ema.every === 0) this.ema.update(cfg.ema.beta, this.opt.step < cfg.ema.start);
    return { loss: lossSum, lossAdjusted: adjSum, gradNorm, lr, skipped, extra: { latent_h: effnetOutSize(this.effnet.config, geo.eff[1]), latent_w: effnetOutSize(this.effnet.config, geo.eff[0]) } };
  }

  protected saveModels(dir: string): void {
    saveModule(path.join(dir, 'prior'), 'WuerstchenPrior', this.prior.config, this.prior);
    if (this.ema) saveDiffusersModel(path.join(dir, 'prior_ema'), 'WuerstchenPrior', this.prior.config as unknown as Record<string, unknown>, emaStateDict(this.prior, this.ema));
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
    const x0 = tf.tidy(() => toPriorLatents(this.effnet.forward(Trainer.toTensor(fixed.map((s) => this.effnetInput(this.cropSample(s, phase), e, e))))));
    const clip = this.text.encode(fixed.map((s) => s.caption));
    const nb = this.evalNoise(x0);
    const loss = Trainer.inEvalMode([this.prior], () => tf.tidy(() => diffusionLoss(this.prior.forward(nb.xt, nb.t, clip), nb.noise, nb.weights).weighted.dataSync()[0]));
    tf.dispose([x0, clip, nb.xt, nb.noise, nb.t, nb.weights]);
    return loss;
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
   * samples for the fixed prompts (false colour of channels 0–2, nearest-upscaled). Stage C alone
   * cannot produce pixels; decoding needs Stage B + A.
   */
  protected preview(file: string): void {
    const phase = this.cfg.phases[Math.min(this.cfg.phases.length - 1, this.currentPhaseIndex())];
    const e = phase.effnet_size!;
    const side = effnetOutSize(this.effnet.config, e);
    const up = Math.max(1, Math.floor(64 / side));
    const fixed = this.fixedSamples(Math.min(this.cfg.sample_images, 8));
    const target = tf.tidy(() => falseColour(this.effnet.forward(Trainer.toTensor(fixed.map((s) => this.effnetInput(this.cropSample(s, this.evalPhase(phase)), e, e))))));
    const lat = this.sample(this.cfg.sample_prompts, side, side, this.cfg.sample_steps, this.cfg.sample_cfg, deriveSeed(this.cfg.seed, 'preview'));
    const fc = falseColour(lat);
    const rows = [Trainer.toImages(target).map((i) => upscaleNearest(i, up)), Trainer.toImages(fc).map((i) => upscaleNearest(i, up))];
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
