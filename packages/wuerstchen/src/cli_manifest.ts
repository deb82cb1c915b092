/**
 * The manifest of a run that writes several images (`<out>-1.png`, `<out>-2.png`, ...): `<out>.json` next to
 * them, saying for each file which prompt drew it, with which seed and settings, so that numbered files can be
 * told apart and reproduced.
 */
import * as path from 'path';
import type { Command, GenerateArgs } from './cli_args';

export interface ManifestImage {
  /** the file name, next to the manifest. */
  file: string;
  prompt: string;
  /** the run's seed: one generator draws the noise of the whole batch, in this order. */
  seed: number;
  /** place in the batch (images are ordered prompt by prompt): the same prompts, seed and settings redraw it. */
  batch_index: number;
}

export interface RunManifest {
  command: Command;
  model: { prior: string; decoder: string; variant?: string; loras: { file: string; scale: number }[] };
  settings: Record<string, string | number | undefined>;
  images: ManifestImage[];
}

/** The manifest of `files`, written by a run of `args` with `seed` (the files in batch order). */
export function runManifest(command: Command, args: GenerateArgs, seed: number, files: string[]): RunManifest {
  const prompts = command === 'vary' ? [args.prompts[0] ?? ''] : args.prompts;
  const perPrompt = files.length / prompts.length;
  return {
    command,
    model: { prior: args.prior, decoder: args.decoder, variant: args.variant, loras: args.loras },
    settings: {
      negative_prompt: args.negativePrompt,
      width: args.width,
      height: args.height,
      prior_steps: args.priorSteps,
      decoder_steps: args.decoderSteps,
      prior_guidance: args.priorGuidance,
      decoder_guidance: args.decoderGuidance,
      images_per_prompt: args.images,
      ...(command === 'vary' ? { image: args.image, strength: args.strength } : {}),
    },
    images: files.map((file, i) => ({
      file: path.basename(file),
      prompt: prompts[Math.floor(i / perPrompt)],
      seed,
      batch_index: i,
    })),
  };
}
