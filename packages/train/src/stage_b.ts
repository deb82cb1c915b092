/**
 * Stage B (latent diffusion decoder, v2 DiffNeXt) trainer. The v2 training loop was never released, so this
 * is our reconstruction from dome272/Wuerstchen train_stage_B.py (v1) and the v2 model in diffusers
 * src/diffusers/pipelines/wuerstchen/modeling_wuerstchen_diffnext.py:
 *   x0 = StageA.encode(img) / scale_factor (unquantised, frozen, eval);
 *   e  = EfficientNetV2-S(img resized to effnet_size) — trained JOINTLY, BatchNorm in train mode,
 *        stochastic depth on (seeded); the raw map (the +1/42 of the prior latent is not applied);
 *   per batch: with p = 0.05 e ← 0·e; else with p = 0.3 e ← √ᾱ(t')e + √(1−ᾱ(t'))ε, t' ~ U[0, 0.5) per sample;
 *   captions → "" for the whole batch with p = 0.05; CLIP-H last_hidden_state;
 *   ε-loss with p2 weights; AdamW(1e-4, β (0.9, 0.95), wd 0.01) over decoder + compressor; 10k warm-up;
 *   clip 1.0; no EMA.
 */
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { HostTensor, Parameter } from '@wuerstchen/core';
import {
  EfficientNetEncoder,
  Generator,
  PaellaVQModel,
  WuerstchenDiffNeXt,
  WuerstchenDiffNeXtConfig,
} from 'wuerstchen';
import { CaptionWordHead, captionWordTargets } from './caption_words';
import { PatchHead } from './patch_head';
import { PhaseConfig, totalSteps, weightingOf } from './config';
import { loadDiffusersWeights } from './checkpoint';
import { Sample } from './data/dataset';
import { GridRow } from './data/grid';
import { diffnextInitRules } from './init';
import {
  RowCache,
  TextConditioner,
  saveTextEncoder,
  buildEffnet,
  buildVqgan,
  effnetOutSize,
  saveModule,
} from './models_io';
import { addNoise, alphaCumprod, diffusionLoss, dropCaptions, sampleDDPM, sampleT } from './objectives';
import { AdamW, HostTensorSource } from './optim';
import { deriveSeed } from './rng';
import { SeededStochasticLayers } from './seeded';
import { GradAccumulator, Trainer, UpdateResult, addDiffusionLoss } from './trainer';

export class StageBTrainer extends Trainer {
  decoder!: WuerstchenDiffNeXt;
  effnet!: EfficientNetEncoder;
  vqgan!: PaellaVQModel;
  text!: TextConditioner;
  /** the compressor's caption-word head (objective.effnet_words > 0), trained while the compressor is. */
  words: CaptionWordHead | null = null;
  /** the compressor's patch head (objective.effnet_patches > 0), trained while the compressor is. */
  patches: PatchHead | null = null;
  opt!: AdamW;
  private params!: [string, Parameter][];
  private seeded!: SeededStochasticLayers;
  private seededEffnet!: SeededStochasticLayers;
  private readonly latentCache = new RowCache(65536);
  private readonly effnetCache = new RowCache(65536);

  protected setup(): void {
    const cfg = this.cfg;
    this.decoder = new WuerstchenDiffNeXt(this.modelConfig<WuerstchenDiffNeXtConfig>());
    this.initOrLoad(this.decoder, 'decoder', diffnextInitRules(this.decoder.config.blocks.reduce((a, b) => a + b, 0)));
    this.decoder.train();
    this.effnet = buildEffnet(cfg.effnet, cfg.seed, this.log, false).train();
    this.vqgan = buildVqgan(cfg.vqgan, cfg.seed, this.log);
    this.seeded = new SeededStochasticLayers(this.decoder);
    this.seededEffnet = new SeededStochasticLayers(this.effnet);
    this.text = new TextConditioner(cfg.text_encoder!, cfg.tokenizer!);
    const dc = this.decoder.config;
    if (this.text.hiddenSize !== dc.clip_embd)
      throw new Error(
        `text encoder ${cfg.text_encoder} has hidden_size ${this.text.hiddenSize} but the decoder's clip_embd is ${dc.clip_embd}`,
      );
    if (this.effnet.config.c_latent !== dc.effnet_embd)
      throw new Error(
        `the compressor's c_latent ${this.effnet.config.c_latent} differs from the decoder's effnet_embd ${dc.effnet_embd}`,
      );
    if (this.vqgan.config.latent_channels !== dc.c_in)
      throw new Error(
        `Stage A latent_channels ${this.vqgan.config.latent_channels} differs from the decoder's c_in ${dc.c_in}`,
      );
    for (const p of cfg.phases) {
      const lat = p.image_size / 4;
      if (lat % this.decoder.sizeMultiple !== 0)
        throw new Error(
          `phase ${p.name}: image_size ${p.image_size} gives ${lat}×${lat} latents; the decoder needs a multiple of ${this.decoder.sizeMultiple}`,
        );
    }
    if (cfg.objective.effnet_words > 0) {
      this.words = new CaptionWordHead(this.effnet.config.c_latent, cfg.objective.effnet_words_buckets);
      this.words.init(new Generator(deriveSeed(cfg.seed, 'init', 'effnet_words')));
    }
    if (cfg.objective.effnet_patches > 0) {
      this.patches = new PatchHead(this.effnet.config.c_latent, this.patchSize());
      this.patches.init(new Generator(deriveSeed(cfg.seed, 'init', 'effnet_patches')));
    }
    this.params = this.trainedParameters();
    const o = cfg.optimizer;
    this.opt = new AdamW(this.params, { lr: o.lr, betas: o.betas, eps: o.eps, weightDecay: o.weight_decay });
  }

  /**
   * Called once by setup(), after the models are built and loaded: what the optimizer updates, keyed
   * `decoder.…` and `effnet.…` (a frozen-compressor phase updates the `decoder.` ones only).
   */
  protected trainedParameters(): [string, Parameter][] {
    return [
      ...this.decoder.trainableParameters().map(([k, p]) => [`decoder.${k}`, p] as [string, Parameter]),
      ...this.effnet.trainableParameters().map(([k, p]) => [`effnet.${k}`, p] as [string, Parameter]),
      ...(this.words?.trainableParameters() ?? []).map(([k, p]) => [`effnet_words.${k}`, p] as [string, Parameter]),
      ...(this.patches?.trainableParameters() ?? []).map(([k, p]) => [`effnet_patches.${k}`, p] as [string, Parameter]),
    ];
  }

  /**
   * The compressor-only pretraining and the decoder's phases train different weights, so each gets a schedule of
   * its own (warm-up or one cycle): the decoder starts from a warm-up, not from the middle of the compressor's cycle.
   */
  protected override scheduleSpan(phase: PhaseConfig): { start: number; length: number } {
    const pre = this.cfg.phases.filter((p) => p.compressor_only).reduce((a, p) => a + p.steps, 0);
    return phase.compressor_only ? { start: 0, length: pre } : { start: pre, length: totalSteps(this.cfg) - pre };
  }

  /** The patch head's patch side: the same in every phase that trains the compressor (its weights depend on it). */
  private patchSize(): number {
    const sizes = new Set<number>();
    for (const p of this.cfg.phases.filter((ph) => !ph.freeze_effnet)) {
      const e = p.effnet_size!;
      const side = effnetOutSize(this.effnet.config, e);
      if (e % side !== 0)
        throw new Error(
          `phase ${p.name}: objective.effnet_patches needs effnet_size ${e} to be a whole number of the compressor's ${side}×${side} map cells`,
        );
      sizes.add(e / side);
    }
    if (sizes.size !== 1)
      throw new Error(
        `objective.effnet_patches: the phases that train the compressor give patch sides ${[...sizes].join(', ') || '(none)'}; they must share one`,
      );
    return [...sizes][0];
  }

  protected update(batch: Sample[], phase: PhaseConfig, accum: number): UpdateResult {
    if (phase.compressor_only) return this.updateCompressor(batch, phase, accum);
    const cfg = this.cfg;
    const ob = cfg.objective;
    const e = phase.effnet_size!;
    const crops = batch.map((s) => this.cropSample(s, phase));
    const effImages = phase.freeze_effnet ? [] : crops.map((c) => this.effnetInput(c, e, e));
    const captions = dropCaptions(
      batch.map((s) => s.caption),
      ob.caption_dropout,
      ob.caption_dropout_mode,
      this.rng,
    );
    const t = sampleT(batch.length, this.rng, ob.t_sampler);
    // effnet conditioning: drop (zeros) or noise, decided per batch (dome272 Wrapper)
    const mode =
      this.rng.nextFloat() < ob.effnet_dropout ? 'drop' : this.rng.nextFloat() < ob.effnet_noise ? 'noise' : 'clean';
    const tEff = mode === 'noise' ? batch.map(() => this.rng.nextFloat() * ob.effnet_noise_tmax) : [];
    const side = effnetOutSize(this.effnet.config, e);
    const micro = batch.length / accum;
    // a frozen compressor runs in eval mode outside the gradient tape, its maps cached like Stage A's latents
    const frozen = phase.freeze_effnet === true;
    this.effnet.train(!frozen);
    const frozenMaps = frozen
      ? this.frozenRows(
          this.effnetCache,
          batch,
          phase,
          `${phase.image_size}/${e}`,
          [side, side, this.effnet.config.c_latent],
          (ss) =>
            tf.tidy(() =>
              this.effnet.forward(Trainer.toTensor(ss.map((s) => this.effnetInput(this.cropSample(s, phase), e, e)))),
            ),
        )
      : null;
    const acc = new GradAccumulator(frozen ? this.params.filter(([k]) => k.startsWith('decoder.')) : this.params);
    let lossSum = 0;
    let adjSum = 0;
    const heads = frozen ? [] : this.heads();
    const headSums = heads.map(() => 0);
    let finite = true;
    const sf = this.vqgan.config.scale_factor;
    const lat = phase.image_size / (this.vqgan.config.up_down_scale_factor * 2 ** (this.vqgan.config.levels - 1));
    // Stage A is frozen: its latents are cached per sample when the crops are deterministic
    const latents = this.frozenRows(
      this.latentCache,
      batch,
      phase,
      `${phase.image_size}`,
      [lat, lat, this.vqgan.config.latent_channels],
      (ss) => tf.tidy(() => tf.div(this.vqgan.encode(Trainer.toTensor(ss.map((s) => this.cropSample(s, phase)))), sf)),
    );
    for (let a = 0; a < accum; a++) {
      const sl = <T>(xs: T[]) => xs.slice(a * micro, (a + 1) * micro);
      const x0 = tf.slice(latents, a * micro, micro);
      const effIn = frozenMaps ? tf.slice(frozenMaps, a * micro, micro) : Trainer.toTensor(sl(effImages));
      const clip = this.text.encode(sl(captions));
      const nb = addNoise(x0, sl(t), this.rng, weightingOf(ob));
      let effA: tf.Tensor | null = null;
      let effB: tf.Tensor | null = null;
      let effNoise: tf.Tensor | null = null;
      if (mode === 'noise') {
        const te = sl(tEff).map((x) => alphaCumprod(x));
        effA = tf.tensor(te.map(Math.sqrt), [micro, 1, 1, 1]);
        effB = tf.tensor(
          te.map((x) => Math.sqrt(1 - x)),
          [micro, 1, 1, 1],
        );
        effNoise = this.rng.randn([micro, side, side, this.effnet.config.c_latent]);
      }
      const seed = this.rng.nextUint32();
      this.seeded.reseed(deriveSeed(seed, 'decoder'));
      this.seededEffnet.reseed(deriveSeed(seed, 'effnet'));
      // the head losses read the captions before caption dropout, and the map before it is dropped or noised
      const headCaptions = sl(batch).map((s) => s.caption);
      let map: tf.Tensor | null = null;
      const r = addDiffusionLoss(
        acc,
        nb,
        accum,
        () => {
          map = frozenMaps ? effIn : this.effnet.forward(effIn);
          let eff = map;
          if (mode === 'drop') eff = tf.mul(eff, 0);
          else if (mode === 'noise') eff = tf.add(tf.mul(eff, effA!), tf.mul(effNoise!, effB!));
          return this.decoder.forward(nb.xt, nb.t, eff, clip);
        },
        heads.length > 0 ? () => this.headLosses(map!, effIn as tf.Tensor4D, headCaptions) : undefined,
      );
      lossSum += r.loss / accum;
      adjSum += r.adjusted;
      r.aux.forEach((v, i) => (headSums[i] += v / accum));
      if (!Number.isFinite(r.loss) || !Number.isFinite(r.adjusted)) finite = false;
      tf.dispose([x0, effIn, clip, nb.xt, nb.noise, nb.t, nb.weights]);
      tf.dispose([effA, effB, effNoise].filter((x): x is tf.Tensor => x !== null));
    }
    latents.dispose();
    frozenMaps?.dispose();
    const lr = this.learningRate(phase, this.opt.step);
    const { gradNorm, skipped } = this.applyGradients(acc, this.opt, lr, finite);
    acc.dispose();
    return {
      loss: lossSum,
      lossAdjusted: adjSum,
      gradNorm,
      lr,
      skipped,
      extra: {
        effnet_cond: mode === 'clean' ? 0 : mode === 'drop' ? 1 : 2,
        ...headMetrics(heads, headSums),
      },
    };
  }

  /** A compressor-only update: the compressor's head losses alone (no decoder, no Stage A). */
  private updateCompressor(batch: Sample[], phase: PhaseConfig, accum: number): UpdateResult {
    const e = phase.effnet_size!;
    this.effnet.train(true);
    const acc = new GradAccumulator(this.params.filter(([k]) => !k.startsWith('decoder.')));
    const micro = batch.length / accum;
    const heads = this.heads();
    const headSums = heads.map(() => 0);
    let adjSum = 0;
    for (let a = 0; a < accum; a++) {
      const part = batch.slice(a * micro, (a + 1) * micro);
      const x = Trainer.toTensor(part.map((s) => this.effnetInput(this.cropSample(s, phase), e, e)));
      this.seededEffnet.reseed(deriveSeed(this.rng.nextUint32(), 'effnet'));
      const captions = part.map((s) => s.caption);
      let kept: tf.Tensor1D | null = null;
      adjSum += acc.add(() => {
        kept = tf.keep(this.headLosses(this.effnet.forward(x), x, captions));
        return tf.div(tf.sum(kept), accum) as tf.Scalar;
      });
      Array.from(kept!.dataSync()).forEach((v, i) => (headSums[i] += v / accum));
      tf.dispose([x, kept!]);
    }
    const lr = this.learningRate(phase, this.opt.step);
    const { gradNorm, skipped } = this.applyGradients(acc, this.opt, lr, Number.isFinite(adjSum));
    acc.dispose();
    return { loss: adjSum, lossAdjusted: adjSum, gradNorm, lr, skipped, extra: headMetrics(heads, headSums) };
  }

  /** The compressor's heads that are on: each one's metric name and loss weight, in the order of headLosses. */
  private heads(): { metric: string; weight: number }[] {
    const ob = this.cfg.objective;
    return [
      ...(this.words ? [{ metric: 'word_loss', weight: ob.effnet_words }] : []),
      ...(this.patches ? [{ metric: 'patch_loss', weight: ob.effnet_patches }] : []),
    ];
  }

  /**
   * The weighted loss of each of the compressor's heads (order of heads()) on `map`, the compressor's output for
   * `input`; `captions` are the words before caption dropout.
   */
  private headLosses(map: tf.Tensor, input: tf.Tensor4D, captions: string[]): tf.Tensor1D {
    const ob = this.cfg.objective;
    return tf.tidy(() => {
      const terms: tf.Scalar[] = [];
      if (this.words) {
        const targets = captionWordTargets(this.text.tokenizer, captions, this.words.buckets);
        terms.push(tf.mul(this.words.loss(map, targets), ob.effnet_words));
      }
      if (this.patches) terms.push(tf.mul(this.patches.loss(map, input), ob.effnet_patches));
      return tf.stack(terms) as tf.Tensor1D;
    });
  }

  protected saveModels(dir: string): void {
    saveModule(path.join(dir, 'decoder'), 'WuerstchenDiffNeXt', this.decoder.config, this.decoder);
    saveModule(path.join(dir, 'effnet'), 'EfficientNetEncoder', this.effnet.config, this.effnet);
    if (this.words)
      saveModule(
        path.join(dir, 'effnet_words'),
        'CaptionWordHead',
        { c_latent: this.words.cLatent, buckets: this.words.buckets },
        this.words,
      );
    if (this.patches)
      saveModule(
        path.join(dir, 'effnet_patches'),
        'PatchHead',
        { c_latent: this.patches.cLatent, patch: this.patches.patch },
        this.patches,
      );
    // a seeded text encoder exists nowhere else: keep it with the weights that were trained against it
    if (this.cfg.text_encoder!.endsWith('.json')) saveTextEncoder(path.join(dir, 'text_encoder'), this.text.encoder);
  }

  protected loadModels(dir: string): void {
    loadDiffusersWeights(this.decoder, path.join(dir, 'decoder'));
    loadDiffusersWeights(this.effnet, path.join(dir, 'effnet'));
    if (this.words) loadDiffusersWeights(this.words, path.join(dir, 'effnet_words'));
    if (this.patches) loadDiffusersWeights(this.patches, path.join(dir, 'effnet_patches'));
  }

  protected optimizerState(): { tensors: Map<string, HostTensor>; steps: Record<string, number> } {
    return { tensors: this.opt.stateTensors(), steps: this.optimizerSteps() };
  }

  protected optimizerSteps(): Record<string, number> {
    return { decoder: this.opt.step };
  }

  protected loadOptimizerState(tensors: HostTensorSource, steps: Record<string, number>): void {
    this.opt.loadStateTensors(tensors, steps.decoder ?? 0);
  }

  evalLoss(n = 8): number {
    const phase = this.evalPhase();
    const e = phase.effnet_size!;
    const fixed = this.fixedSamples(n);
    const crops = fixed.map((s) => this.cropSample(s, phase));
    const x0 = tf.tidy(() => tf.div(this.vqgan.encode(Trainer.toTensor(crops)), this.vqgan.config.scale_factor));
    const clip = this.text.encode(fixed.map((s) => s.caption));
    const nb = this.evalNoise(x0);
    try {
      return Trainer.inEvalMode([this.decoder, this.effnet], () =>
        tf.tidy(() => {
          const eff = this.effnet.forward(Trainer.toTensor(crops.map((c) => this.effnetInput(c, e, e))));
          return diffusionLoss(
            this.decoder.forward(nb.xt, nb.t, eff, clip),
            nb.noise,
            nb.weights,
          ).weighted.dataSync()[0];
        }),
      );
    } finally {
      tf.dispose([x0, clip, nb.xt, nb.noise, nb.t, nb.weights]);
    }
  }

  /**
   * Preview: row 1 = fixed training images, row 2 = Stage A reconstructions (the ceiling),
   * row 3 = decoder samples conditioned on each image's compressor map and caption, decoded by Stage A.
   */
  protected preview(file: string): void {
    const phase = this.evalPhase();
    const e = phase.effnet_size!;
    const fixed = this.fixedSamples(Math.min(this.cfg.sample_images, 8));
    const crops = fixed.map((s) => this.cropSample(s, phase));
    const rows = Trainer.inEvalMode([this.decoder, this.effnet], (): GridRow[] => {
      const recon = tf.tidy(() => tf.clipByValue(this.vqgan.decode(this.vqgan.encode(Trainer.toTensor(crops))), 0, 1));
      const eff = tf.tidy(() => this.effnet.forward(Trainer.toTensor(crops.map((c) => this.effnetInput(c, e, e)))));
      const clip = this.text.encode(fixed.map((s) => s.caption));
      const lat = phase.image_size / 4;
      const rng = new Generator(deriveSeed(this.cfg.seed, 'preview'));
      const z = sampleDDPM([crops.length, lat, lat, this.decoder.config.c_in], this.cfg.sample_steps, rng, (xt, t) =>
        this.decoder.forward(xt, tf.fill([crops.length], t), eff, clip),
      );
      const img = tf.tidy(() => tf.clipByValue(this.vqgan.decode(tf.mul(z, this.vqgan.config.scale_factor)), 0, 1));
      const out: GridRow[] = [
        { label: `training images (step ${this.step})`, images: crops },
        { label: 'Stage A reconstructions (the ceiling)', images: Trainer.toImages(recon) },
        {
          label: "decoder samples from each image's compressor map and caption",
          images: Trainer.toImages(img),
          captions: fixed.map((s) => s.caption),
        },
      ];
      tf.dispose([recon, eff, clip, z, img]);
      return out;
    });
    this.writeGrid(file, rows);
  }

  dispose(): void {
    this.opt?.dispose();
    this.decoder?.dispose();
    this.effnet?.dispose();
    this.words?.dispose();
    this.patches?.dispose();
    this.vqgan?.dispose();
    this.text?.dispose();
    this.dataset.close();
  }
}

/** Each head's unweighted loss (its summed weighted loss / its weight), keyed by its metric name. */
function headMetrics(heads: { metric: string; weight: number }[], weightedSums: number[]): Record<string, number> {
  return Object.fromEntries(heads.map((h, i) => [h.metric, weightedSums[i] / h.weight]));
}
