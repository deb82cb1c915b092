/**
 * Runner for `pipeline_e2e_tiny`: the miniature hub folders through the real loader and pipelines —
 * tokenizer → text encoders → prior pipeline (given timesteps, CFG 4, given initial latents and
 * per-step noise) → decoder pipeline (CFG 2) → VQGAN — with every stage's result compared.
 */
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { toNCHW, toNHWC } from '@wuerstchen/core/internal';
import { WuerstchenDecoderPipeline, WuerstchenPriorPipeline } from 'wuerstchen';
import { CaseContext, RunResult, registerRunner } from '../harness';

interface PipelineCaseConfig {
  hub_prior: string;
  hub_decoder: string;
  prompt: string;
  negative_prompt: string;
  height: number;
  width: number;
  prior_timesteps: number[];
  prior_guidance_scale: number;
  decoder_timesteps: number[];
  decoder_guidance_scale: number;
  num_images_per_prompt: number;
}

/** Case layout (NCHW) for 4-D tensors, as is otherwise. */
const torchLayout = (t: tf.Tensor): tf.Tensor => (t.rank === 4 ? toNCHW(t) : t.clone());

/** `[steps, B, C, H, W]` NCHW → one NHWC tensor per step. */
function perStepNHWC(ctx: CaseContext, name: string): tf.Tensor[] {
  return tf.tidy(() => tf.unstack(ctx.tensor(name)).map((t) => toNHWC(t)));
}

async function runPipelineCase(ctx: CaseContext): Promise<RunResult> {
  const cfg = ctx.spec.config as unknown as PipelineCaseConfig;
  const prior = WuerstchenPriorPipeline.fromPretrained(path.resolve(ctx.dir, cfg.hub_prior));
  const decoder = WuerstchenDecoderPipeline.fromPretrained(path.resolve(ctx.dir, cfg.hub_decoder));
  const tensors: Record<string, tf.Tensor> = {};
  const keep = (name: string, t: tf.Tensor) => {
    tensors[name]?.dispose();
    tensors[name] = tf.keep(tf.tidy(() => torchLayout(t)));
  };
  const priorSteps: tf.Tensor[] = [];
  const decoderSteps: tf.Tensor[] = [];
  const inputs: tf.Tensor[] = [];
  try {
    const priorLatents = tf.tidy(() => toNHWC(ctx.tensor('prior_initial_latents')));
    const decoderLatents = tf.tidy(() => toNHWC(ctx.tensor('decoder_initial_latents')));
    const priorNoise = perStepNHWC(ctx, 'prior_step_noise');
    const decoderNoise = perStepNHWC(ctx, 'decoder_step_noise');
    inputs.push(priorLatents, decoderLatents, ...priorNoise, ...decoderNoise);

    const { imageEmbeddings } = await prior(cfg.prompt, {
      width: cfg.width,
      height: cfg.height,
      timesteps: cfg.prior_timesteps,
      guidanceScale: cfg.prior_guidance_scale,
      negativePrompt: cfg.negative_prompt,
      numImagesPerPrompt: cfg.num_images_per_prompt,
      latents: priorLatents,
      stepNoise: priorNoise,
      callback: (_i, _t, x) => priorSteps.push(tf.keep(toNCHW(x))),
      trace: (name, t) => {
        if (name.endsWith('_input_ids') || name.endsWith('_attention_mask')) keep(name, t);
        else keep(`prior_${name}`, t);
      },
    });
    try {
      keep('image_embeddings', imageEmbeddings);
      const { images } = await decoder(imageEmbeddings, cfg.prompt, {
        timesteps: cfg.decoder_timesteps,
        guidanceScale: cfg.decoder_guidance_scale,
        negativePrompt: cfg.negative_prompt,
        latents: decoderLatents,
        stepNoise: decoderNoise,
        outputType: 'tensor',
        callback: (_i, _t, x) => decoderSteps.push(tf.keep(toNCHW(x))),
        trace: (name, t) => {
          if (name.endsWith('_input_ids') || name.endsWith('_attention_mask')) return; // same tokenizer files: the prior's are compared
          keep(name.startsWith('vqgan_') ? name : `decoder_${name}`, t);
        },
      });
      keep('images', images!);
      images!.dispose();
    } finally {
      imageEmbeddings.dispose();
    }
    tensors.prior_step_latents = tf.stack(priorSteps);
    tensors.decoder_step_latents = tf.stack(decoderSteps);
  } finally {
    for (const t of [...priorSteps, ...decoderSteps, ...inputs]) t.dispose();
    prior.release();
    decoder.release();
  }
  return { tensors };
}

registerRunner('WuerstchenPriorPipeline + WuerstchenDecoderPipeline', runPipelineCase);
