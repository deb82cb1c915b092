/**
 * Runner for the `DDPMWuerstchenScheduler` cases (`scheduler_ddpm_wuerstchen`, `..._scaler`, `..._scaler2`; golden
 * README "Cases"; diffusers src/diffusers/schedulers/scheduling_ddpm_wuerstchen.py).
 *
 * `case.json` → `schedules` lists the step chains (`prefix`, `schedule`, `num_steps`). For each chain the case's own
 * timestep tensor is fed (`setTimesteps({timesteps})`), and every step k runs on the case's `sample[k]`,
 * `model_output[k]` and `noise[k]` with `t = timesteps[k]` expanded to the batch. Produced per chain: `prev_sample`,
 * `t`, `t_prev`, `alpha_cumprod`, `alpha_cumprod_prev` (stacked over steps), plus `add_noise_out` and
 * `add_noise_alpha_cumprod` where the case has them. Extra checks: the chain replayed from `sample[0]` on our own
 * outputs stays within the tolerance, and the schedule the chain's description names reproduces the case's
 * timesteps: `setTimesteps(n)` within 2 float32 ulp (`torch.linspace`, see `linspaceF32`), `DEFAULT_STAGE_C_TIMESTEPS`
 * bitwise, an explicit list within its printed precision (`parseSchedule`).
 */
import * as tf from '@tensorflow/tfjs';
import { DDPMWuerstchenScheduler, DEFAULT_STAGE_C_TIMESTEPS, DDPMWuerstchenSchedulerConfig } from 'wuerstchen';
import { CaseContext, Check, RunResult, registerRunner } from '../harness';

interface ScheduleSpec {
  prefix: string;
  schedule: string;
  num_steps: number;
}

/**
 * What a chain's `schedule` description asks for, in the three forms `setTimesteps` accepts: a count
 * (`num_inference_steps=12`, or a leading number), `DEFAULT_STAGE_C_TIMESTEPS`, or an explicit list
 * (`custom timesteps [1.0, 0.93, …]`; a trailing `…` or `...` means only a prefix is written). List
 * values stay strings because their printed precision is what they promise.
 */
export type Schedule =
  { kind: 'default' } | { kind: 'count'; steps: number } | { kind: 'list'; values: string[]; truncated: boolean };

const NUMBER = /^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i;

/** The schedule a description names, or null when it names none of the three forms. */
export function parseSchedule(description: string): Schedule | null {
  // Checked first: its description spells out the linspace recipe, brackets included.
  if (description.includes('DEFAULT_STAGE_C_TIMESTEPS')) return { kind: 'default' };
  const list = /\[([^\]]*)\]/.exec(description);
  if (list) {
    const items = list[1].split(',').map((item) => item.trim());
    const truncated = items.length > 1 && (items[items.length - 1] === '…' || items[items.length - 1] === '...');
    const values = truncated ? items.slice(0, -1) : items;
    if (values.length && values.every((v) => NUMBER.test(v))) return { kind: 'list', values, truncated };
  }
  const count = /num_inference_steps\s*=\s*(\d+)/.exec(description) ?? /^\s*(\d+)\b(?!\.)/.exec(description);
  return count ? { kind: 'count', steps: Number(count[1]) } : null;
}

/** Half a unit in the last printed digit of `text`: how far the true value may lie from it. */
function printedHalfUnit(text: string): number {
  const [mantissa, exponent = '0'] = text.toLowerCase().split('e');
  const decimals = mantissa.includes('.') ? mantissa.length - mantissa.indexOf('.') - 1 : 0;
  return 0.5 * 10 ** (Number(exponent) - decimals);
}

/** Distance in float32 ulps (units in the last place) between two float32 values of the same sign region. */
function ulpDistance(a: number, b: number): number {
  const view = new DataView(new ArrayBuffer(8));
  const ordered = (x: number) => {
    view.setFloat32(0, x, true);
    const bits = view.getInt32(0, true);
    return bits < 0 ? -0x80000000 - bits : bits;
  };
  return Math.abs(ordered(a) - ordered(b));
}

/** Whether the stored timesteps are the listed ones, each within its printed precision (plus float32 rounding). */
function listCheck(name: string, listed: Extract<Schedule, { kind: 'list' }>, given: Float32Array): Check {
  if (!listed.truncated && listed.values.length !== given.length) {
    return {
      name: `${name} = listed timesteps`,
      ok: false,
      detail: `${listed.values.length} listed, ${given.length} stored`,
    };
  }
  const bad = listed.values.flatMap((text, i) => {
    const v = Number(text);
    return i < given.length && Math.abs(given[i] - v) <= printedHalfUnit(text) + Math.abs(v) * 2 ** -24
      ? []
      : [`[${i}] ${given[i]} vs ${text}`];
  });
  const what = listed.truncated ? `the ${listed.values.length} listed leading timesteps` : 'listed timesteps';
  return { name: `${name} = ${what}`, ok: bad.length === 0, detail: `differs at ${bad.join(', ')}` };
}

function timestepChecks(spec: ScheduleSpec, given: Float32Array, config: DDPMWuerstchenSchedulerConfig): Check[] {
  const name = `${spec.prefix}timesteps`;
  const checks: Check[] = [
    {
      name: `${name} length`,
      ok: given.length === spec.num_steps + 1,
      detail: `${given.length} values for ${spec.num_steps} steps`,
    },
  ];
  const schedule = parseSchedule(spec.schedule);
  if (!schedule) {
    checks.push({ name: `${name} schedule`, ok: false, detail: `cannot read the schedule "${spec.schedule}"` });
  } else if (schedule.kind === 'default') {
    const bad = DEFAULT_STAGE_C_TIMESTEPS.map((_, i) => i).filter((i) => DEFAULT_STAGE_C_TIMESTEPS[i] !== given[i]);
    const ok = given.length === DEFAULT_STAGE_C_TIMESTEPS.length && bad.length === 0;
    checks.push({
      name: `${name} = DEFAULT_STAGE_C_TIMESTEPS`,
      ok,
      detail: `differs at ${bad.join(', ') || 'length'}`,
    });
  } else if (schedule.kind === 'list') {
    checks.push(listCheck(name, schedule, given));
  } else {
    const n = schedule.steps;
    const ours = new DDPMWuerstchenScheduler(config).setTimesteps(n);
    const maxUlp =
      ours.length === given.length ? Math.max(...Array.from(ours, (v, i) => ulpDistance(v, given[i]))) : Infinity;
    checks.push({
      name: `${name} ≈ setTimesteps(${n})`,
      ok: maxUlp <= 2,
      detail: `max distance ${maxUlp} float32 ulp (torch CPU vs symmetric linspace may differ by ≤ 2)`,
    });
  }
  return checks;
}

function runSchedule(
  ctx: CaseContext,
  spec: ScheduleSpec,
  config: DDPMWuerstchenSchedulerConfig,
  tensors: Record<string, tf.Tensor>,
  checks: Check[],
): void {
  const p = spec.prefix;
  const tol = ctx.spec.tolerance ?? 0;
  const stored = ctx.io().get(`${p}timesteps`);
  if (!stored || !(stored.data instanceof Float32Array))
    throw new Error(`${ctx.file('io.safetensors')}: no float32 tensor "${p}timesteps"`);
  const timesteps = stored.data;
  checks.push(...timestepChecks(spec, timesteps, config));
  const scheduler = new DDPMWuerstchenScheduler(config);
  scheduler.setTimesteps({ timesteps });
  const sample = ctx.tensor(`${p}sample`);
  const modelOutput = ctx.tensor(`${p}model_output`);
  const noise = ctx.tensor(`${p}noise`);
  const expected = ctx.tensor(`${p}prev_sample`);
  try {
    const steps = spec.num_steps;
    const batch = sample.shape[1]!;
    const out = tf.tidy(() => {
      const xs = tf.unstack(sample);
      const eps = tf.unstack(modelOutput);
      const zs = tf.unstack(noise);
      const prev: tf.Tensor[] = [];
      const ts: tf.Tensor[] = [];
      const tPrevs: tf.Tensor[] = [];
      const acs: tf.Tensor[] = [];
      const acPrevs: tf.Tensor[] = [];
      let chained: tf.Tensor = xs[0];
      let chainErr = 0;
      const ref = tf.unstack(expected);
      for (let k = 0; k < steps; k++) {
        const t = tf.fill([batch], timesteps[k], 'float32');
        const tPrev = scheduler.previousTimestep(t);
        prev.push(scheduler.step(eps[k], t, xs[k], { noise: zs[k] }).prevSample);
        ts.push(t);
        tPrevs.push(tPrev);
        acs.push(scheduler.alphaCumprod(t));
        acPrevs.push(scheduler.alphaCumprod(tPrev));
        chained = scheduler.step(eps[k], t, chained, { noise: zs[k] }).prevSample;
        chainErr = Math.max(chainErr, tf.max(tf.abs(tf.sub(chained, ref[k]))).dataSync()[0]);
      }
      checks.push({
        name: `${p} chain replayed on own outputs`,
        ok: chainErr <= tol,
        detail: `max abs err ${chainErr.toExponential(3)} > ${tol}`,
      });
      return {
        [`${p}prev_sample`]: tf.stack(prev),
        [`${p}t`]: tf.stack(ts),
        [`${p}t_prev`]: tf.stack(tPrevs),
        [`${p}alpha_cumprod`]: tf.stack(acs),
        [`${p}alpha_cumprod_prev`]: tf.stack(acPrevs),
      };
    });
    Object.assign(tensors, out);
  } finally {
    tf.dispose([sample, modelOutput, noise, expected]);
  }
}

function run(ctx: CaseContext): RunResult {
  const config = ctx.spec.config as Partial<DDPMWuerstchenSchedulerConfig> | undefined;
  const scheduler = DDPMWuerstchenScheduler.fromConfig({ ...(config ?? {}) }, `${ctx.file('case.json')} config`);
  const cfg = { ...scheduler.config };
  const schedules = ctx.spec.schedules as ScheduleSpec[] | undefined;
  if (!Array.isArray(schedules) || schedules.length === 0)
    throw new Error(`${ctx.file('case.json')}: no "schedules" list`);
  const tensors: Record<string, tf.Tensor> = {};
  const checks: Check[] = [];
  try {
    for (const s of schedules) runSchedule(ctx, s, cfg, tensors, checks);
    if (ctx.io().has('add_noise_original')) {
      const out = tf.tidy(() => {
        const t = ctx.tensor('add_noise_t');
        return {
          add_noise_out: scheduler.addNoise(ctx.tensor('add_noise_original'), ctx.tensor('add_noise_noise'), t),
          add_noise_alpha_cumprod: scheduler.alphaCumprod(t),
        };
      });
      Object.assign(tensors, out);
    }
  } catch (e) {
    tf.dispose(Object.values(tensors));
    throw e;
  }
  return { tensors, checks };
}

registerRunner('DDPMWuerstchenScheduler', run);
