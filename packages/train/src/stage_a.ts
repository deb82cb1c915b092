/**
 * Stage A (VQGAN) trainer — a PROXY recipe: no Stage A training code was released, so this follows the same
 * authors' first-stage trainer in dome272/Paella (ongoing_research/text-to-video/train_vivq.py, loss/loss.py):
 * The decoder sees the quantised latents with probability `quantize_p` per batch (default 1), else the
 * encoder's continuous latents (what the Würstchen pipeline decodes).
 *   L_G = 1.0·MSE(x, x̂) + 0.1·g_loss + 0.1·(codebook + 0.25·commitment)   [LPIPS term omitted]
 *   d_loss = 0.5·[BCE(D(x), 0.1) + BCE(D(sg(x̂)), 0.9)],  g_loss = BCE(D(x̂), 0.1)   (smoothed, inverted)
 *   opt_G = AdamW(3e-4) with OneCycle (pct 0.1, div 25, final_div 1/25, linear); opt_D = AdamW(3e-6)
 * x̂ = decode(quantize(encode(x))) with the straight-through estimator; images in [0, 1].
 */
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { HostTensor } from '@wuerstchen/core';
import { Generator, PaellaVQConfig, PaellaVQModel } from 'wuerstchen';
import { PhaseConfig } from './config';
import { loadDiffusersWeights } from './checkpoint';
import { Sample } from './data/dataset';
import { GridRow } from './data/grid';
import { Discriminator, bceWithLogits } from './discriminator';
import { initModule, vqganInitRules } from './init';
import { saveModule } from './models_io';
import { AdamW, HostTensorSource } from './optim';
import { deriveSeed } from './rng';
import { GradAccumulator, Trainer, UpdateResult } from './trainer';

export class StageATrainer extends Trainer {
  vqgan!: PaellaVQModel;
  disc!: Discriminator;
  optG!: AdamW;
  optD!: AdamW;

  protected setup(): void {
    const cfg = this.cfg;
    this.vqgan = new PaellaVQModel(cfg.model as Partial<PaellaVQConfig>);
    this.initOrLoad(this.vqgan, 'vqgan', vqganInitRules(this.vqgan.config.num_vq_embeddings));
    this.vqgan.train();
    const d = cfg.discriminator!;
    this.disc = new Discriminator({ c_in: this.vqgan.config.in_channels, c_hidden: d.c_hidden, depth: d.depth });
    const rng = new Generator(deriveSeed(cfg.seed, 'init', 'discriminator'));
    initModule(this.disc, rng);
    for (const c of this.disc.convs) c.initVectors(rng);
    this.disc.train();
    const o = cfg.optimizer;
    this.optG = new AdamW(this.vqgan.trainableParameters(), {
      lr: o.lr,
      betas: o.betas,
      eps: o.eps,
      weightDecay: o.weight_decay,
    });
    this.optD = new AdamW(this.disc.trainableParameters(), {
      lr: d.lr,
      betas: d.betas,
      eps: o.eps,
      weightDecay: d.weight_decay,
    });
  }

  protected update(batch: Sample[], phase: PhaseConfig, accum: number): UpdateResult {
    const ob = this.cfg.objective;
    const crops = batch.map((s) => this.cropSample(s, phase));
    const micro = batch.length / accum;
    const accG = new GradAccumulator(this.vqgan.trainableParameters());
    const accD = new GradAccumulator(this.disc.trainableParameters());
    const useAdv = this.step >= ob.disc_start && ob.adv_weight > 0;
    const quantize = ob.quantize_p >= 1 || this.rng.nextFloat() < ob.quantize_p;
    const logs = { rec: 0, vq: 0, commit: 0, g: 0, d: 0, total: 0 };
    let finite = true;
    for (let a = 0; a < accum; a++) {
      const x = Trainer.toTensor(crops.slice(a * micro, (a + 1) * micro));
      let xr: tf.Tensor | null = null;
      const parts: tf.Tensor[] = [];
      const total = accG.add(() => {
        const z = this.vqgan.encode(x);
        const q = this.vqgan.vquantizer.forwardWithLoss(z);
        // the pipeline decodes Stage B's continuous latents unquantised, so the decoder also learns z itself
        const rec = this.vqgan.decode(quantize ? q.quantized : z, true);
        xr = tf.keep(rec);
        const mse = tf.mean(tf.squaredDifference(x, rec)) as tf.Scalar;
        const vq = tf.add(q.codebookLoss, tf.mul(q.commitmentLoss, ob.commitment));
        let loss = tf.add(tf.mul(mse, ob.rec_weight), tf.mul(vq, ob.vq_weight));
        let g: tf.Scalar = tf.scalar(0);
        if (useAdv) {
          g = bceWithLogits(this.disc.forward(rec), 0.1);
          loss = tf.add(loss, tf.mul(g, ob.adv_weight));
        }
        parts.push(tf.keep(tf.stack([mse, q.codebookLoss, q.commitmentLoss, g])));
        return tf.div(loss, accum) as tf.Scalar;
      });
      const [mse, cb, cm, g] = parts[0].dataSync();
      parts[0].dispose();
      logs.rec += mse / accum;
      logs.vq += cb / accum;
      logs.commit += cm / accum;
      logs.g += g / accum;
      logs.total += total;
      if (!Number.isFinite(total)) finite = false;
      if (useAdv) {
        const fake = xr!;
        const dl = accD.add(
          () =>
            tf.div(
              tf.mul(
                tf.add(bceWithLogits(this.disc.forward(x, true), 0.1), bceWithLogits(this.disc.forward(fake), 0.9)),
                0.5,
              ),
              accum,
            ) as tf.Scalar,
        );
        logs.d += dl;
        if (!Number.isFinite(dl)) finite = false;
      }
      (xr as tf.Tensor | null)?.dispose();
      x.dispose();
    }
    const lr = this.learningRate(phase, this.optG.step);
    const { gradNorm, skipped } = this.applyGradients(accG, this.optG, lr, finite);
    let dNorm = 0;
    if (useAdv && !skipped) {
      dNorm = this.applyGradients(accD, this.optD, this.cfg.discriminator!.lr, finite).gradNorm;
    }
    accG.dispose();
    accD.dispose();
    return {
      loss: logs.rec,
      lossAdjusted: logs.total,
      gradNorm,
      lr,
      skipped,
      extra: {
        rec_loss: logs.rec,
        codebook_loss: logs.vq,
        commitment_loss: logs.commit,
        g_loss: logs.g,
        d_loss: logs.d,
        d_grad_norm: dNorm,
      },
    };
  }

  protected saveModels(dir: string): void {
    const config = this.cfg.objective.fit_scale_factor
      ? { ...this.vqgan.config, scale_factor: this.latentStd() }
      : this.vqgan.config;
    saveModule(path.join(dir, 'vqgan'), 'PaellaVQModel', config, this.vqgan);
    saveModule(path.join(dir, 'discriminator'), 'WuerstchenStageADiscriminator', this.disc.config, this.disc);
  }

  protected loadModels(dir: string): void {
    loadDiffusersWeights(this.vqgan, path.join(dir, 'vqgan'));
    loadDiffusersWeights(this.disc, path.join(dir, 'discriminator'));
  }

  protected optimizerState(): { tensors: Map<string, HostTensor>; steps: Record<string, number> } {
    const t = this.optG.stateTensors('vqgan.');
    for (const [k, v] of this.optD.stateTensors('discriminator.')) t.set(k, v);
    return { tensors: t, steps: this.optimizerSteps() };
  }

  protected optimizerSteps(): Record<string, number> {
    return { vqgan: this.optG.step, discriminator: this.optD.step };
  }

  protected loadOptimizerState(tensors: HostTensorSource, steps: Record<string, number>): void {
    this.optG.loadStateTensors(tensors, steps.vqgan ?? 0, 'vqgan.');
    this.optD.loadStateTensors(tensors, steps.discriminator ?? 0, 'discriminator.');
  }

  /** Standard deviation of the unquantised latents of 64 fixed training crops (eval mode). */
  latentStd(n = 64): number {
    const phase = this.evalPhase();
    const x = Trainer.toTensor(this.fixedSamples(n).map((s) => this.cropSample(s, phase)));
    const std = Trainer.inEvalMode([this.vqgan], () =>
      tf.tidy(() => tf.moments(this.vqgan.encode(x)).variance.sqrt().dataSync()[0]),
    );
    x.dispose();
    return std;
  }

  /** Reconstruction of images `[B, H, W, 3]` through the quantiser (eval mode). */
  reconstruct(x: tf.Tensor4D): tf.Tensor4D {
    return Trainer.inEvalMode(
      [this.vqgan],
      () => tf.tidy(() => tf.clipByValue(this.vqgan.decode(this.vqgan.encode(x), false), 0, 1)) as tf.Tensor4D,
    );
  }

  /** Reconstruction MSE (through the quantiser, eval mode) on fixed centre crops. */
  evalLoss(n = 8): number {
    const phase = this.evalPhase();
    const x = Trainer.toTensor(this.fixedSamples(n).map((s) => this.cropSample(s, phase)));
    const r = this.reconstruct(x);
    const l = tf.tidy(() => tf.mean(tf.squaredDifference(x, r)).dataSync()[0]);
    tf.dispose([x, r]);
    return l;
  }

  /** Preview: row 1 = fixed training images (centre crops), row 2 = their quantised reconstructions. */
  protected preview(file: string): void {
    const phase = this.evalPhase();
    const fixed = this.fixedSamples(Math.min(this.cfg.sample_images, 8)).map((s) => this.cropSample(s, phase));
    const x = Trainer.toTensor(fixed);
    const r = this.reconstruct(x);
    const rows: GridRow[] = [
      { label: `training images (step ${this.step})`, images: fixed },
      { label: 'reconstructions (encode, quantise, decode)', images: Trainer.toImages(r) },
    ];
    tf.dispose([x, r]);
    this.writeGrid(file, rows);
  }

  dispose(): void {
    this.optG?.dispose();
    this.optD?.dispose();
    this.vqgan?.dispose();
    this.disc?.dispose();
    this.dataset.close();
  }
}
