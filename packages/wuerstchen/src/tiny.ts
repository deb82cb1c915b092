/**
 * The bundled tiny model: a Würstchen made by this project's own trainers on the procedural shapes
 * data (see models/wuerstchen-tiny/README.md). It is what `wuerstchen generate` and
 * `WuerstchenCombinedPipeline.fromPretrained()` use when no folders are given.
 */
import { joinPath } from '@wuerstchen/core/internal';

/**
 * Folder holding `wuerstchen-prior/` and `wuerstchen/` (diffusers pipeline folders), next to this package's code.
 * A browser bundle has no such folder: a page serves it and loads it by URL (`fromUrl`).
 */
export const TINY_MODEL_DIR =
  typeof __dirname === 'string' ? joinPath(__dirname, '../models/wuerstchen-tiny') : 'models/wuerstchen-tiny';

/** Its native geometry and the sampling defaults its model card reports numbers for. */
export const TINY_MODEL = {
  width: 64,
  height: 64,
  priorSteps: 30,
  decoderSteps: 12,
  priorGuidance: 4,
  examplePrompt: 'a large red circle in the middle on a blue background',
} as const;

/** `<dir>/wuerstchen-prior` and `<dir>/wuerstchen` of a folder that holds both pipelines. */
export function pipelineFolders(dir: string = TINY_MODEL_DIR): { prior: string; decoder: string } {
  return { prior: joinPath(dir, 'wuerstchen-prior'), decoder: joinPath(dir, 'wuerstchen') };
}
