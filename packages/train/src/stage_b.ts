/**
 * Stage B (latent diffusion decoder, v2 DiffNeXt) trainer — spec training.md §3; the v2 training
 * loop was never released, so this is the spec's inferred loop (G1, [PROPOSAL]):
 *   x0 = StageA.encode(img) / scale_factor (unquantised, frozen, eval);
 *   e  = EfficientNetV2-S(img resized to effnet_size) — trained JOINTLY, BatchNorm in train mode,
 *        stochastic depth on (seeded); the raw map (no +1/42, G2);
 *   per batch: with p = 0.05 e ← 0·e; else with p = 0.3 e ← √ᾱ(t')e + √(1−ᾱ(t'))ε, t' ~ U[0, 0.5) per sample;
 *   captions → "" for the whole batch with p = 0.05; CLIP-H last_hidden_state;
 *   ε-loss with p2 weights; AdamW(1e-4, β (0.9, 0.95), wd 0.01) over decoder + compressor; 10k warm-up;
 *   clip 1.0; no EMA.
 */
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { HostTensor, Parameter } from '@wuerstchen/core';
import { EfficientNetEncoder, PaellaVQModel, WuerstchenDiffNeXt, WuerstchenDiffNeXtConfig } from 'wuerstchen';
import { PhaseConfig } from './config';
import { loadDiffusersWeights, resolveModelDir } from './checkpoint';
import { Sample } from './data/dataset';
import { RGBImage } from './data/image';
import { diffnextInitRules, initModule } from './init';
import { TextConditioner, buildEffnet, buildVqgan, effnetOutSize, saveModule } from './models_io';
import { addNoise, alphaCumprod, diffusionLoss, sampleDDPM, sampleT } from './objectives';
import { AdamW } from './optim';
import { Generator, deriveSeed } from './rng';
import { SeededStochasticLayers } from './seeded';
import { GradAccumulator, Trainer, UpdateResult } from './trainer';

export class StageBTrainer extends Trainer {
  decoder!: WuerstchenDiffNeXt;
  effnet!: EfficientNetEncoder;
  vqgan!: PaellaVQModel;
  text!: TextConditioner;
  opt!: AdamW;
  private params!: [string, Parameter][];
  private seeded!: SeededStochasticLayers;
  private seededEffnet!: SeededStochasticLayers;

  protected setup(): void {
    const cfg = this.cfg;
    const modelCfg = { ...(cfg.model as Partial<WuerstchenDiffNeXtConfig>) };
    if (cfg.dropout === 'off') modelCfg.dropout = 0;
    this.decoder = new WuerstchenDiffNeXt(modelCfg);
    if (cfg.init_from) loadDiffusersWeights(this.decoder, resolveModelDir(cfg.init_from, 'decoder'));
    else initModule(this.decoder, new Generator(deriveSeed(cfg.seed, 'init', 'decoder')), diffnextInitRules(this.decoder.config.blocks.reduce((a, b) => a + b, 0)));
    this.decoder.train();
    this.effnet = buildEffnet(cfg.effnet, cfg.seed, this.log, false).train();
    this.vqgan = buildVqgan(cfg.vqgan, cfg.seed, this.log);
    this.seeded = new SeededStochasticLayers(this.decoder);
    this.seededEffnet = new SeededStochasticLayers(this.effnet);
    this.text = new TextConditioner(cfg.text_encoder!, cfg.tokenizer!);
    const dc = this.decoder.config;
    if (this.text.hiddenSize !== dc.clip_embd) throw new Error(`text encoder ${cfg.text_encoder} has hidden_size ${this.text.hiddenSize} but the decoder's clip_embd is ${dc.clip_embd}`);
    if (this.effnet.config.c_latent !== dc.effnet_embd) throw new Error(`the compressor's c_latent ${this.effnet.config.c_latent} differs from the decoder's effnet_embd ${dc.effnet_embd}`);
    if (this.vqgan.config.latent_channels !== dc.c_in) throw new Error(`Stage A latent_channels ${this.vqgan.config.latent_channels} differs from the decoder's c_in ${dc.c_in}`);
    for (const p of cfg.phases) {
      const lat = p.image_size / 4;
      if (lat % this.decoder.sizeMultiple !== 0) throw new Error(`phase ${p.name}: image_size ${p.image_size} gives ${lat}×${lat} latents; the decoder needs a multiple of ${this.decoder.sizeMultiple}`);
    }
    this.params = [
      ...this.decoder.trainableParameters().map(([k, p]) => [`decoder.${k}`, p] as [string, Parameter]),
      ...this.effnet.trainableParameters().map(([k, p]) => [`effnet.${k}`, p] as [string, Parameter]),
    ];
    const o = cfg.optimizer;
    this.opt = new AdamW(this.params, { lr: o.lr, betas: o.betas, eps: o.eps, weightDecay: o.weight_decay });
  }

  protected update(batch: Sample[], phase: PhaseConfig, accum: number): UpdateResult {
    const cfg = this.cfg;
    const ob = cfg.objective;
    const e = phase.effnet_size!;
    const crops = batch.map((s) => this.cropSample(s, phase));
    const effImages = crops.map((c) => this.effnetInput(c, e, e));
    let captions = batch.map((s) => s.caption);
    if (ob.caption_dropout_mode === 'batch') {
      if (this.rng.random() < ob.caption_dropout) captions = captions.map(() => '');
    } else captions = captions.map((c) => (this.rng.random() < ob.caption_dropout ? '' : c));
    const t = sampleT(batch.length, this.rng, ob.t_sampler);
    // effnet conditioning: drop (zeros) or noise, decided per batch (dome272 Wrapper)
    const mode = this.rng.random() < ob.effnet_dropout ? 'drop' : this.rng.random() < ob.effnet_noise ? 'noise' : 'clean';
    const tEff = mode === 'noise' ? batch.map(() => this.rng.random() * ob.effnet_noise_tmax) : [];
    const side = effnetOutSize(this.effnet.config, e);
    const micro = batch.length / accum;
    const acc = new GradAccumulator(this.params);
    let lossSum = 0;
    let adjSum = 0;
    let finite = true;
    const sf = this.vqgan.config.scale_factor;
    for (let a = 0; a < accum; a++) {
      const sl = <T>(xs: T[]) => xs.slice(a * micro, (a + 1) * micro);
      const img = Trainer.toTensor(sl(crops));
      const x0 = tf.tidy(() => tf.div(this.vqgan.encode(img), sf));
      img.dispose();
      const effIn = Trainer.toTensor(sl(effImages));
      const clip = this.text.encode(sl(captions));
      const nb = addNoise(x0, sl(t), this.rng, ob.p2);
      let effA: tf.Tensor | null = null;
      let effB: tf.Tensor | null = null;
      let effNoise: tf.Tensor | null = null;
      if (mode === 'noise') {
        const te = sl(tEff).map((x) => alphaCumprod(x));
        effA = tf.tensor(te.map(Math.sqrt), [micro, 1, 1, 1]);
        effB = tf.tensor(te.map((x) => Math.sqrt(1 - x)), [micro, 1, 1, 1]);
        effNoise = tf.tensor(this.rng.randn(micro * side * side * this.effnet.config.c_latent), [micro, side, side, this.effnet.config.c_latent]);
      }
      const seed = this.rng.nextSeed();
      this.seeded.reseed(deriveSeed(seed, 'decoder'));
      this.seededEffnet.reseed(deriveSeed(seed, 'effnet'));
      let per: tf.Tensor | null = null;
      const adj = acc.add(() => {
        let eff: tf.Tensor = this.effnet.forward(effIn);
        if (mode === 'drop') eff = tf.mul(eff, 0);
        else if (mode === 'noise') eff = tf.add(tf.mul(eff, effA!), tf.mul(effNoise!, effB!));
        const pred = this.decoder.forward(nb.xt, nb.t, eff, clip);
        const { perSample, weighted } = diffusionLoss(pred, nb.noise, nb.weights);
        per = tf.keep(perSample);
        return tf.div(weighted, accum) as tf.Scalar;
      });
      const l = tf.tidy(() => tf.mean(per!).dataSync()[0]);
      (per as tf.Tensor | null)?.dispose();
      lossSum += l / accum;
      adjSum += adj;
      if (!Number.isFinite(l) || !Number.isFinite(adj)) finite = false;
      tf.dispose([x0, effIn, clip, nb.xt, nb.noise, nb.t, nb.weights]);
      tf.dispose([effA, effB, effNoise].filter((x): x is tf.Tensor => x !== null));
    }
    const lr = this.learningRate(phase, this.opt.step);
    const { gradNorm, skipped } = this.applyGradients(acc, this.opt, lr, finite);
    acc.dispose();
    return { loss: lossSum, lossAdjusted: adjSum, gradNorm, lr, skipped, extra: { effnet_cond: mode === 'clean' ? 0 : mode === 'drop' ? 1 : 2 } };
  }

  protected saveModels(dir: string): void {
    saveModule(path.join(dir, 'decoder'), 'WuerstchenDiffNeXt', this.decoder.config, this.decoder);
    saveModule(path.join(dir, 'effnet'), 'EfficientNetEncoder', this.effnet.config, this.effnet);
  }

  protected loadModels(dir: string): void {
    loadDiffusersWeights(this.decoder, path.join(dir, 'decoder'));
    loadDiffusersWeights(this.effnet, path.join(dir, 'effnet'));
  }

  protected optimizerState(): { tensors: Map<string, HostTensor>; steps: Record<string, number> } {
    return { tensors: this.opt.stateTensors(), steps: this.optimizerSteps() };
  }

  protected optimizerSteps(): Record<string, number> {
    return { decoder: this.opt.step };
  }

  protected loadOptimizerState(tensors: Map<string, HostTensor>, steps: Record<string, number>): void {
    this.opt.loadStateTensors(
      {
        get: (k) => {
          const t = tensors.get(k);
          if (!t) throw new Error(`optimizer.safetensors: missing ${k}`);
          return t;
        },
      },
      steps.decoder ?? 0,
    );
  }

  evalLoss(n = 8): number {
    const phase = { ...this.cfg.phases[0], random_crop: false, hflip: false };
    const e = phase.effnet_size!;
    const fixed = this.fixedSamples(n);
    const crops = fixed.map((s) => this.cropSample(s, phase));
    const rng = new Generator(deriveSeed(this.cfg.seed, 'eval'));
    const x0 = tf.tidy(() => tf.div(this.vqgan.encode(Trainer.toTensor(crops)), this.vqgan.config.scale_factor));
    const clip = this.text.encode(fixed.map((s) => s.caption));
    const nb = addNoise(x0, Trainer.evalT(n), rng, this.cfg.objective.p2);
    this.decoder.eval();
    this.effnet.eval();
    try {
      return tf.tidy(() => {
        const eff = this.effnet.forward(Trainer.toTensor(crops.map((c) => this.effnetInput(c, e, e))));
        return diffusionLoss(this.decoder.forward(nb.xt, nb.t, eff, clip), nb.noise, nb.weights).weighted.dataSync()[0];
      });
    } finally {
      this.decoder.train();
      this.effnet.train();
      tf.dispose([x0, clip, nb.xt, nb.noise, nb.t, nb.weights]);
    }
  }

  /**
   * Preview: row 1 = fixed training images, row 2 = Stage A reconstructions (the ceiling),
   * row 3 = decoder samples conditioned on each image's compressor map and caption, decoded by Stage A.
   */
  protected preview(file: string): void {
    const phase = { ...this.cfg.phases[0], random_crop: false, hflip: false };
    const e = phase.effnet_size!;
    const fixed = this.fixedSamples(Math.min(this.cfg.sample_images, 8));
    const crops = fixed.map((s) => this.cropSample(s, phase));
    const x = Trainer.toTensor(crops);
    this.decoder.eval();
    this.effnet.eval();
    try {
      const recon = tf.tidy(() => tf.clipByValue(this.vqgan.decode(this.vqgan.encode(x)), 0, 1));
      const eff = tf.tidy(() => this.effnet.forward(Trainer.toTensor(crops.map((c) => this.effnetInput(c, e, e)))));
      const clip = this.text.encode(fixed.map((s) => s.caption));
      const lat = phase.image_size / 4;
      const rng = new Generator(deriveSeed(this.cfg.seed, 'preview'));
      const z = sampleDDPM([crops.length, lat, lat, this.decoder.config.c_in], this.cfg.sample_steps, rng, (xt, t) => this.decoder.forward(xt, tf.fill([crops.length], t), eff, clip));
      const img = tf.tidy(() => tf.clipByValue(this.vqgan.decode(tf.mul(z, this.vqgan.config.scale_factor)), 0, 1));
      const rows: RGBImage[][] = [crops, Trainer.toImages(recon), Trainer.toImages(img)];
      tf.dispose([recon, eff, clip, z, img]);
      this.writeGrid(file, rows);
    } finally {
      x.dispose();
      this.decoder.train();
      this.effnet.train();
    }
  }

  dispose(): void {
    this.opt?.dispose();
    this.decoder?.dispose();
    this.effnet?.dispose();
    this.vqgan?.dispose();
    this.text?.dispose();
    this.dataset.close();
  }
}
