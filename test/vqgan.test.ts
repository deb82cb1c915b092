/** Stage A PaellaVQModel (diffusers modeling_paella_vq_model.py) against the golden `vqgan_tiny` case and the real key list. */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import '../packages/golden/src/runners/vqgan';
import { formatReport, runGolden } from '../packages/golden/src/harness';
import { PaellaVQModel } from '../packages/wuerstchen/src/models/paella_vq';
import { GOLDEN } from './helpers/shared';

const TINY = { levels: 2, bottleneck_blocks: 2, embed_dim: 32, latent_channels: 4, num_vq_embeddings: 64 };

beforeAll(async () => {
  await tf.setBackend('cpu');
});

test('golden vqgan_tiny passes', async () => {
  const reports = await runGolden(GOLDEN, { filter: 'vqgan', log: (l) => process.stdout.write(`${l}\n`) });
  expect(reports.map((r) => r.name)).toEqual(['vqgan_tiny']);
  for (const r of reports) if (!r.passed) throw new Error(formatReport(r));
});

test('default config has exactly the keys, shapes and dtypes of the real checkpoint (no weights allocated)', () => {
  const ref = JSON.parse(fs.readFileSync(path.join(GOLDEN, 'real_checkpoint_keys', 'vqgan.json'), 'utf8')) as {
    keys: { name: string; shape: number[]; dtype: string }[];
  };
  const model = new PaellaVQModel();
  const params = model.namedParameters();
  const keys = params.map(([name, p]) => ({
    name,
    shape: p.torchShape,
    dtype: p.dtype === 'I64' ? 'int64' : 'float32',
  }));
  expect(keys).toEqual(ref.keys);
  expect(keys).toHaveLength(122);
  expect(params.some(([, p]) => p.allocated)).toBe(false);
});

describe('tiny model (random weights)', () => {
  const model = new PaellaVQModel(TINY);
  const image = tf.randomUniform([1, 16, 12, 3], 0, 1, 'float32', 3);
  const latents = tf.randomNormal([1, 3, 5, 4], 0, 1, 'float32', 4);
  afterAll(() => {
    model.dispose();
    image.dispose();
    latents.dispose();
  });

  test('shapes: encode 4× down, decode 4× up, VQ indices per pixel', () => {
    tf.tidy(() => {
      expect(model.encode(image).shape).toEqual([1, 4, 3, 4]);
      expect(model.decode(latents).shape).toEqual([1, 12, 20, 3]);
      expect(model.forward(image).shape).toEqual([1, 16, 12, 3]);
      expect(model.vquantizer.forward(latents).indices.shape).toEqual([15]);
    });
  });

  test('tf.memory().numTensors stays flat over repeated calls', () => {
    const run = () => [
      model.forward(image),
      model.decode(latents, false),
      ...Object.values(model.vquantizer.forwardWithLoss(latents)),
    ];
    run().forEach((t) => t.dispose()); // first call allocates the lazily-initialised parameters
    const before = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) run().forEach((t) => t.dispose());
    expect(tf.memory().numTensors).toBe(before);
  });

  test('VQ: quantized values are codebook rows, straight-through gradient, loss = (1 + β)·mean((z_q − z)²)', () => {
    tf.tidy(() => {
      const { quantized, indices, loss, commitmentLoss, codebookLoss } = model.vquantizer.forwardWithLoss(latents);
      const rows = tf.gather(model.vquantizer.embedding.weight.value, indices).reshape(latents.shape);
      expect(tf.max(tf.abs(tf.sub(quantized, rows))).dataSync()[0]).toBeLessThan(1e-6);
      const mse = tf.mean(tf.squaredDifference(rows, latents)).dataSync()[0];
      expect(commitmentLoss.dataSync()[0]).toBeCloseTo(mse, 6);
      expect(codebookLoss.dataSync()[0]).toBeCloseTo(mse, 6);
      expect(loss.dataSync()[0]).toBeCloseTo(1.25 * mse, 6);
      const dz = tf.grad((z: tf.Tensor) => tf.sum(model.vquantizer.forward(z).quantized))(latents);
      expect(Array.from(dz.dataSync())).toEqual(new Array(latents.size).fill(1));
      // The loss gradient w.r.t. z has only the commitment term: 2β(z − z_q)/n.
      const dl = tf.grad((z: tf.Tensor) => model.vquantizer.forwardWithLoss(z).loss)(latents);
      const expected = tf.mul(tf.sub(latents, rows), (2 * 0.25) / latents.size);
      expect(tf.max(tf.abs(tf.sub(dl, expected))).dataSync()[0]).toBeLessThan(1e-7);
      // ... and the codebook gets the codebook term: rows not chosen by any pixel get no gradient.
      const table = model.vquantizer.embedding.weight.value;
      const { grads } = tf.variableGrads(() => model.vquantizer.forwardWithLoss(latents).loss, [table]);
      const rowNorms = tf.sum(tf.abs(grads[table.name]), 1).dataSync();
      const used = new Set(indices.dataSync());
      rowNorms.forEach((g, k) => expect(g > 0).toBe(used.has(k)));
    });
  });

  test('bad input shapes give a clear error', () => {
    tf.tidy(() => {
      expect(() => model.encode(tf.zeros([1, 16, 16, 4]))).toThrow(
        /PaellaVQModel.encode: expected an NHWC image \[B, H, W, 3\], got \[1,16,16,4\]/,
      );
      expect(() => model.encode(tf.zeros([16, 16, 3]))).toThrow(/expected an NHWC image/);
      expect(() => model.encode(tf.zeros([1, 15, 16, 3]))).toThrow(/PixelUnshuffle\(2\): height 15/);
      expect(() => model.decode(tf.zeros([1, 4, 4, 3]))).toThrow(
        /PaellaVQModel.decode: expected NHWC latents \[B, h, w, 4\], got \[1,4,4,3\]/,
      );
      expect(() => model.vquantizer.forward(tf.zeros([1, 4, 4, 2]))).toThrow(
        /VectorQuantizer: expected NHWC latents with 4 channels/,
      );
    });
  });
});
