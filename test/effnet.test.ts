/** EfficientNetEncoder, the semantic compressor (diffusers examples/research_projects/wuerstchen/text_to_image/modeling_efficient_net_encoder.py), against the golden effnet cases. */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import '../packages/golden/src/runners/effnet';
import { formatReport, runGolden } from '../packages/golden/src/harness';
import { BatchNorm2d, Sequential } from '@wuerstchen/core';
import {
  EfficientNetEncoder,
  FusedMBConv,
  InvertedResidualConfig,
  MBConv,
  StochasticDepth,
  toPriorLatents,
} from '../packages/wuerstchen/src/models/effnet';
import { GOLDEN } from './helpers/shared';

const REDUCED = JSON.parse(fs.readFileSync(path.join(GOLDEN, 'effnet_reduced', 'case.json'), 'utf8'))
  .reduced_config as {
  inverted_residual_setting: InvertedResidualConfig[];
  last_channel: number;
  stem_channels: number;
};
const m2Blocks = (stage: Sequential) => stage.items as unknown as (FusedMBConv | MBConv)[];
const reduced = () => new EfficientNetEncoder({ c_latent: 16, c_cond: 64, ...REDUCED });

beforeAll(async () => {
  await tf.setBackend('cpu');
});

test('golden effnet_reduced and effnet_v2_s_keys pass', async () => {
  const reports = await runGolden(GOLDEN, { filter: 'effnet', log: (l) => process.stdout.write(`${l}\n`) });
  expect(reports.map((r) => r.name).sort()).toEqual(['effnet_reduced', 'effnet_v2_s_keys']);
  for (const r of reports) if (!r.passed) throw new Error(formatReport(r));
});

test('efficientnet_v2_s encoder has exactly the 786 keys, shapes and dtypes of keys.json (no weights allocated)', () => {
  const ref = JSON.parse(fs.readFileSync(path.join(GOLDEN, 'effnet_v2_s_keys', 'keys.json'), 'utf8'));
  const model = new EfficientNetEncoder();
  const params = model.namedParameters();
  const keys = params.map(([name, p]) => ({
    name,
    shape: p.torchShape,
    dtype: p.dtype === 'I64' ? 'int64' : 'float32',
  }));
  expect(keys).toEqual(ref);
  expect(keys).toHaveLength(786);
  expect(params.some(([, p]) => p.allocated)).toBe(false);
});

test('efficientnet_v2_l builds (dome272 v1 backbone)', () => {
  const model = new EfficientNetEncoder({ effnet: 'efficientnet_v2_l' });
  expect(model.backbone.length).toBe(9);
  expect(model.namedParameters().find(([k]) => k === 'backbone.6.0.block.1.0.weight')?.[1].torchShape).toEqual([
    1344, 1, 5, 5,
  ]);
});

describe('reduced encoder (random weights)', () => {
  const model = reduced();
  const x = tf.randomUniform([2, 32, 48, 3], -1, 1, 'float32', 5);
  afterAll(() => {
    model.dispose();
    x.dispose();
  });

  test('output is [B, H/8, W/8, c_latent] (the reduced backbone has stride 8); toPriorLatents is (e + 1) / 42', () => {
    tf.tidy(() => {
      const e = model.forward(x);
      expect(e.shape).toEqual([2, 4, 6, 16]);
      expect(Array.from(toPriorLatents(tf.tensor([-1, 41, 20])).dataSync())).toEqual([0, 1, 0.5]);
    });
  });

  test('tf.memory().numTensors stays flat over repeated calls (eval and train)', () => {
    for (const train of [false, true]) {
      model.train(train);
      model.forward(x).dispose(); // first call allocates the lazily-initialised parameters
      const before = tf.memory().numTensors;
      for (let i = 0; i < 3; i++) model.forward(x).dispose();
      expect(tf.memory().numTensors).toBe(before);
    }
    model.eval();
  });

  test('train mode: BatchNorm running stats update and gradients reach every trainable parameter', () => {
    // stochastic depth off: a dropped block would (correctly) get no gradient in this step
    const m = new EfficientNetEncoder({ c_latent: 16, c_cond: 64, ...REDUCED, stochastic_depth_prob: 0 }).train();
    try {
      const bn = m.mapper.at(1) as BatchNorm2d;
      const before = Array.from(bn.runningMean.value.dataSync());
      const vars = m.trainableParameters().map(([, p]) => p.value);
      const probe = tf.randomNormal([2, 4, 6, 16], 0, 1, 'float32', 6);
      const { value, grads } = tf.variableGrads(() => tf.sum(tf.mul(m.forward(x), probe)) as tf.Scalar, vars);
      expect(Array.from(bn.runningMean.value.dataSync())).not.toEqual(before);
      expect(bn.numBatchesTracked.value.dataSync()[0]).toBe(1);
      expect(Number.isFinite(value.dataSync()[0])).toBe(true);
      expect(Object.keys(grads)).toHaveLength(vars.length);
      const zero = m
        .trainableParameters()
        .filter(([, p]) => !tf.any(tf.notEqual(grads[p.value.name], 0)).dataSync()[0]);
      expect(zero.map(([k]) => k)).toEqual([]);
      tf.dispose([value, probe, ...Object.values(grads)]);
    } finally {
      m.dispose();
    }
  });

  test('stochastic depth: p = 0.2·block/total per block; in training each batch row is dropped or scaled by 1/(1 − p)', () => {
    const stage = m2Blocks(model.backbone.at(2) as Sequential);
    expect(stage.map((b) => b.stochasticDepth.p)).toEqual([(0.2 * 2) / 8, (0.2 * 3) / 8]);
    tf.tidy(() => {
      const t = tf.ones([64, 2, 2, 3]);
      expect(new StochasticDepth(0.5).forward(t)).toBe(t); // eval: identity
      const rows = tf.max(new StochasticDepth(0.5).train().forward(t), [1, 2, 3]).dataSync();
      const mins = tf.min(new StochasticDepth(0.5).train().forward(t), [1, 2, 3]).dataSync();
      expect(new Set(rows)).toEqual(new Set([0, 2]));
      expect(new Set(mins)).toEqual(new Set([0, 2]));
      expect(Array.from(new StochasticDepth(1).train().forward(t).dataSync())).toEqual(new Array(t.size).fill(0));
    });
  });

  test('bad input shapes and configs give a clear error', () => {
    tf.tidy(() => {
      expect(() => model.forward(tf.zeros([1, 64, 64, 4]))).toThrow(
        /EfficientNetEncoder: expected an NHWC image \[B, H, W, 3\], got \[1,64,64,4\]/,
      );
      expect(() => model.forward(tf.zeros([64, 64, 3]))).toThrow(/expected an NHWC image/);
    });
    expect(() => new EfficientNetEncoder({ c_cond: 64 })).toThrow(/last_channel \(1280\) must equal c_cond \(64\)/);
    expect(() => new EfficientNetEncoder({ effnet: 'efficientnet_b0' as never })).toThrow(
      /unknown effnet "efficientnet_b0"/,
    );
    expect(() => new EfficientNetEncoder({ c_cond: 64, ...REDUCED, stem_channels: 16 })).toThrow(/stem_channels 16/);
  });
});
