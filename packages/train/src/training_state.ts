/**
 * `training_state.json`, the trainer's part of a checkpoint: its format and a strict reader. The file
 * is input like any other, so every field the trainer restores from is checked before it is used.
 */
import { GeneratorState } from 'wuerstchen';
import { DataState } from './data/dataset';

/** `training_state.json` format; 2: `rng` is the `wuerstchen` Generator's `{algorithm, s}` state. */
export const TRAINING_STATE_VERSION = 2;

export interface TrainingState {
  version: typeof TRAINING_STATE_VERSION;
  stage: string;
  config_name: string;
  step: number;
  total_steps: number;
  phase: { index: number; name: string; step_in_phase: number };
  optimizer_steps: Record<string, number>;
  skipped: number;
  ema_loss: number | null;
  rng: GeneratorState;
  data: DataState;
  finished: boolean;
  extra?: Record<string, unknown>;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
const shown = (v: unknown): string => (JSON.stringify(v) ?? String(v)).slice(0, 60);

/** Parse and check a `training_state.json` of a stage-`stage` checkpoint folder named for `step`. */
export function parseTrainingState(text: string, stage: string, step: number): TrainingState {
  const fail = (key: string, expected: string, got: unknown): never => {
    throw new Error(`training_state.json: "${key}" must be ${expected}, got ${shown(got)}`);
  };
  let st: unknown;
  try {
    st = JSON.parse(text);
  } catch (e) {
    throw new Error(`training_state.json is not valid JSON (${(e as Error).message})`);
  }
  if (!isObject(st)) return fail('(top level)', 'an object', st);
  if (st.version !== TRAINING_STATE_VERSION) fail('version', String(TRAINING_STATE_VERSION), st.version);
  if (st.stage !== stage) fail('stage', `"${stage}" (the stage of this run)`, st.stage);
  if (!isCount(st.step)) fail('step', 'a non-negative integer', st.step);
  if (st.step !== step) fail('step', `${step} (the step its folder is named for)`, st.step);
  if (!isObject(st.optimizer_steps) || !Object.values(st.optimizer_steps).every(isCount))
    fail('optimizer_steps', 'an object of non-negative integers', st.optimizer_steps);
  if (!isCount(st.skipped)) fail('skipped', 'a non-negative integer', st.skipped);
  if (st.ema_loss !== null && !Number.isFinite(st.ema_loss)) fail('ema_loss', 'a number or null', st.ema_loss);
  const rng = st.rng;
  if (
    !isObject(rng) ||
    rng.algorithm !== 'xoshiro128**' ||
    !Array.isArray(rng.s) ||
    rng.s.length !== 4 ||
    !rng.s.every((w) => isCount(w) && w <= 0xffffffff) ||
    rng.s.every((w) => w === 0)
  ) {
    fail('rng', '{"algorithm": "xoshiro128**", "s": four unsigned 32-bit integers, not all 0}', rng);
  }
  const data = st.data;
  if (!isObject(data)) return fail('data', 'an object', data);
  const pos = data.position;
  for (const k of ['epoch', 'index', 'emitted', 'consumed', 'usableInEpoch']) {
    if (!isObject(pos) || !isCount(pos[k]))
      fail(`data.position.${k}`, 'a non-negative integer', isObject(pos) ? pos[k] : pos);
  }
  if (!isObject(data.warnings) || !Object.values(data.warnings).every(isCount))
    fail('data.warnings', 'an object of non-negative integers', data.warnings);
  if (!Array.isArray(data.warned) || !data.warned.every((w) => typeof w === 'string'))
    fail('data.warned', 'a list of strings', data.warned);
  if (typeof st.finished !== 'boolean') fail('finished', 'true or false', st.finished);
  if (st.extra !== undefined && !isObject(st.extra)) fail('extra', 'an object', st.extra);
  return st as unknown as TrainingState;
}
