/**
 * Stage C trainer on a tiny configuration: the loss goes down on a generated dataset, tensors do not
 * leak, the phases (4×4 → 8×8 → aspect mixing → fine-tune) are walked and recorded, and the
 * checkpoint is a diffusers folder that WuerstchenPriorPipeline.fromPretrained loads and runs.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { WuerstchenPriorPipeline, loadModel } from 'wuerstchen';
import { StageCTrainer, StepMetrics, loadConfig, readLatest } from '@wuerstchen/train';
import { TrainingState, makeToyDataset } from '@wuerstchen/train/internal';
import { GOLDEN } from './helpers/shared';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'train-c-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
beforeAll(async () => {
  await tf.setBackend('cpu');
});

test('tiny Stage C: loss decreases, no leaks, phases recorded, checkpoint loads in the prior pipeline', async () => {
  const data = path.join(tmp, 'data');
  makeToyDataset(data, 16, { jpegEvery: 5 });
  const cfg = loadConfig(path.resolve(__dirname, '../configs/stage-c-tiny.json'), 'c');
  cfg.phases[0] = { ...cfg.phases[0], steps: 14 };
  cfg.sample_every = 0;
  const out = path.join(tmp, 'run');
  const metrics: StepMetrics[] = [];
  const tensors: number[] = [];
  const trainer = new StageCTrainer({
    config: cfg,
    data,
    out,
    progress: 'none',
    log: () => undefined,
    onStep: (m) => {
      metrics.push(m);
      tensors.push(tf.memory().numTensors);
    },
  });
  trainer.init();
  const before = trainer.evalLoss(8);
  await trainer.run();
  const after = trainer.evalLoss(8);
  expect(after).toBeLessThan(before * 0.9);

  // no tensor leaks: flat within a phase (a phase change may build new cached shapes, never grow per step)
  const total = metrics.length;
  expect(total).toBe(22);
  const p0 = tensors.slice(1, 14);
  expect(new Set(p0).size).toBe(1);
  expect(tensors[total - 1]).toBe(tensors[total - 2]);

  // the trainer walked the phases by itself and the metrics say which
  expect([...new Set(metrics.map((m) => m.phase))]).toEqual(['C1-4x4', 'C2-8x8', 'C3-aspect-mixing', 'C4-finetune']);
  expect(metrics[0].latent_h).toBe(4);
  expect(metrics[15].latent_h).toBe(8);
  const ar = metrics.filter((m) => m.phase === 'C3-aspect-mixing');
  expect(ar.every((m) => m.latent_h !== m.latent_w)).toBe(true);
  expect(metrics.every((m) => (Number.isFinite(m.loss) && m.lr > 0) || m.step === 1)).toBe(true);
  expect(metrics[0].lr).toBe(0); // GradualWarmupScheduler: the first update runs at lr 0

  const latest = readLatest(out)!;
  const state = JSON.parse(fs.readFileSync(path.join(latest, 'training_state.json'), 'utf8')) as TrainingState;
  expect(state.step).toBe(22);
  expect(state.phase.name).toBe('C4-finetune');
  expect(state.finished).toBe(true);
  expect(state.optimizer_steps.prior).toBe(22);
  trainer.dispose();

  // diffusers layout: config.json like save_pretrained + safetensors with PyTorch keys
  const cfgText = fs.readFileSync(path.join(latest, 'prior', 'config.json'), 'utf8');
  expect(cfgText.startsWith('{\n  "_class_name": "WuerstchenPrior",\n  "_diffusers_version": ')).toBe(true);
  const ema = loadModel(path.join(latest, 'prior_ema'), 'WuerstchenPrior');
  expect(ema.config.depth).toBe(2);
  ema.dispose();

  // assemble a hub-layout pipeline folder around the trained prior and run it end to end
  const hub = path.join(tmp, 'hub');
  const src = path.join(GOLDEN, 'hub', 'wuerstchen-prior');
  fs.mkdirSync(hub);
  for (const d of ['text_encoder', 'tokenizer', 'scheduler'])
    fs.cpSync(path.join(src, d), path.join(hub, d), { recursive: true });
  fs.copyFileSync(path.join(src, 'model_index.json'), path.join(hub, 'model_index.json'));
  fs.cpSync(path.join(latest, 'prior'), path.join(hub, 'prior'), { recursive: true });
  for (const f of fs.readdirSync(hub, { recursive: true }) as string[]) fs.chmodSync(path.join(hub, f), 0o755);
  const pipe = WuerstchenPriorPipeline.fromPretrained(hub);
  const { imageEmbeddings } = await pipe('a red square', {
    width: 170,
    height: 170,
    numInferenceSteps: 4,
    guidanceScale: 4,
    seed: 0,
  });
  expect(imageEmbeddings.shape).toEqual([1, 4, 4, 16]);
  expect(Array.from(imageEmbeddings.dataSync()).every(Number.isFinite)).toBe(true);
  imageEmbeddings.dispose();
});
