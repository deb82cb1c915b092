/**
 * From training runs to a pipeline folder: tiny Stage B and C runs with seeded text encoders (saved
 * with their checkpoints), fitted latent scaling and frozen-compressor phases; `export` writes the
 * two diffusers folders (fp16), `WuerstchenCombinedPipeline.fromPretrained(dir)` loads them and
 * generates at the runs' native size, and bad runs give clear errors.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { WuerstchenCombinedPipeline } from 'wuerstchen';
import { readModelIndex } from 'wuerstchen/internal';
import { ExportError, StageBTrainer, StageCTrainer, exportPipelines, loadConfig } from '@wuerstchen/train';
import { makeToyDataset } from '@wuerstchen/train/internal';
import { useTempDir } from './helpers/tmp';

const tmp = useTempDir('export-');
const CONFIGS = path.resolve(__dirname, '../configs');

beforeAll(async () => {
  await tf.setBackend('cpu');
});

function textSpec(dir: string, hidden: number): string {
  const file = path.join(dir, `text-${hidden}.json`);
  const config = {
    vocab_size: 49408,
    hidden_size: hidden,
    intermediate_size: 2 * hidden,
    projection_dim: hidden,
    num_hidden_layers: 1,
    num_attention_heads: 2,
    max_position_embeddings: 77,
    hidden_act: 'gelu',
    layer_norm_eps: 1e-5,
    bos_token_id: 49406,
    eos_token_id: 49407,
    pad_token_id: 1,
  };
  fs.writeFileSync(file, JSON.stringify({ seed: 3, config }));
  return file;
}

test('tiny B and C runs export to pipeline folders that generate at their native size', async () => {
  const dir = tmp();
  const data = path.join(dir, 'data');
  makeToyDataset(data, 8, { size: [64, 64] });
  const b = loadConfig(path.join(CONFIGS, 'stage-b-tiny.json'), 'b');
  b.text_encoder = textSpec(dir, b.model.clip_embd as number);
  b.phases = [
    { ...b.phases[1], steps: 2, random_crop: false },
    { ...b.phases[1], name: 'B-frozen', steps: 1, random_crop: false, freeze_effnet: true },
  ];
  b.sample_every = 0;
  const bRun = path.join(dir, 'b');
  const effnetFile = () =>
    fs.readFileSync(
      path.join(
        bRun,
        fs.readFileSync(path.join(bRun, 'latest'), 'utf8').trim(),
        'effnet',
        'diffusion_pytorch_model.safetensors',
      ),
    );
  for (const maxSteps of [2, undefined]) {
    const tb = new StageBTrainer({
      config: b,
      data,
      out: bRun,
      progress: 'none',
      log: () => undefined,
      resume: maxSteps === undefined,
      maxSteps,
    });
    await tb.run();
    tb.dispose();
  }
  const jointEffnet = fs.readFileSync(
    path.join(bRun, 'checkpoints', 'step-00000002', 'effnet', 'diffusion_pytorch_model.safetensors'),
  );
  // the frozen phase left the compressor (weights and BatchNorm statistics) as the joint phase made it
  expect(effnetFile().equals(jointEffnet)).toBe(true);

  const c = loadConfig(path.join(CONFIGS, 'stage-c-tiny.json'), 'c');
  c.text_encoder = textSpec(dir, c.model.c_cond as number);
  c.effnet = { from: bRun };
  c.objective.latent_scaling = 'fit';
  c.objective.weighting = 'x0';
  c.phases = [{ ...c.phases[1], steps: 2, random_crop: false }];
  c.sample_every = 0;
  const cRun = path.join(dir, 'c');
  const tc = new StageCTrainer({ config: c, data, out: cRun, progress: 'none', log: () => undefined });
  await tc.run();
  const scaling = tc.latentScaling;
  tc.dispose();
  expect(scaling.latent_mean).toBeGreaterThan(0);
  for (const run of [bRun, cRun]) expect(fs.existsSync(path.join(run, 'train_config.json'))).toBe(true);

  const out = path.join(dir, 'model');
  const folders = exportPipelines({ prior: cRun, decoder: bRun, out, dtype: 'fp16' });
  const priorIndex = readModelIndex(folders.prior, ['WuerstchenPriorPipeline']);
  expect(priorIndex.config.latent_mean).toBeCloseTo(scaling.latent_mean, 10);
  expect(priorIndex.config.latent_std).toBeCloseTo(scaling.latent_std, 10);
  expect(priorIndex.config.resolution_multiple).toBe(8);
  expect(readModelIndex(folders.decoder, ['WuerstchenDecoderPipeline']).config.latent_dim_scale).toBe(2);
  const header = fs.readFileSync(path.join(folders.prior, 'prior', 'diffusion_pytorch_model.safetensors'));
  expect(header.toString('utf8', 8, 8 + Number(header.readBigUInt64LE(0)))).toMatch(/"dtype":"F16"/);

  const pipe = WuerstchenCombinedPipeline.fromPretrained(out);
  const before = tf.memory().numTensors;
  const { images } = await pipe(['a red square', 'a blue circle'], {
    width: 64,
    height: 64,
    priorNumInferenceSteps: 2,
    numInferenceSteps: 2,
    seed: 1,
  });
  expect(images!.shape).toEqual([2, 64, 64, 3]);
  expect(Array.from(images!.dataSync()).every(Number.isFinite)).toBe(true);
  images!.dispose();
  pipe.release();
  expect(tf.memory().numTensors).toBe(before);

  // runs that cannot be exported say why
  expect(() => exportPipelines({ prior: bRun, decoder: bRun, out })).toThrow(ExportError);
  expect(() => exportPipelines({ prior: bRun, decoder: bRun, out })).toThrow(
    /a stage-b run where a stage-c run was expected/,
  );
  expect(() => exportPipelines({ prior: path.join(dir, 'none'), decoder: bRun, out })).toThrow(/no train_config\.json/);
});
