/**
 * DDPMWuerstchenScheduler (diffusers scheduling_ddpm_wuerstchen.py) and the seeded Generator (rng.ts): golden scheduler cases through
 * the harness, constants, determinism, resume, leaks and argument errors.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { loadSafetensors, writeSafetensors } from '@wuerstchen/core';
import { formatReport, runCase } from '../packages/golden/src';
import { parseSchedule } from '../packages/golden/src/runners/scheduler';
import { Generator } from '../packages/wuerstchen/src/rng';
import { DDPMWuerstchenScheduler, DEFAULT_STAGE_C_TIMESTEPS, linspaceF32 } from '../packages/wuerstchen/src/scheduler';
import { GOLDEN } from './helpers/shared';

const f32 = Math.fround;

beforeAll(async () => {
  await tf.setBackend('cpu');
});

/** Runs `fn` and checks it leaves no tensors behind except the one it returns. */
function noLeaks<T>(fn: () => T): T {
  const before = tf.memory().numTensors;
  const out = fn();
  expect(tf.memory().numTensors).toBe(before + (out instanceof tf.Tensor ? 1 : 0));
  return out;
}

describe('golden scheduler cases', () => {
  test.each(['scheduler_ddpm_wuerstchen', 'scheduler_ddpm_wuerstchen_scaler', 'scheduler_ddpm_wuerstchen_scaler2'])(
    '%s',
    async (name) => {
      const before = tf.memory().numTensors;
      const report = await runCase(GOLDEN, name);
      if (!report.passed) throw new Error(formatReport(report));
      expect(report.maxAbsErr).toBeLessThanOrEqual(report.tolerance!);
      expect(tf.memory().numTensors).toBe(before);
    },
  );
});

test('the scheduler runner fails on an altered step output and on foreign timesteps', async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'wuerstchen-sched-case-'));
  try {
    const dir = path.join(root, 'scheduler_ddpm_wuerstchen');
    fs.cpSync(path.join(GOLDEN, 'scheduler_ddpm_wuerstchen'), dir, { recursive: true });
    fs.chmodSync(dir, 0o755);
    const io = path.join(dir, 'io.safetensors');
    fs.chmodSync(io, 0o644);
    const tensors = loadSafetensors(io);
    const prev = tensors.get('s2_prev_sample')!;
    const p = (prev.data as Float32Array).slice();
    p[30] += 1e-3;
    tensors.set('s2_prev_sample', { ...prev, data: p });
    const ts = tensors.get('s1_timesteps')!;
    const bits = new Uint32Array((ts.data as Float32Array).slice().buffer);
    bits[5] += 4; // 4 ulp: still the same step for argmin, but not torch.linspace(1, 0, 61) any more
    tensors.set('s1_timesteps', { ...ts, data: new Float32Array(bits.buffer) });
    fs.rmSync(io);
    writeSafetensors(io, tensors, { format: 'golden-io' });
    const report = await runCase(root, 'scheduler_ddpm_wuerstchen');
    expect(report.passed).toBe(false);
    const text = report.problems.join('\n');
    expect(text).toMatch(/s2_prev_sample: max abs err 1\.000e-3/);
    expect(text).toMatch(/s2_ chain replayed on own outputs/);
    expect(text).toMatch(/s1_timesteps ≈ setTimesteps\(60\): max distance 4 float32 ulp/);
    expect(text).not.toMatch(/s0_|add_noise/);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

describe('the scheduler runner reads every schedule setTimesteps accepts', () => {
  test.each([
    ['num_inference_steps=60 (prior pipeline default)', { kind: 'count', steps: 60 }],
    ['12 steps', { kind: 'count', steps: 12 }],
    [
      'DEFAULT_STAGE_C_TIMESTEPS (timesteps=list(np.linspace(1.0, 2/3, 20)) + list(np.linspace(2/3, 0.0, 11))[1:])',
      { kind: 'default' },
    ],
    ['custom timesteps [1.0, 0.5, 0.0]', { kind: 'list', values: ['1.0', '0.5', '0.0'], truncated: false }],
    ['custom timesteps [1.0, 0.93, …]', { kind: 'list', values: ['1.0', '0.93'], truncated: true }],
    ['custom timesteps [1e0, .25, ...]', { kind: 'list', values: ['1e0', '.25'], truncated: true }],
    ['custom timesteps [a, b]', null],
    ['karras sigmas', null],
  ])('%s', (description, expected) => {
    expect(parseSchedule(description)).toEqual(expected);
  });

  /** Runs the DEFAULT_STAGE_C_TIMESTEPS case with its first chain described as `description`. */
  async function runWithDescription(description: string) {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'wuerstchen-sched-list-'));
    try {
      const dir = path.join(root, 'scheduler_ddpm_wuerstchen');
      fs.cpSync(path.join(GOLDEN, 'scheduler_ddpm_wuerstchen'), dir, { recursive: true });
      fs.chmodSync(dir, 0o755);
      const file = path.join(dir, 'case.json');
      const spec = JSON.parse(fs.readFileSync(file, 'utf8'));
      spec.schedules[0].schedule = description;
      fs.rmSync(file);
      fs.writeFileSync(file, JSON.stringify(spec));
      return await runCase(root, 'scheduler_ddpm_wuerstchen');
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  }

  test('an explicit list, whole or as a prefix, is checked against the stored timesteps', async () => {
    const whole = await runWithDescription(`custom timesteps [${DEFAULT_STAGE_C_TIMESTEPS.join(', ')}]`);
    if (!whole.passed) throw new Error(formatReport(whole));
    const prefix = await runWithDescription('custom timesteps [1.0, 0.98, 0.965, …]');
    if (!prefix.passed) throw new Error(formatReport(prefix));
    const wrong = await runWithDescription('custom timesteps [1.0, 0.93, …]');
    expect(wrong.passed).toBe(false);
    expect(wrong.problems.join('\n')).toMatch(
      /s0_timesteps = the 2 listed leading timesteps: differs at \[1\] 0\.98\d+ vs 0\.93/,
    );
    const short = await runWithDescription('custom timesteps [1.0, 0.5, 0.0]');
    expect(short.problems.join('\n')).toMatch(/s0_timesteps = listed timesteps: 3 listed, 30 stored/);
  });
});

describe('timesteps', () => {
  test('DEFAULT_STAGE_C_TIMESTEPS are the 30 float32 values of diffusers pipeline_wuerstchen_prior.py', () => {
    const spec = [
      1.0, 0.98245615, 0.9649123, 0.94736844, 0.9298246, 0.9122807, 0.8947368, 0.877193, 0.8596491, 0.84210527,
      0.8245614, 0.80701756, 0.7894737, 0.7719298, 0.75438595, 0.7368421, 0.71929824, 0.7017544, 0.68421054, 0.6666667,
      0.6, 0.53333336, 0.46666667, 0.4, 0.33333334, 0.26666668, 0.2, 0.13333334, 0.06666667, 0.0,
    ];
    expect(DEFAULT_STAGE_C_TIMESTEPS.length).toBe(30);
    expect([...DEFAULT_STAGE_C_TIMESTEPS]).toEqual(spec.map(f32));
    expect(Object.isFrozen(DEFAULT_STAGE_C_TIMESTEPS)).toBe(true);
    const s = new DDPMWuerstchenScheduler();
    expect(Array.from(s.setTimesteps({ timesteps: DEFAULT_STAGE_C_TIMESTEPS }))).toEqual([
      ...DEFAULT_STAGE_C_TIMESTEPS,
    ]);
    expect(s.numInferenceSteps).toBe(29);
  });

  test('setTimesteps(12) is linspace(1, 0, 13) as in the spec table', () => {
    const s = new DDPMWuerstchenScheduler();
    const ts = s.setTimesteps(12);
    const table = [
      1, 0.916666687, 0.833333313, 0.75, 0.666666627, 0.583333313, 0.5, 0.416666687, 0.333333343, 0.25, 0.166666672,
      0.0833333358, 0,
    ];
    expect(Array.from(ts)).toEqual(table.map(f32));
    expect(s.numInferenceSteps).toBe(12);
    // a copy: mutating it does not change the schedule
    ts[0] = 5;
    expect(s.timesteps[0]).toBe(1);
  });

  test('linspaceF32 uses the symmetric float32 formula', () => {
    const v = linspaceF32(1, 0, 61);
    const step = f32(-1 / 60);
    expect(v[0]).toBe(1);
    expect(v[60]).toBe(0);
    expect(v[29]).toBe(f32(1 + f32(step * 29)));
    expect(v[30]).toBe(f32(0 - f32(step * 30)));
    expect(Array.from(linspaceF32(1, 0, 1))).toEqual([1]);
  });

  test('previousTimestep picks the nearest timestep and broadcasts to the batch', () => {
    const s = new DDPMWuerstchenScheduler();
    s.setTimesteps(4); // 1, 0.75, 0.5, 0.25, 0
    const prev = noLeaks(() => {
      const t = tf.tensor1d([0.76, 0.76]);
      const p = s.previousTimestep(t);
      t.dispose();
      return p;
    });
    expect(prev.shape).toEqual([2]);
    expect(Array.from(prev.dataSync())).toEqual([0.5, 0.5]);
    prev.dispose();
    expect(s.previousTimestepValue(0.25)).toBe(0);
    expect(() => s.previousTimestepValue(0)).toThrow(/last timestep/);
  });
});

describe('alphaCumprod', () => {
  const table: [number, number][] = [
    [1, 1.0e-4],
    [0.916666687, 0.0167718325],
    [0.75, 0.144272074],
    [0.5, 0.493843645],
    [0.0833333358, 0.980031669],
    [0, 0.999899983],
  ];

  test('matches reference values of diffusers scheduling_ddpm_wuerstchen.py (float32)', () => {
    const s = new DDPMWuerstchenScheduler();
    expect(s.initAlphaCumprod).toBe(f32(0.99984455));
    const ac = noLeaks(() => {
      const t = tf.tensor1d(table.map(([t]) => t));
      const out = s.alphaCumprod(t);
      t.dispose();
      return out;
    });
    const got = ac.dataSync();
    table.forEach(([, want], i) => expect(Math.abs(got[i] - want)).toBeLessThanOrEqual(2e-7 * Math.max(1, want)));
    expect(got[0]).toBe(f32(1e-4));
    expect(got[5]).toBe(f32(0.9999));
    ac.dispose();
  });

  test('works on any shape and applies the scaler', () => {
    const t = tf.tensor2d([
      [0.3, 0.6],
      [0.9, 0.1],
    ]);
    for (const scaler of [0.5, 1, 2, 3]) {
      const s = new DDPMWuerstchenScheduler({ scaler });
      const ac = noLeaks(() => s.alphaCumprod(t));
      expect(ac.shape).toEqual([2, 2]);
      const warp = (x: number) => (scaler > 1 ? 1 - (1 - x) ** scaler : scaler < 1 ? x ** scaler : x);
      const ref = [0.3, 0.6, 0.9, 0.1].map((x) => {
        const v =
          Math.cos(((warp(x) + 0.008) / 1.008) * Math.PI * 0.5) ** 2 / Math.cos((0.008 / 1.008) * Math.PI * 0.5) ** 2;
        return Math.min(0.9999, Math.max(1e-4, v));
      });
      Array.from(ac.dataSync()).forEach((v, i) => expect(Math.abs(v - ref[i])).toBeLessThan(1e-6));
      ac.dispose();
    }
    t.dispose();
  });
});

describe('step', () => {
  const shape = [2, 3, 4, 5];

  test("with a generator equals the same step with that generator's noise injected; no leaks", () => {
    const s = new DDPMWuerstchenScheduler();
    s.setTimesteps(12);
    const g = new Generator(7);
    const sample = g.randn(shape);
    const eps = g.randn(shape);
    const t = tf.fill([2], s.timesteps[3]);
    const replay = g.clone();
    const a = noLeaks(() => s.step(eps, t, sample, { generator: g }).prevSample);
    const noise = replay.randn(shape);
    const b = noLeaks(() => s.step(eps, t, sample, { noise }).prevSample);
    expect(Array.from(a.dataSync())).toEqual(Array.from(b.dataSync()));
    expect(g.state()).toEqual(replay.state());
    // a number t gives the same result
    const c = noLeaks(() => s.step(eps, s.timesteps[3], sample, { noise }).prevSample);
    expect(Array.from(c.dataSync())).toEqual(Array.from(b.dataSync()));
    tf.dispose([sample, eps, t, noise, a, b, c]);
  });

  test('matches the spec formula, and the last step (t_prev = 0) adds no noise but still draws it', () => {
    const s = new DDPMWuerstchenScheduler();
    const ts = s.setTimesteps(12);
    const x = tf.fill(shape, 0.5);
    const eps = tf.fill(shape, 0.25);
    const z = tf.fill(shape, 1);
    // step 0 of the table: sqrt(1/α) = 12.9506111, (1−α)/sqrt(1−ᾱ) = 0.994087338, σ = 0.988667548
    const out0 = s.step(eps, tf.fill([2], ts[0]), x, { noise: z }).prevSample;
    const want0 = 12.9506111 * (0.5 - 0.994087338 * 0.25) + 0.988667548;
    Array.from(out0.dataSync()).forEach((v) => expect(Math.abs(v - want0)).toBeLessThan(1e-5));
    const tLast = tf.fill([2], ts[11]);
    const z2 = tf.fill(shape, -3);
    const l1 = s.step(eps, tLast, x, { noise: z }).prevSample;
    const l2 = s.step(eps, tLast, x, { noise: z2 }).prevSample;
    expect(Array.from(l1.dataSync())).toEqual(Array.from(l2.dataSync()));
    const wantLast = 1.0100857 * (0.5 - 0.140615478 * 0.25);
    Array.from(l1.dataSync()).forEach((v) => expect(Math.abs(v - wantLast)).toBeLessThan(1e-6));
    const g = new Generator(1);
    const before = g.state();
    s.step(eps, tLast, x, { generator: g }).prevSample.dispose();
    expect(g.state()).not.toEqual(before);
    tf.dispose([x, eps, z, z2, out0, tLast, l1, l2]);
  });

  test('is elementwise: NHWC and NCHW give the same numbers', () => {
    const s = new DDPMWuerstchenScheduler();
    s.setTimesteps(5);
    const g = new Generator(3);
    const x = g.randn(shape);
    const eps = g.randn(shape);
    const z = g.randn(shape);
    const t = tf.fill([2], s.timesteps[1]);
    const nchw = s.step(eps, t, x, { noise: z }).prevSample;
    const perm = [0, 2, 3, 1];
    const [xh, eh, zh] = [x, eps, z].map((v) => tf.transpose(v, perm));
    const nhwc = s.step(eh, t, xh, { noise: zh }).prevSample;
    const back = tf.transpose(nhwc, [0, 3, 1, 2]);
    expect(Array.from(back.dataSync())).toEqual(Array.from(nchw.dataSync()));
    tf.dispose([x, eps, z, t, nchw, xh, eh, zh, nhwc, back]);
  });

  test('addNoise = sqrt(ᾱ)·x0 + sqrt(1−ᾱ)·noise, per batch row', () => {
    const s = new DDPMWuerstchenScheduler();
    const x0 = tf.ones([2, 3]);
    const n = tf.fill([2, 3], 2);
    const t = tf.tensor1d([0, 1]);
    const out = noLeaks(() => s.addNoise(x0, n, t));
    const ac = [f32(0.9999), f32(1e-4)];
    const v = out.dataSync();
    for (let i = 0; i < 6; i++) {
      const a = ac[Math.floor(i / 3)];
      expect(Math.abs(v[i] - (Math.sqrt(a) + 2 * Math.sqrt(1 - a)))).toBeLessThan(1e-6);
    }
    tf.dispose([x0, n, t, out]);
  });

  test('bad arguments give clear errors', () => {
    const s = new DDPMWuerstchenScheduler();
    const x = tf.zeros([2, 3]);
    const t = tf.fill([2], 1);
    expect(() => s.step(x, t, x)).toThrow(/setTimesteps/);
    expect(() => s.setTimesteps(0)).toThrow(/positive integer/);
    expect(() => s.setTimesteps(2.5)).toThrow(/positive integer/);
    expect(() => s.setTimesteps({ timesteps: [1] })).toThrow(/at least 2/);
    expect(() => s.setTimesteps({ timesteps: [1, NaN] })).toThrow(/finite/);
    expect(() => s.setTimesteps('3' as unknown as number)).toThrow(/expected a number of steps/);
    s.setTimesteps(3);
    const wrong = tf.zeros([2, 4]);
    const ints = tf.zeros([2, 3], 'int32');
    const t3 = tf.fill([3], 1);
    const t2d = tf.fill([2, 1], 1);
    expect(() => s.step(wrong, t, x)).toThrow(/same shape/);
    expect(() => s.step(ints, t, x)).toThrow(/modelOutput must be float32/);
    expect(() => s.step(x, t3, x)).toThrow(/length 1 or the batch size 2/);
    expect(() => s.step(x, t2d, x)).toThrow(/1-D/);
    expect(() => s.step(x, t, x, { noise: wrong })).toThrow(/noise .* must have the shape of sample/);
    expect(() => s.step(x, 0, x)).toThrow(/last timestep/);
    expect(() => s.addNoise(x, wrong, t)).toThrow(/shape of original/);
    expect(() => s.alphaCumprod(ints)).toThrow(/float32/);
    expect(() => new DDPMWuerstchenScheduler({ scaler: 0 })).toThrow(/scaler must be a finite number > 0/);
    expect(() => new DDPMWuerstchenScheduler({ s: -1 })).toThrow(/s must be/);
    tf.dispose([x, t, wrong, ints, t3, t2d]);
  });
});

describe('config', () => {
  test('fromPretrained reads scheduler_config.json of the hub folders', () => {
    for (const repo of ['wuerstchen-prior', 'wuerstchen']) {
      const dir = path.join(GOLDEN, 'hub', repo, 'scheduler');
      const s = DDPMWuerstchenScheduler.fromPretrained(dir);
      expect(s.config).toEqual({ s: 0.008, scaler: 1.0 });
      expect(s.initNoiseSigma).toBe(1);
      expect(DDPMWuerstchenScheduler.fromPretrained(path.join(GOLDEN, 'hub', repo)).config).toEqual(s.config);
    }
  });

  test('rejects a wrong _class_name naming the file; round-trips saveConfig', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wuerstchen-sched-'));
    try {
      const file = path.join(dir, 'scheduler_config.json');
      fs.writeFileSync(file, JSON.stringify({ _class_name: 'DDPMScheduler', beta_start: 0.0001 }));
      expect(() => DDPMWuerstchenScheduler.fromPretrained(dir)).toThrow(
        new RegExp(
          `${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}.*_class_name is "DDPMScheduler", expected "DDPMWuerstchenScheduler"`,
        ),
      );
      fs.writeFileSync(file, '{not json');
      expect(() => DDPMWuerstchenScheduler.fromPretrained(dir)).toThrow(/not valid JSON/);
      fs.writeFileSync(file, JSON.stringify({ _class_name: 'DDPMWuerstchenScheduler', s: 'x' }));
      expect(() => DDPMWuerstchenScheduler.fromPretrained(dir)).toThrow(/s must be a finite number/);
      new DDPMWuerstchenScheduler({ scaler: 2 }).saveConfig(dir);
      expect(DDPMWuerstchenScheduler.fromPretrained(dir).config).toEqual({ s: 0.008, scaler: 2 });
      expect(() => DDPMWuerstchenScheduler.fromPretrained(path.join(dir, 'nope'))).toThrow(
        /no scheduler_config.json found/,
      );
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    expect(DDPMWuerstchenScheduler.fromConfig({ _diffusers_version: '0.21.0', s: 0.01 }).config).toEqual({
      s: 0.01,
      scaler: 1,
    });
  });
});

describe('Generator', () => {
  test('is xoshiro128** seeded by SplitMix64 (reference C outputs for seed 42)', () => {
    const g = new Generator(42);
    expect(g.state().s).toEqual([803958421, 3184996902, 2993090819, 686809907]);
    expect(Array.from({ length: 6 }, () => g.nextUint32())).toEqual([
      1776835114, 4165204688, 17111135, 2317295270, 2792088233, 2554630222,
    ]);
    expect(new Generator(42n).state()).toEqual(new Generator(42).state());
  });

  test('same seed → same numbers; different seeds differ; float32 output on the JS side', () => {
    const a = new Generator(123).randn([3, 5]);
    const b = new Generator(123).randn([3, 5]);
    const c = new Generator(124).randn([3, 5]);
    expect(a.dtype).toBe('float32');
    expect(a.shape).toEqual([3, 5]);
    expect(Array.from(a.dataSync())).toEqual(Array.from(b.dataSync()));
    expect(Array.from(a.dataSync())).not.toEqual(Array.from(c.dataSync()));
    expect(Array.from(new Generator(123).randnArray(15))).toEqual(Array.from(a.dataSync()));
    tf.dispose([a, b, c]);
  });

  test('state()/setState() resume exactly, also after odd counts', () => {
    const g = new Generator(9);
    g.randnArray(7);
    const st = JSON.parse(JSON.stringify(g.state()));
    const next = [g.randnArray(11), g.randArray(3), g.randnArray(4)];
    const h = new Generator(0).setState(st);
    expect([h.randnArray(11), h.randArray(3), h.randnArray(4)]).toEqual(next);
    expect(Generator.fromState(st).randnArray(11)).toEqual(next[0]);
    // the count alone determines the advance: 7 normals take 8 outputs
    const k = new Generator(9);
    for (let i = 0; i < 8; i++) k.nextUint32();
    expect(k.state()).toEqual(st);
  });

  test('normal and uniform statistics are sane', () => {
    const z = new Generator(2024).randnArray(200000);
    let m = 0;
    let v = 0;
    for (const x of z) m += x;
    m /= z.length;
    for (const x of z) v += (x - m) ** 2;
    v /= z.length;
    expect(Math.abs(m)).toBeLessThan(0.01);
    expect(Math.abs(v - 1)).toBeLessThan(0.02);
    const u = new Generator(5).randArray(100000);
    expect(Math.min(...u)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...u)).toBeLessThan(1);
    expect(Math.abs(u.reduce((a, x) => a + x, 0) / u.length - 0.5)).toBeLessThan(0.01);
  });

  test('bad arguments give clear errors', () => {
    expect(() => new Generator(1.5)).toThrow(/seed must be a safe integer or a bigint/);
    expect(() => new Generator(0).setState({ algorithm: 'mt19937' } as never)).toThrow(/xoshiro128/);
    expect(() => new Generator(0).setState({ algorithm: 'xoshiro128**', s: [0, 0, 0, 0] })).toThrow(/all-zero/);
    expect(() => new Generator(0).setState({ algorithm: 'xoshiro128**', s: [1, 2, 3] as never })).toThrow(
      /four unsigned 32-bit integers/,
    );
    expect(() => new Generator(0).randn([2, -1])).toThrow(/non-negative integers/);
  });
});
