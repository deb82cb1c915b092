/**
 * Stage B trainer on a tiny configuration: decoder + jointly trained compressor (BatchNorm in train
 * mode) over frozen Stage A latents; the loss goes down, tensors do not leak, both phases run and
 * the decoder / effnet folders are written in diffusers format.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { loadModel } from 'wuerstchen';
import { StageBTrainer, StepMetrics, loadConfig, readLatest } from '@wuerstchen/train';
import { makeToyDataset } from '@wuerstchen/train/internal';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'train-b-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
beforeAll(async () => {
  await tf.setBackend('cpu');
});

test('tiny Stage B: loss decreases, compressor trains, no leaks, checkpoint folders', async () => {
  const data = path.join(tmp, 'data');
  makeToyDataset(data, 12, { jpegEvery: 4 });
  const cfg = loadConfig(path.resolve(__dirname, '../configs/stage-b-tiny.json'), 'b');
  cfg.phases[0] = { ...cfg.phases[0], steps: 10 };
  cfg.phases[1] = { ...cfg.phases[1], steps: 2 };
  cfg.sample_every = 12;
  const out = path.join(tmp, 'run');
  const metrics: StepMetrics[] = [];
  const tensors: number[] = [];
  const trainer = new StageBTrainer({
    config: cfg,
    data,
    out,
    progress: 'none',
    log: () => undefined,
    onStep: (m) => (metrics.push(m), tensors.push(tf.memory().numTensors)),
  });
  trainer.init();
  const effBefore = trainer.effnet.backbone.namedParameters()[0][1].toHost().data as Float32Array;
  const bnBefore = Array.from(
    trainer.effnet.mapper
      .namedParameters()
      .find(([k]) => k.endsWith('running_mean'))![1]
      .value.dataSync(),
  );
  const before = trainer.evalLoss(8);
  await trainer.run();
  const after = trainer.evalLoss(8);
  expect(after).toBeLessThan(before * 0.9);
  expect(new Set(tensors.slice(1, 10)).size).toBe(1);
  expect([...new Set(metrics.map((m) => m.phase))]).toEqual(['B1-32px', 'B2-64px']);
  // the compressor is trained jointly: weights moved, BatchNorm running statistics updated
  const effAfter = trainer.effnet.backbone.namedParameters()[0][1].toHost().data as Float32Array;
  expect(Array.from(effAfter)).not.toEqual(Array.from(effBefore));
  const bnAfter = Array.from(
    trainer.effnet.mapper
      .namedParameters()
      .find(([k]) => k.endsWith('running_mean'))![1]
      .value.dataSync(),
  );
  expect(bnAfter).not.toEqual(bnBefore);
  trainer.dispose();
  const latest = readLatest(out)!;
  const dec = loadModel(path.join(latest, 'decoder'), 'WuerstchenDiffNeXt');
  expect(dec.config.c_hidden).toEqual([16, 32]);
  dec.dispose();
  expect(JSON.parse(fs.readFileSync(path.join(latest, 'effnet', 'config.json'), 'utf8'))._class_name).toBe(
    'EfficientNetEncoder',
  );
  expect(fs.existsSync(path.join(out, 'samples', 'step-00000012.png'))).toBe(true);
});
