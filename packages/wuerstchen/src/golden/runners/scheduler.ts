/**
 * Runner for the `DDPMWuerstchenScheduler` cases (`scheduler_ddpm_wuerstchen`, `..._scaler`, `..._scaler2`; golden
 * README "Cases"; spec inference.md §5.1).
 *
 * `case.json` → `schedules` lists the step chains (`prefix`, `schedule`, `num_steps`). For each chain the case's own
 * timestep tensor is fed (`setTimesteps({timesteps})`), and every step k runs on the case's `sample[k]`,
 * `model_output[k]` and `noise[k]` with `t = timesteps[k]` expanded to the batch. Produced per chain: `prev_sample`,
 * `t`, `t_prev`, `alpha_cumprod`, `alpha_cumprod_prev` (stacked over steps), plus `add_noise_out` and
 * `add_noise_alpha_cumprod` where the case has them. Extra checks: the chain replayed from `sample[0]` on our own
 * outputs stays within the tolerance, and `setTimesteps(n)` / `DEFAULT_STAGE_C_TIMESTEPS` reproduce the case's
 * timesteps (bitwise, or within 2 float32 ulp for `torch.linspace`, see `linspaceF32`).
 */
import * as tf from '@tensorflow/tfjs';
import { DDPMWuerstchenScheduler, DEFAULT_STAGE_C_TIMESTEPS, DDPMWuerstchenSchedulerConfig } from '../../scheduler';
import { CaseContext, Check, RunResult, registerRunner } from '../harness';

interface ScheduleSpec {
  prefix: string;
  schedule: string;
  num_steps: number;
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

function timestepChecks(spec: ScheduleSpec, given: Float32Array, config: DDPMWuerstchenSchedulerConfig): Check[] {
  const name = `${spec.prefix}timesteps`;
  const checks: Check[] = [
    { name: `${name} length`, ok: given.length === spec.num_steps + 1, detail: `${given.length} values for ${spec.num_steps} steps` },
  ];
  if (spec.schedule.includes('DEFAULT_STAGE_C_TIMESTEPS')) {
    const bad = DEFAULT_STAGE_C_TIMESTEPS.map((v, i) => i).filter((i) => DEFAULT_STAGE_C_TIMESTEPS[i] !== given[i]);
    const ok = given.length === DEFAULT_STAGE_C_TIMESTEPS.length && bad.length === 0;
    checks.push({ name: `${name} = DEFAULT_STAGE_C_TIMESTEPS`, ok, detail: `differs at ${bad.join(', ') || 'length'}` });
    return checks;
  }
  const m = /num_inference_steps=(\d+)/.exec(spec.schedule);
  if (!m) {
    checks.push({ name: `${name} schedule`, ok: false, detail: `cannot read the schedule "${spec.schedule}"` });
    return checks;
  }
  const n = Number(m[1]);
  const ours = new DDPMWuerstchenScheduler(config).setTimesteps(n);
  const maxUlp = ours.length === given.length ? Math.max(...Array.from(ours, (v, i) => ulpDistance(v, given[i]))) : Infinity;
  checks.push({
    name: `${name} ≈ setTimesteps(${n})`,
    ok: maxUlp <= 2,
    detail: `max distance ${maxUlp} float32 ulp (torch CPU vs symmetric linspace may differ by ≤ 2)`,
  });
  return checks;
}

function runSchedule(ctx: CaseContext, spec: ScheduleSpec, config: DDPMWuerstchenSchedulerConfig, tensors: Record<string, tf.Tensor>, checks: Check[]): void {
  const p = spec.prefix;
  const tol = ctx.spec.tolerance ?? 0;
  const stored = ctx.io().get(`${p}timesteps`);
  if (!stored || !(stored.data instanceof Float32Array)) throw new Error(`${ctx.file('io.safetensors')}: no float32 tensor "${p}timesteps"`);
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
  if (!Array.isArray(schedules) || schedules.length === 0) throw new Error(`${ctx.file('case.json')}: no "schedules" list`);
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
