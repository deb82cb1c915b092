/**
 * Stage A (VQGAN, proxy recipe) trainer on a tiny configuration: straight-through quantisation with
 * commitment 0.25, reconstruction + adversarial loss; the reconstruction error goes down and the
 * checkpoint is a PaellaVQModel diffusers folder.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { loadModel } from 'wuerstchen';
import { StageATrainer, StepMetrics, loadConfig, readLatest } from '@wuerstchen/train';
import { makeToyDataset } from '@wuerstchen/train/internal';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'train-a-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
beforeAll(async () => {
  await tf.setBackend('cpu');
});

test('tiny Stage A: reconstruction loss decreases, GAN terms present, no leaks', async () => {
  const data = path.join(tmp, 'data');
  makeToyDataset(data, 12, { jpegEvery: 4 });
  const cfg = loadConfig(path.resolve(__dirname, '../configs/stage-a-tiny.json'), 'a');
  cfg.phases[0] = { ...cfg.phases[0], steps: 10 };
  cfg.sample_every = 10;
  const out = path.join(tmp, 'run');
  const metrics: StepMetrics[] = [];
  const tensors: number[] = [];
  const trainer = new StageATrainer({
    config: cfg,
    data,
    out,
    progress: 'none',
    log: () => undefined,
    onStep: (m) => (metrics.push(m), tensors.push(tf.memory().numTensors)),
  });
  trainer.init();
  const before = trainer.evalLoss(8);
  await trainer.run();
  const after = trainer.evalLoss(8);
  expect(after).toBeLessThan(before * 0.97);
  expect(new Set(tensors.slice(1)).size).toBe(1);
  for (const m of metrics) {
    expect(Number.isFinite(m.g_loss as number) && (m.g_loss as number) > 0).toBe(true);
    expect(Number.isFinite(m.d_loss as number) && (m.d_loss as number) > 0).toBe(true);
    expect(m.commitment_loss as number).toBeGreaterThanOrEqual(0);
  }
  trainer.dispose();
  const latest = readLatest(out)!;
  const vq = loadModel(path.join(latest, 'vqgan'), 'PaellaVQModel');
  expect(vq.config.num_vq_embeddings).toBe(64);
  vq.dispose();
  expect(fs.existsSync(path.join(out, 'samples', 'step-00000010.png'))).toBe(true);
});
