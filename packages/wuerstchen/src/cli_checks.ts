/**
 * Checks of `wuerstchen generate`'s arguments made before anything is loaded: stated limits, and whether the
 * output files can be written (the values themselves are read strictly by @wuerstchen/core/cli). Each check
 * returns the problem as a sentence naming the option, or undefined.
 */
import * as fs from 'fs';
import * as path from 'path';

/** Upper limits of the run's size: far above useful values, low enough to fail before memory runs out. */
export const GENERATE_LIMITS = { steps: 1000, images: 64, side: 4096 } as const;

export interface RunSize {
  priorSteps: number;
  decoderSteps: number;
  images: number;
  prompts: number;
  width: number;
  height: number;
}

/** The first limit the run exceeds, or undefined. */
export function limitProblem(run: RunSize): string | undefined {
  const { steps, images, side } = GENERATE_LIMITS;
  if (run.priorSteps > steps) return `--prior-steps ${run.priorSteps} is above the limit of ${steps}`;
  if (run.decoderSteps > steps) return `--decoder-steps ${run.decoderSteps} is above the limit of ${steps}`;
  const total = run.images * run.prompts;
  if (total > images) {
    const what =
      run.prompts === 1
        ? `--images ${run.images}`
        : `--images ${run.images} × ${run.prompts} prompts = ${total} images`;
    return `${what} is above the limit of ${images} images per run`;
  }
  if (run.width > side) return `--width ${run.width} is above the limit of ${side}`;
  if (run.height > side) return `--height ${run.height} is above the limit of ${side}`;
  return undefined;
}

/**
 * Why the output files cannot be written, checked before the run rather than after it: their folder must exist
 * and be writable, and none of them may be a folder or another non-file.
 */
export function outputProblem(files: string[]): string | undefined {
  const dir = path.dirname(path.resolve(files[0]));
  if (!fs.statSync(dir, { throwIfNoEntry: false })?.isDirectory()) return `--out: folder ${dir} does not exist`;
  try {
    fs.accessSync(dir, fs.constants.W_OK | fs.constants.X_OK);
  } catch {
    return `--out: folder ${dir} is not writable`;
  }
  for (const file of files) {
    const stat = fs.statSync(file, { throwIfNoEntry: false });
    if (stat?.isDirectory()) return `--out: ${file} is a folder`;
    if (stat && !stat.isFile()) return `--out: ${file} exists and is not a regular file`;
  }
  return undefined;
}
