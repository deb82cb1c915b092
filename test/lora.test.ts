/**
 * LoRA (issue 12, part 1): adapters give W + (alpha/r)·B·A exactly on Linear, 1×1 conv and
 * attention; merging equals the unmerged forward and unmerging restores W bit for bit; files use
 * diffusers' keys (`prior.<path>.lora_A.weight`, metadata `lora_adapter_metadata`) and round-trip;
 * the pipelines load, scale, fuse and unfuse them (also across offloading); `wuerstchen-train lora`
 * trains only the adapters on the bundled tiny prior and the loss falls; no tensor leaks.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {
  Attention,
  Conv2d,
  DEFAULT_LORA_TARGETS,
  HostTensor,
  Linear,
  LoraAdapter,
  LoraError,
  LoraNetwork,
  Parameter,
  openSafetensors,
  useBackend,
  writeSafetensors,
} from '@wuerstchen/core';
import {
  Generator,
  TINY_MODEL_DIR,
  WuerstchenPrior,
  WuerstchenPriorPipeline,
  WuerstchenDecoderPipeline,
  loadLoraFile,
  readLoraFile,
  saveLoraFile,
} from 'wuerstchen';
import {
  COLOURS,
  EXTRA_PALETTE,
  LORA_ADAPTER_METADATA_KEY,
  judgeImage,
  loraComponents,
  parseLoraSpec,
  pipelineFolders,
  randomScene,
  renderScene,
} from 'wuerstchen/internal';
import { DecoderLoraTrainer, PriorLoraTrainer, StepMetrics, loraTrainConfig, makeShapes } from '@wuerstchen/train';
import { parseGenerateArgs } from '../packages/wuerstchen/src/cli';
import { parseLoraArgs } from '../packages/train/src/lora_cli';
import { useTempDir } from './helpers/tmp';

const tmp = useTempDir('lora-');
/** A private copy of the bundled model: these tests load it more than once, and it may be re-exported meanwhile. */
function tinyModel(): string {
  const dir = path.join(tmp(), 'wuerstchen-tiny');
  fs.cpSync(TINY_MODEL_DIR, dir, { recursive: true });
  return dir;
}

beforeAll(async () => {
  await tf.setBackend('cpu');
});

/** The bundled model's pipelines and training run on the native backend when it is built (tfjs-cpu takes minutes here). */
function onFastestBackend(): void {
  beforeAll(() => useBackend('auto', { quiet: true }));
  afterAll(() => tf.setBackend('cpu'));
}

/** float64 copy of a tensor. */
const f64 = (t: tf.Tensor) => Float64Array.from(t.dataSync());

function randomize(params: [string, Parameter][], seed: number, std = 0.5): void {
  params.forEach(([, p], i) => {
    const t = tf.randomNormal(p.shape, 0, std, 'float32', seed + i);
    p.assign(t);
    t.dispose();
  });
}

/** torch-layout `W + s·B·A` in float64 (W [out, in], A [r, in], B [out, r]). */
function mergedReference(w: HostTensor, a: HostTensor, b: HostTensor, s: number): Float32Array {
  const [out, inn] = [w.shape[0], w.shape[1]];
  const r = a.shape[0];
  const res = new Float32Array(out * inn);
  for (let o = 0; o < out; o++) {
    for (let i = 0; i < inn; i++) {
      let d = 0;
      for (let k = 0; k < r; k++) d += Number(b.data[o * r + k]) * Number(a.data[k * inn + i]);
      res[o * inn + i] = Number(w.data[o * inn + i]) + s * d;
    }
  }
  return res;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

const tinyPriorConfig = { c_in: 4, c: 16, c_cond: 8, c_r: 8, depth: 1, nhead: 2, dropout: 0 };

describe('adapters', () => {
  test('Linear with an adapter computes x·(W + (alpha/r)·B·A)ᵀ + b', () => {
    const lin = new Linear(6, 5);
    const ad = new LoraAdapter(6, 5, 3, 6);
    randomize(ad.namedParameters(), 1);
    ad.attach(lin);
    const x = tf.randomNormal([4, 6], 0, 1, 'float32', 9);
    const y = lin.forward(x);
    const ref = new Linear(6, 5);
    const w = lin.weight.toHost();
    ref.weight.load({
      dtype: 'F32',
      shape: [5, 6],
      data: mergedReference(w, ad.A.weight.toHost(), ad.B.weight.toHost(), 2),
    });
    ref.bias!.load(lin.bias!.toHost());
    const yRef = ref.forward(x);
    expect(maxAbsDiff(f64(y), f64(yRef))).toBeLessThan(1e-5);
    expect(ad.scale).toBe(2);
    tf.dispose([x, y, yRef]);
    [lin, ad, ref].forEach((m) => m.dispose());
  });

  test('a 1×1 conv adapter keeps peft 4-D shapes and the same algebra', () => {
    const conv = new Conv2d(4, 3, 1);
    const ad = new LoraAdapter(4, 3, 2, 1, true);
    expect(ad.A.weight.torchShape).toEqual([2, 4, 1, 1]);
    expect(ad.B.weight.torchShape).toEqual([3, 2, 1, 1]);
    randomize(ad.namedParameters(), 2);
    ad.attach(conv);
    const x = tf.randomNormal([2, 3, 3, 4], 0, 1, 'float32', 3);
    const y = conv.forward(x);
    const flat = (h: HostTensor): HostTensor => ({ ...h, shape: h.shape.slice(0, 2) });
    const merged = mergedReference(
      flat(conv.weight.toHost()),
      flat(ad.A.weight.toHost()),
      flat(ad.B.weight.toHost()),
      0.5,
    );
    const ref = new Conv2d(4, 3, 1);
    ref.weight.load({ dtype: 'F32', shape: [3, 4, 1, 1], data: merged });
    ref.bias!.load(conv.bias!.toHost());
    const yRef = ref.forward(x);
    expect(maxAbsDiff(f64(y), f64(yRef))).toBeLessThan(1e-5);
    expect(() => new LoraAdapter(4, 3, 2, 1, false).attach(conv)).toThrow(LoraError);
    expect(() => ad.attach(new Conv2d(4, 4, 3, { padding: 1 }) as Conv2d)).toThrow(/1×1/);
    tf.dispose([x, y, yRef]);
    [conv, ad, ref].forEach((m) => m.dispose());
  });

  test('attention with adapters on to_q, to_k, to_v, to_out.0 equals attention with merged weights', () => {
    const attn = new Attention(8, { heads: 2, dimHead: 4 });
    const net = LoraNetwork.inject(attn, { rank: 2, alpha: 4, seed: 5 });
    expect(net.paths).toEqual(['to_q', 'to_k', 'to_v', 'to_out.0']);
    const x = tf.randomNormal([2, 5, 8], 0, 1, 'float32', 6);
    const ctx = tf.randomNormal([2, 7, 8], 0, 1, 'float32', 7);
    const base = attn.forward(x, ctx);
    const untouched = attn.forward(x, ctx);
    // B starts at zero: a new adapter changes nothing
    expect(f64(untouched)).toEqual(f64(base));
    randomize(net.parameters(), 11);
    const y = attn.forward(x, ctx);
    const ref = new Attention(8, { heads: 2, dimHead: 4 });
    const sd = attn.stateDict();
    for (const [p, ad] of net.adapters) {
      const w = sd.get(`${p}.weight`)!;
      sd.set(`${p}.weight`, {
        dtype: 'F32',
        shape: w.shape,
        data: mergedReference(w, ad.A.weight.toHost(), ad.B.weight.toHost(), 2),
      });
    }
    ref.loadStateDict(sd);
    const yRef = ref.forward(x, ctx);
    expect(maxAbsDiff(f64(y), f64(yRef))).toBeLessThan(1e-5);
    expect(maxAbsDiff(f64(y), f64(base))).toBeGreaterThan(1e-2);
    tf.dispose([x, ctx, base, untouched, y, yRef]);
    net.dispose();
    attn.dispose();
    ref.dispose();
  });

  test('merged equals unmerged; unmerging restores W bit for bit; merges unwind in reverse order; no leaks', () => {
    const prior = new WuerstchenPrior(tinyPriorConfig);
    const x = tf.randomNormal([2, 3, 3, 4], 0, 1, 'float32', 1);
    const r = tf.tensor1d([0.3, 0.7]);
    const c = tf.randomNormal([2, 5, 8], 0, 1, 'float32', 2);
    const before = prior.stateDict();
    const y0 = prior.forward(x, r, c);
    const n1 = LoraNetwork.inject(prior, { rank: 2, seed: 1 });
    const n2 = LoraNetwork.inject(prior, {
      rank: 3,
      alpha: 6,
      targets: ['to_q', 'kv_mapper.1', 'projection'],
      seed: 2,
    });
    randomize([...n1.parameters(), ...n2.parameters()], 3, 0.3);
    n2.multiplier = 0.5;
    const tensors = tf.memory().numTensors;
    // compared before the output's division by |1 − b|, which amplifies rounding arbitrarily
    const blocksOut = () => {
      let h: Float64Array | null = null;
      tf.dispose(prior.forward(x, r, c, (name, t) => (name === 'blocks_out' ? (h = f64(t)) : undefined)));
      return h!;
    };
    const unmerged = prior.forward(x, r, c);
    const unmergedBlocks = blocksOut();
    n1.merge();
    n2.merge();
    const q = prior.namedModules().find(([p]) => p === 'blocks.2.attention.to_q')![1] as Linear;
    expect(q.deltas).toHaveLength(0);
    const merged = prior.forward(x, r, c);
    const magnitude = Math.max(1, ...Array.from(unmergedBlocks, Math.abs));
    expect(maxAbsDiff(blocksOut(), unmergedBlocks)).toBeLessThan(1e-5 * magnitude);
    expect(maxAbsDiff(f64(unmerged), f64(y0))).toBeGreaterThan(1e-3);
    expect(() => (n2.multiplier = 1)).toThrow(/unmerge it first/);
    expect(() => n1.unmerge()).toThrow(/unmerge that first/);
    n2.unmerge();
    n1.unmerge();
    expect(q.deltas).toHaveLength(2);
    const again = prior.forward(x, r, c);
    expect(f64(again)).toEqual(f64(unmerged));
    n1.detach();
    n2.detach();
    for (const [k, t] of prior.stateDict()) expect(t.data).toEqual(before.get(k)!.data);
    const plain = prior.forward(x, r, c);
    expect(f64(plain)).toEqual(f64(y0));
    tf.dispose([unmerged, merged, again, plain]);
    expect(tf.memory().numTensors).toBe(tensors);
    n1.dispose();
    n2.dispose();
    tf.dispose([x, r, c, y0]);
    prior.dispose();
  });

  test('injection errors name the problem', () => {
    const prior = new WuerstchenPrior(tinyPriorConfig);
    expect(() => LoraNetwork.inject(prior, { rank: 2, targets: ['to_x'] })).toThrow(/targets not found.*to_x/);
    expect(() => LoraNetwork.inject(prior, { rank: 2, targets: ['depthwise'] })).toThrow(/Conv2d 3×3/);
    expect(() => LoraNetwork.inject(prior, { rank: 2, targets: ['attention'] })).toThrow(
      /Attention: LoRA adapts Linear/,
    );
    expect(() => LoraNetwork.inject(prior, { rank: 0 })).toThrow(/positive integer/);
    expect(DEFAULT_LORA_TARGETS).toEqual(['to_q', 'to_k', 'to_v', 'to_out.0']);
    prior.dispose();
  });
});

describe('files in diffusers’ convention', () => {
  test('save → read: prior.<path>.lora_A/B.weight keys, alpha in lora_adapter_metadata, same outputs', () => {
    const prior = new WuerstchenPrior(tinyPriorConfig);
    const net = LoraNetwork.inject(prior, {
      rank: 2,
      alpha: 4,
      targets: [...DEFAULT_LORA_TARGETS, 'kv_mapper.1', 'out.1'],
      seed: 4,
    });
    randomize(net.parameters(), 5);
    const file = path.join(tmp(), 'pytorch_lora_weights.safetensors');
    saveLoraFile(file, net, 'prior');
    const reader = openSafetensors(file);
    const keys = reader.keys();
    const meta = reader.metadata;
    const shapes = Object.fromEntries(keys.map((k) => [k, reader.info(k).shape]));
    const dtypes = new Set(keys.map((k) => reader.info(k).dtype));
    reader.close();
    const paths = [
      'blocks.2.attention.to_k',
      'blocks.2.attention.to_out.0',
      'blocks.2.attention.to_q',
      'blocks.2.attention.to_v',
      'blocks.2.kv_mapper.1',
      'out.1',
    ];
    expect(keys).toEqual(paths.flatMap((p) => [`prior.${p}.lora_A.weight`, `prior.${p}.lora_B.weight`]));
    expect(shapes['prior.blocks.2.attention.to_q.lora_A.weight']).toEqual([2, 16]);
    expect(shapes['prior.blocks.2.attention.to_q.lora_B.weight']).toEqual([16, 2]);
    expect(shapes['prior.blocks.2.kv_mapper.1.lora_A.weight']).toEqual([2, 16]);
    expect(shapes['prior.out.1.lora_A.weight']).toEqual([2, 16, 1, 1]);
    expect(shapes['prior.out.1.lora_B.weight']).toEqual([8, 2, 1, 1]);
    expect([...dtypes]).toEqual(['F32']);
    expect(meta.format).toBe('pt');
    expect(JSON.parse(meta[LORA_ADAPTER_METADATA_KEY])).toEqual({
      'prior.lora_alpha': 4,
      'prior.r': 2,
      'prior.target_modules': paths,
    });

    const x = tf.randomNormal([1, 2, 2, 4], 0, 1, 'float32', 1);
    const r = tf.tensor1d([0.5]);
    const c = tf.randomNormal([1, 3, 8], 0, 1, 'float32', 2);
    const y = prior.forward(x, r, c);
    net.detach();
    const loaded = loadLoraFile(prior, path.dirname(file), 'prior');
    expect(loaded.paths.sort()).toEqual(paths);
    expect([...loaded.adapters.values()].every((a) => a.alpha === 4 && a.rank === 2)).toBe(true);
    const y2 = prior.forward(x, r, c);
    expect(f64(y2)).toEqual(f64(y));
    loaded.multiplier = 0;
    const y0 = prior.forward(x, r, c);
    loaded.detach();
    const yBase = prior.forward(x, r, c);
    expect(f64(y0)).toEqual(f64(yBase));
    tf.dispose([x, r, c, y, y2, y0, yBase]);
    [net, loaded].forEach((n) => n.dispose());
    prior.dispose();
  });

  test('older diffusers layouts and per-module alpha are read; foreign or partial keys are errors', () => {
    const t = (shape: number[], v = 0.1): HostTensor => ({
      dtype: 'F32',
      shape,
      data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(v),
    });
    const old = path.join(tmp(), 'old.safetensors');
    writeSafetensors(old, {
      'prior.blocks.2.attention.processor.to_q_lora.down.weight': t([2, 16]),
      'prior.blocks.2.attention.processor.to_q_lora.up.weight': t([16, 2]),
      'prior.blocks.2.attention.processor.to_out_lora.down.weight': t([2, 16]),
      'prior.blocks.2.attention.processor.to_out_lora.up.weight': t([16, 2]),
      'prior.blocks.2.kv_mapper.1.lora.down.weight': t([4, 16]),
      'prior.blocks.2.kv_mapper.1.lora.up.weight': t([16, 4]),
      'prior.blocks.2.kv_mapper.1.alpha': { dtype: 'F32', shape: [], data: new Float32Array([2]) },
    });
    const read = readLoraFile(old, 'prior');
    expect([...read.keys()].sort()).toEqual([
      'blocks.2.attention.to_out.0',
      'blocks.2.attention.to_q',
      'blocks.2.kv_mapper.1',
    ]);
    expect(read.get('blocks.2.kv_mapper.1')!.alpha).toBe(2);
    expect(read.get('blocks.2.attention.to_q')!.alpha).toBeUndefined();
    const prior = new WuerstchenPrior(tinyPriorConfig);
    const net = loadLoraFile(prior, old, 'prior', 0.5);
    expect(net.adapters.get('blocks.2.kv_mapper.1')!.scale).toBeCloseTo(0.25);
    expect(net.adapters.get('blocks.2.attention.to_q')!.scale).toBeCloseTo(0.5);
    net.dispose();

    const te = path.join(tmp(), 'te.safetensors');
    writeSafetensors(te, {
      'prior.out.1.lora_A.weight': t([2, 16, 1, 1]),
      'prior.out.1.lora_B.weight': t([8, 2, 1, 1]),
      'text_encoder.x.lora_A.weight': t([2, 2]),
    });
    expect(() => readLoraFile(te, 'prior')).toThrow(/only LoRA for the prior and the decoder.*text_encoder/);
    expect(() => readLoraFile(old, 'decoder')).toThrow(/holds no LoRA for the decoder/);
    const half = path.join(tmp(), 'half.safetensors');
    writeSafetensors(half, { 'prior.out.1.lora_A.weight': t([2, 16, 1, 1]) });
    expect(() => readLoraFile(half, 'prior')).toThrow(/has lora_A but no lora_B/);
    const wrong = path.join(tmp(), 'wrong.safetensors');
    writeSafetensors(wrong, {
      'prior.blocks.2.attention.to_q.lora_A.weight': t([2, 15]),
      'prior.blocks.2.attention.to_q.lora_B.weight': t([16, 2]),
      'prior.nope.lora_A.weight': t([2, 2]),
      'prior.nope.lora_B.weight': t([2, 2]),
    });
    expect(() => loadLoraFile(prior, wrong, 'prior')).toThrow(/to_q: lora_A \[2, 15\].*\n.*nope: no Linear/s);
    prior.dispose();
  });

  test('one file may hold prior and decoder adapters; each network reads its own', () => {
    const t = (shape: number[]): HostTensor => ({
      dtype: 'F32',
      shape,
      data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(0.1),
    });
    const both = path.join(tmp(), 'both.safetensors');
    writeSafetensors(both, {
      'prior.blocks.2.attention.to_q.lora_A.weight': t([2, 16]),
      'prior.blocks.2.attention.to_q.lora_B.weight': t([16, 2]),
      'decoder.up_blocks.0.2.attention.to_v.lora_A.weight': t([3, 96]),
      'decoder.up_blocks.0.2.attention.to_v.lora_B.weight': t([96, 3]),
    });
    expect(loraComponents(both)).toEqual(['prior', 'decoder']);
    expect([...readLoraFile(both, 'prior').keys()]).toEqual(['blocks.2.attention.to_q']);
    expect([...readLoraFile(both, 'decoder').keys()]).toEqual(['up_blocks.0.2.attention.to_v']);
  });

  test('--lora FILE[:scale] parsing', () => {
    const file = path.join(tmp(), 'a.safetensors');
    fs.writeFileSync(file, '');
    expect(parseLoraSpec(`${file}:0.5`)).toEqual({ file, scale: 0.5 });
    expect(parseLoraSpec(file)).toEqual({ file, scale: 1 });
    expect(() => parseLoraSpec(`${file}:half`)).toThrow(/must be a number/);
    const out = path.join(tmp(), 'x.png');
    const args = parseGenerateArgs(['--prompt', 'p', '--out', out, '--lora', file, '--lora', `${file}:-1`]);
    expect(args.loras).toEqual([
      { file, scale: 1 },
      { file, scale: -1 },
    ]);
    expect(() =>
      parseGenerateArgs(['--prompt', 'p', '--out', out, '--lora', path.join(tmp(), 'missing.safetensors')]),
    ).toThrow(/does not exist/);
  });
});

describe('pipelines', () => {
  onFastestBackend();
  test('WuerstchenPriorPipeline.loadLora: scale, fuse = unfused, unfuse restores, survives offloading', async () => {
    const pipe = WuerstchenPriorPipeline.fromPretrained(pipelineFolders(tinyModel()).prior, { offload: true });
    const opts = { width: 64, height: 64, numInferenceSteps: 2, seed: 1 };
    const run = async () => {
      const { imageEmbeddings } = await pipe('a large red circle in the middle on a blue background', opts);
      const v = f64(imageEmbeddings);
      imageEmbeddings.dispose();
      return v;
    };
    const base = await run();
    const donor = pipe.prior.get();
    const net = LoraNetwork.inject(donor, { rank: 4, seed: 3 });
    randomize(net.parameters(), 7, 0.05);
    const file = path.join(tmp(), 'pytorch_lora_weights.safetensors');
    saveLoraFile(file, net, 'prior');
    net.dispose();
    pipe.release();

    const tensors = tf.memory().numTensors;
    pipe.loadLora(file, { scale: 1 });
    const withLora = await run();
    expect(maxAbsDiff(withLora, base)).toBeGreaterThan(1e-3);
    // offloading frees the prior after every call: each run below reattaches to a fresh copy
    pipe.fuseLora();
    expect(maxAbsDiff(await run(), withLora)).toBeLessThan(1e-3);
    pipe.unfuseLora();
    expect(await run()).toEqual(withLora);
    pipe.loras.networks[0].multiplier = 0;
    expect(await run()).toEqual(base);
    pipe.unloadLora();
    pipe.release();
    expect(tf.memory().numTensors).toBe(tensors);
  }, 900_000);

  test('WuerstchenDecoderPipeline.loadLora reads decoder.* adapters; scale 0 is the base decoder', async () => {
    const pipe = WuerstchenDecoderPipeline.fromPretrained(pipelineFolders(tinyModel()).decoder, { offload: true });
    const emb = tf.randomNormal([1, 8, 8, 16], 0, 1, 'float32', 4);
    const run = async () => {
      const { latents } = await pipe(emb, 'a small white square at the top on a black background', {
        numInferenceSteps: 2,
        seed: 2,
        outputType: 'latent',
      });
      const v = f64(latents!);
      latents!.dispose();
      return v;
    };
    const base = await run();
    const net = LoraNetwork.inject(pipe.decoder.get(), { rank: 2, seed: 5 });
    expect(net.paths).toContain('up_blocks.0.2.attention.to_out.0');
    randomize(net.parameters(), 8, 0.05);
    const file = path.join(tmp(), 'decoder.safetensors');
    saveLoraFile(file, net, 'decoder');
    net.dispose();
    expect(loraComponents(file)).toEqual(['decoder']);
    pipe.loadLora(file);
    const withLora = await run();
    expect(maxAbsDiff(withLora, base)).toBeGreaterThan(1e-4);
    pipe.loras.networks[0].multiplier = 0;
    expect(await run()).toEqual(base);
    pipe.unloadLora();
    pipe.release();
    emb.dispose();
  }, 900_000);
});

describe('training', () => {
  onFastestBackend();
  test('wuerstchen-train lora flags', () => {
    const a = parseLoraArgs([
      '--base',
      'b',
      '--data',
      'd',
      '--out',
      'o',
      '--rank',
      '8',
      '--alpha=16',
      '--targets',
      'to_q, to_v',
      '--steps',
      '50',
      '--resume',
    ]);
    expect(a.run).toMatchObject({ base: 'b', rank: 8, alpha: 16, targets: ['to_q', 'to_v'], steps: 50, lr: 1e-4 });
    expect(a.resume).toBe(true);
    expect(() => parseLoraArgs(['--base', 'b', '--data', 'd', '--out', 'o', '--rank', '0'])).toThrow(
      /--rank must be a positive integer/,
    );
    expect(() => parseLoraArgs(['--base', 'b', '--data', 'd'])).toThrow(/--out is required/);
    expect(() => loraTrainConfig({ base: tmp(), rank: 2, steps: 1, lr: 1 })).toThrow(
      /expected a WuerstchenPriorPipeline folder/,
    );
  });

  test('LoRA on the bundled tiny prior: only the adapters change, the loss falls, no leaks, resume continues', async () => {
    const data = path.join(tmp(), 'pink');
    makeShapes({ out: data, n: 8, seed: 3, side: 64, colours: ['pink'] });
    const cfg = loraTrainConfig({
      base: tinyModel(),
      config: path.resolve(__dirname, '../configs/tiny-c.json'),
      rank: 4,
      steps: 6,
      lr: 1e-2,
      batchSize: 2,
      checkpointEvery: 3,
    });
    expect(cfg.objective.latent_scaling).toEqual(expect.objectContaining({ latent_mean: expect.any(Number) }));
    expect(cfg.ema).toBeNull();
    const out = path.join(tmp(), 'run');
    const metrics: StepMetrics[] = [];
    const tensors: number[] = [];
    const make = (maxSteps?: number, resume = false) =>
      new PriorLoraTrainer(
        {
          config: cfg,
          data,
          out,
          maxSteps,
          resume,
          progress: 'none',
          log: () => undefined,
          onStep: (m) => (metrics.push(m), tensors.push(tf.memory().numTensors)),
        },
        { rank: 4, alpha: 8 },
      );
    // the base prior stays bit-identical through training and resume
    const runFrozen = async (t: PriorLoraTrainer) => {
      t.init();
      const base = t.prior.stateDict();
      await t.run();
      for (const [k, v] of t.prior.stateDict()) expect(v.data).toEqual(base.get(k)!.data);
    };
    const first = make(3);
    await runFrozen(first);
    expect(
      first.adapters.network
        .parameters()
        .map(([k]) => k)
        .slice(0, 2),
    ).toEqual(['blocks.2.attention.to_q.lora_A.weight', 'blocks.2.attention.to_q.lora_B.weight']);
    first.dispose();
    const second = make(undefined, true);
    await runFrozen(second);
    expect(metrics.map((m) => m.step)).toEqual([1, 2, 3, 4, 5, 6]);
    // every lora_B moved away from zero, and the loss is below the base's (the same network at scale 0)
    for (const [k, p] of second.adapters.network.parameters())
      if (k.includes('lora_B')) expect(Math.max(...Array.from(p.value.dataSync(), Math.abs))).toBeGreaterThan(0);
    const after = second.evalLoss(4);
    second.adapters.network.multiplier = 0;
    expect(after).toBeLessThan(second.evalLoss(4));
    second.adapters.network.multiplier = 1;
    // tensor count flat from step to step within each run
    expect(new Set(tensors.slice(0, 3)).size).toBe(1);
    expect(new Set(tensors.slice(3)).size).toBe(1);
    const file = path.join(tmp(), 'final.safetensors');
    second.adapters.save(file);
    second.dispose();
    const keys = openSafetensors(file);
    expect(keys.keys()).toContain('prior.blocks.2.attention.to_out.0.lora_B.weight');
    expect(JSON.parse(keys.metadata[LORA_ADAPTER_METADATA_KEY])['prior.lora_alpha']).toBe(8);
    keys.close();
    expect(fs.existsSync(path.join(out, 'checkpoints'))).toBe(true);
  }, 900_000);

  test('decoder LoRA on the bundled tiny decoder: compressor, Stage A and decoder frozen, the loss falls', async () => {
    const data = path.join(tmp(), 'pink');
    makeShapes({ out: data, n: 8, seed: 4, side: 64, colours: ['pink'] });
    const cfg = loraTrainConfig({
      stage: 'b',
      base: tinyModel(),
      config: path.resolve(__dirname, '../configs/tiny-b.json'),
      rank: 4,
      steps: 6,
      lr: 1e-2,
      batchSize: 2,
    });
    expect(cfg.phases[0]).toMatchObject({ freeze_effnet: true, image_size: 64, effnet_size: 32 });
    const trainer = new DecoderLoraTrainer(
      { config: cfg, data, out: path.join(tmp(), 'run'), progress: 'none', log: () => undefined },
      { rank: 4 },
    );
    trainer.init();
    const frozen = new Map([
      ...trainer.decoder.stateDict(),
      ...[...trainer.effnet.stateDict()].map(([k, t]) => [`effnet.${k}`, t] as const),
    ]);
    const before = trainer.evalLoss(4);
    await trainer.run();
    expect(trainer.evalLoss(4)).toBeLessThan(before);
    const now = new Map([
      ...trainer.decoder.stateDict(),
      ...[...trainer.effnet.stateDict()].map(([k, t]) => [`effnet.${k}`, t] as const),
    ]);
    for (const [k, t] of now) expect(t.data).toEqual(frozen.get(k)!.data);
    const file = path.join(tmp(), 'decoder-lora.safetensors');
    trainer.adapters.save(file);
    trainer.dispose();
    expect(loraComponents(file)).toEqual(['decoder']);
    expect(readLoraFile(file, 'decoder').has('down_blocks.1.3.attention.to_k')).toBe(true);
  }, 900_000);
});

describe('shapes: the pink option', () => {
  test('pink is drawn and judged only when asked for', () => {
    expect(EXTRA_PALETTE.pink).toEqual([240, 130, 180]);
    expect(COLOURS).not.toContain('pink');
    const rng = new Generator(3);
    for (let i = 0; i < 20; i++) {
      const s = randomScene(rng, 'any', ['pink']);
      expect(s.colour).toBe('pink');
      expect(COLOURS).toContain(s.background);
      const px = renderScene(s, rng, { side: 64 });
      expect(judgeImage(px, 64, 64, 3, 40, [...COLOURS, 'pink']).colour).toBe('pink');
      expect(judgeImage(px, 64, 64).colour).not.toBe('pink');
    }
    expect(() => randomScene(rng, 'only', ['pink'])).toThrow(/no held-out pair/);
    expect(() => randomScene(rng, 'any', ['mauve'])).toThrow(/unknown colour "mauve"/);
  });
});
