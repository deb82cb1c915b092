/** Objectives, AdamW, clipping, EMA, seeded dropout, checkpoints and the schedule configs of @wuerstchen/train. */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { Dropout, Linear, Module, Sequential } from '@wuerstchen/core';
import { Generator } from 'wuerstchen';
import { loadConfig, parseConfig, readLatest } from '@wuerstchen/train';
import {
  AdamW,
  EMA,
  SeededStochasticLayers,
  alphaCumprod,
  bucketSize,
  clipGrads,
  configJson,
  globalNorm,
  oneCycleLR,
  p2Weight,
  phaseAt,
  prune,
  sampleT,
  totalSteps,
  warmupLR,
  writeCheckpoint,
  writeFileSynced,
} from '@wuerstchen/train/internal';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'train-core-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
beforeAll(async () => {
  await tf.setBackend('cpu');
});
const CONFIGS = path.resolve(__dirname, '../configs');

describe('diffusion objective', () => {
  test('cosine ᾱ(t) and p2 weights match a table computed with dome272/Wuerstchen diffuzz.py', () => {
    const table: [number, number, number][] = [
      [0.001, 0.9999, 1e-4],
      [0.1, 0.97209, 0.0279],
      [0.25, 0.84701, 0.153],
      [0.5, 0.49384, 0.5062],
      [0.75, 0.14427, 0.8557],
      [0.9, 0.02409, 0.9759],
      [1.0, 1e-4, 0.9999],
    ];
    for (const [t, a, w] of table) {
      expect(alphaCumprod(t)).toBeCloseTo(a, 4);
      expect(p2Weight(alphaCumprod(t))).toBeCloseTo(w, 3);
      expect(p2Weight(alphaCumprod(t))).toBeCloseTo(1 - alphaCumprod(t), 10);
    }
  });

  test("the authors' t sampler oversamples t = 1 (7.5%)", () => {
    const t = sampleT(20000, new Generator(1), 'dome');
    expect(Math.min(...t)).toBeGreaterThanOrEqual(0.001);
    expect(Math.max(...t)).toBe(1);
    const ones = t.filter((x) => x === 1).length / t.length;
    expect(ones).toBeGreaterThan(0.065);
    expect(ones).toBeLessThan(0.085);
  });
});

describe('optimisation', () => {
  test('AdamW follows torch.optim.AdamW', () => {
    const lin = new Linear(2, 1, false);
    lin.weight.load({ dtype: 'F32', shape: [1, 2], data: Float32Array.from([0.5, -1]) });
    const params = lin.trainableParameters();
    const opt = new AdamW(params, { lr: 0.1, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0.01 });
    let w = [0.5, -1];
    const m = [0, 0];
    const v = [0, 0];
    const gs = [
      [0.2, -0.4],
      [0.1, 0.3],
      [-0.5, 0.05],
    ];
    gs.forEach((g, k) => {
      const grads = new Map([['weight', tf.tensor2d(g, [2, 1])]]);
      opt.apply(grads, 0.1);
      grads.get('weight')!.dispose();
      const step = k + 1;
      for (let i = 0; i < 2; i++) {
        w[i] *= 1 - 0.1 * 0.01;
        m[i] = 0.9 * m[i] + 0.1 * g[i];
        v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i];
        const denom = Math.sqrt(v[i]) / Math.sqrt(1 - 0.999 ** step) + 1e-8;
        w[i] -= (0.1 / (1 - 0.9 ** step)) * (m[i] / denom);
      }
    });
    const got = Array.from(lin.weight.value.dataSync());
    got.forEach((x, i) => expect(x).toBeCloseTo(w[i], 5));
    w = [];
    // the moments survive a save / load exactly
    const saved = opt.stateTensors('p.');
    const opt2 = new AdamW(params, { lr: 0.1, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0.01 });
    opt2.loadStateTensors({ get: (k) => saved.get(k)! }, opt.step, 'p.');
    expect(Array.from(opt2.stateTensors('p.').get('p.exp_avg_sq.weight')!.data as Float32Array)).toEqual(
      Array.from(saved.get('p.exp_avg_sq.weight')!.data as Float32Array),
    );
    opt.dispose();
    opt2.dispose();
    lin.dispose();
  });

  test('warm-up, OneCycle, global-norm clipping', () => {
    expect(warmupLR(1e-4, 10000, 0)).toBe(0);
    expect(warmupLR(1e-4, 10000, 5000)).toBeCloseTo(5e-5, 12);
    expect(warmupLR(1e-4, 10000, 20000)).toBe(1e-4);
    expect(oneCycleLR(3e-4, 1000, 0, 0.1, 25, 1 / 25)).toBeCloseTo(3e-4 / 25, 12);
    expect(oneCycleLR(3e-4, 1000, 99, 0.1, 25, 1 / 25)).toBeCloseTo(3e-4, 12);
    const grads = new Map([
      ['a', tf.tensor1d([3, 0])],
      ['b', tf.tensor1d([0, 4])],
    ]);
    const n = globalNorm(grads);
    expect(n).toBeCloseTo(5, 6);
    clipGrads(grads, n, 1.0);
    expect(globalNorm(grads)).toBeCloseTo(1, 4);
    const small = new Map([['a', tf.tensor1d([0.3])]]);
    expect(clipGrads(small, 0.3, 1.0)).toBe(1);
    tf.dispose([...grads.values(), ...small.values()]);
    const nan = new Map([['a', tf.tensor1d([NaN])]]);
    expect(Number.isFinite(globalNorm(nan))).toBe(false);
    tf.dispose([...nan.values()]);
  });

  test('EMA: copy before start, then β·ema + (1−β)·θ', () => {
    const lin = new Linear(1, 1, false);
    lin.weight.load({ dtype: 'F32', shape: [1, 1], data: Float32Array.from([1]) });
    const ema = new EMA(lin.trainableParameters());
    lin.weight.value.assign(tf.tensor2d([[3]]));
    ema.update(0.9, true);
    expect(ema.shadow.get('weight')!.dataSync()[0]).toBe(3);
    lin.weight.value.assign(tf.tensor2d([[13]]));
    ema.update(0.9, false);
    expect(ema.shadow.get('weight')!.dataSync()[0]).toBeCloseTo(4, 5);
    ema.dispose();
    lin.dispose();
  });

  test('seeded dropout is reproducible (tf.dropout alone is not)', () => {
    class Net extends Module {
      readonly seq = this.child('seq', new Sequential([new Linear(4, 64), new Dropout(0.5)]));
    }
    const net = new Net().train();
    const seeded = new SeededStochasticLayers(net);
    expect(seeded.count).toBe(1);
    const x = tf.ones([2, 4]);
    const run = (seed: number) => {
      seeded.reseed(seed);
      return Array.from(net.seq.forward(x).dataSync());
    };
    expect(run(7)).toEqual(run(7));
    expect(run(7)).not.toEqual(run(8));
    x.dispose();
    net.dispose();
  });
});

describe('checkpoints', () => {
  test('config.json is written like save_pretrained (sorted keys, indent 2)', () => {
    expect(configJson('WuerstchenPrior', { depth: 2, c: 8, c_in: 16 })).toBe(
      '{\n  "_class_name": "WuerstchenPrior",\n  "_diffusers_version": "0.21.0.dev0",\n  "c": 8,\n  "c_in": 16,\n  "depth": 2\n}\n',
    );
  });

  test('latest switches only after a complete write; interrupted writes are cleaned up', () => {
    const out = path.join(tmp, 'run');
    const a = writeCheckpoint(out, 2, (d) => writeFileSynced(path.join(d, 'x.txt'), 'two'), 2);
    expect(readLatest(out)).toBe(a);
    // a write that dies half way leaves latest untouched
    expect(() =>
      writeCheckpoint(out, 4, (d) => {
        writeFileSynced(path.join(d, 'x.txt'), 'partial');
        throw new Error('killed');
      }),
    ).toThrow('killed');
    expect(readLatest(out)).toBe(a);
    expect(fs.readFileSync(path.join(readLatest(out)!, 'x.txt'), 'utf8')).toBe('two');
    // leftovers of a killed process (dead pid) are removed by the next prune
    const stale = path.join(out, 'checkpoints', '.tmp-step-00000006-999999');
    fs.mkdirSync(stale);
    prune(out, 2);
    expect(fs.existsSync(stale)).toBe(false);
    writeCheckpoint(out, 4, (d) => writeFileSynced(path.join(d, 'x.txt'), 'four'), 2);
    writeCheckpoint(out, 6, (d) => writeFileSynced(path.join(d, 'x.txt'), 'six'), 2);
    expect(fs.readdirSync(path.join(out, 'checkpoints')).filter((f) => f.startsWith('step-'))).toEqual([
      'step-00000004',
      'step-00000006',
    ]);
    expect(fs.readFileSync(path.join(out, 'latest'), 'utf8')).toBe('checkpoints/step-00000006\n');
  });
});

describe('schedule configs', () => {
  test('every committed config parses; a misspelt key is an error naming the nearest field', () => {
    for (const f of fs.readdirSync(CONFIGS).filter((n) => n.endsWith('.json') && !n.includes('text-encoder'))) {
      expect(() => loadConfig(path.join(CONFIGS, f))).not.toThrow();
    }
    const base = { stage: 'a', phases: [{ steps: 1, batch_size: 1, image_size: 8 }] };
    expect(() => parseConfig({ ...base, checkpoint_evry: 5 }, 'x.json')).toThrow(
      /x\.json: unknown key "checkpoint_evry"; did you mean "checkpoint_every"\?/,
    );
    expect(() => parseConfig({ ...base, phases: [{ ...base.phases[0], batch_sise: 4 }] }, 'x.json')).toThrow(
      /unknown key "phases\[0\]\.batch_sise"; did you mean "batch_size"\?/,
    );
    expect(() => parseConfig({ ...base, objective: { weighting: 'x0', zzz: 1 } }, 'x.json')).toThrow(
      /unknown key "objective\.zzz" \(known: /,
    );
    expect(() => parseConfig({ ...base, _comment: 'notes are fine' }, 'x.json')).not.toThrow();
  });

  test("the compressor heads' losses and the compressor-only phase are checked", () => {
    const b = {
      stage: 'b',
      text_encoder: 't',
      tokenizer: 'k',
      phases: [{ steps: 1, batch_size: 1, image_size: 8, effnet_size: 8, compressor_only: true }],
    };
    expect(() => parseConfig(b, 'b.json')).toThrow(
      /b\.json: phase phase-1: "compressor_only" trains on the compressor's head losses; set objective\.effnet_words or effnet_patches > 0/,
    );
    expect(() => parseConfig({ ...b, objective: { effnet_words: 0.1 } }, 'b.json')).not.toThrow();
    expect(() => parseConfig({ ...b, objective: { effnet_patches: 1 } }, 'b.json')).not.toThrow();
    expect(() => parseConfig({ ...b, objective: { effnet_patches: 'much' } }, 'b.json')).toThrow(
      /objective\.effnet_patches must be a weight ≥ 0, got "much"/,
    );
    expect(() =>
      parseConfig(
        { ...b, objective: { effnet_words: 0.1 }, phases: [{ ...b.phases[0], freeze_effnet: true }] },
        'b.json',
      ),
    ).toThrow(/"compressor_only" trains the compressor; it cannot also freeze it/);
    expect(() =>
      parseConfig(
        {
          ...b,
          objective: { effnet_words: 0.1 },
          phases: [
            { ...b.phases[0], name: 'decoder', compressor_only: false },
            { ...b.phases[0], name: 'late' },
          ],
        },
        'b.json',
      ),
    ).toThrow(/phase late: "compressor_only" phases pretrain the compressor; they come before the decoder's phases/);
    expect(() => parseConfig({ ...b, objective: { effnet_words: -1 } }, 'b.json')).toThrow(
      /objective\.effnet_words must be a weight ≥ 0, got -1/,
    );
    expect(() => parseConfig({ ...b, objective: { effnet_words: 0.1, effnet_words_buckets: 2.5 } }, 'b.json')).toThrow(
      /objective\.effnet_words_buckets must be a positive integer, got 2\.5/,
    );
    expect(() =>
      parseConfig(
        { stage: 'c', text_encoder: 't', tokenizer: 'k', objective: { effnet_words: 0.1 }, phases: b.phases },
        'c.json',
      ),
    ).toThrow(/"compressor_only" is a Stage B phase option/);
  });

  test('the paper schedules', () => {
    const c = loadConfig(path.join(CONFIGS, 'stage-c.json'), 'c');
    expect(c.phases.map((p) => p.steps)).toEqual([500000, 364000, 4000, 50000]);
    expect(totalSteps(c)).toBe(918000);
    expect(c.phases.map((p) => p.effnet_size)).toEqual([384, 768, 768, 768]);
    expect(c.phases[3].batch_size).toBe(384);
    expect(c.phases[2].aspect_ratios!.length).toBeGreaterThan(3);
    expect(c.optimizer).toEqual({
      lr: 1e-4,
      betas: [0.9, 0.999],
      eps: 1e-8,
      weight_decay: 0.01,
      warmup: 10000,
      grad_clip: 1.0,
    });
    expect(c.ema).toEqual({ every: 100, start: 5000, beta: 0.9 });
    const b = loadConfig(path.join(CONFIGS, 'stage-b.json'), 'b');
    expect(b.phases.map((p) => [p.steps, p.image_size, p.batch_size, p.effnet_size])).toEqual([
      [457000, 512, 512, 384],
      [300000, 1024, 128, 768],
    ]);
    expect(b.optimizer.betas).toEqual([0.9, 0.95]);
    expect(b.ema).toBeNull();
    const a = loadConfig(path.join(CONFIGS, 'stage-a.json'), 'a');
    expect(a.objective.commitment).toBe(0.25);
    expect(phaseAt(c, 500000).phase.name).toBe('C2-24x24');
    expect(phaseAt(c, 499999).phase.name).toBe('C1-12x12');
  });

  test('tiny configs have the same phase shape', () => {
    for (const s of ['a', 'b', 'c'] as const) {
      const full = loadConfig(path.join(CONFIGS, `stage-${s}.json`), s);
      const tiny = loadConfig(path.join(CONFIGS, `stage-${s}-tiny.json`), s);
      expect(tiny.phases.length).toBe(full.phases.length);
      expect(totalSteps(tiny)).toBeLessThanOrEqual(32);
      if (s !== 'a')
        expect(tiny.phases[1].effnet_size! / tiny.phases[0].effnet_size!).toBe(
          full.phases[1].effnet_size! / full.phases[0].effnet_size!,
        );
    }
    expect(() => loadConfig(path.join(CONFIGS, 'stage-c-tiny.json'), 'b')).toThrow(/stage-c configuration/);
  });

  test('aspect-ratio buckets keep the area and the multiple', () => {
    expect(bucketSize(1, 768 * 768, 32)).toEqual([768, 768]);
    const [w, h] = bucketSize(9 / 16, 768 * 768, 32);
    expect(w % 32).toBe(0);
    expect(h % 32).toBe(0);
    expect(h).toBeGreaterThan(w);
    expect((w * h) / (768 * 768)).toBeGreaterThan(0.9);
  });
});
