/**
 * Stage B trainer on a tiny configuration: decoder + jointly trained compressor (BatchNorm in train
 * mode) over frozen Stage A latents; the loss goes down, tensors do not leak, both phases run and
 * the decoder / effnet folders are written in diffusers format.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { CLIPTokenizer, Generator, loadModel } from 'wuerstchen';
import { StageBTrainer, StepMetrics, loadConfig, readLatest } from '@wuerstchen/train';
import { CaptionWordHead, captionWordTargets, makeToyDataset, patchTargets } from '@wuerstchen/train/internal';

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

test("the compressor's word and patch heads: a compressor-only phase, then losses beside the decoder's; checkpointed, resumed bit for bit, off once frozen", async () => {
  const data = path.join(tmp, 'data-words');
  makeToyDataset(data, 8);
  const cfg = loadConfig(path.resolve(__dirname, '../configs/stage-b-tiny.json'), 'b');
  cfg.objective = { ...cfg.objective, effnet_words: 0.1, effnet_words_buckets: 32, effnet_patches: 1 };
  cfg.phases = [
    { ...cfg.phases[0], name: 'compressor', steps: 2, compressor_only: true },
    { ...cfg.phases[0], steps: 2 },
    { ...cfg.phases[0], name: 'frozen', steps: 1, freeze_effnet: true },
  ];
  Object.assign(cfg, { checkpoint_every: 2, keep_checkpoints: 5, sample_every: 100 });
  const run = async (out: string, maxSteps?: number) => {
    const metrics: StepMetrics[] = [];
    const trainer = new StageBTrainer({
      config: cfg,
      data,
      out,
      resume: true,
      maxSteps,
      progress: 'none',
      log: () => undefined,
      onStep: (m) => metrics.push(m),
    });
    trainer.init();
    await trainer.run();
    trainer.dispose();
    return metrics;
  };
  const ref = await run(path.join(tmp, 'words-ref'));
  // reported while the compressor trains, absent once it is frozen
  for (const metric of ['word_loss', 'patch_loss']) {
    expect(ref.slice(0, 4).every((m) => Number.isFinite(m[metric]) && (m[metric] as number) > 0)).toBe(true);
    expect(ref[4][metric]).toBeUndefined();
  }
  // the decoder's schedule starts where the compressor's did, not in the middle of its cycle
  expect(ref[2].lr).toBe(ref[0].lr);
  expect(ref[1].lr).not.toBe(ref[0].lr);
  // the compressor-only phase runs no decoder (no map dropout or noise is drawn for it)
  expect(ref.map((m) => m.effnet_cond === undefined)).toEqual([true, true, false, false, false]);
  const head = (out: string, step: number, name: string) =>
    fs.readFileSync(
      path.join(
        out,
        'checkpoints',
        `step-${String(step).padStart(8, '0')}`,
        name,
        'diffusion_pytorch_model.safetensors',
      ),
    );
  const cut = path.join(tmp, 'words-cut');
  await run(cut, 2);
  const resumed = await run(cut);
  expect(resumed.map((m) => [m.word_loss, m.patch_loss])).toEqual(ref.slice(2).map((m) => [m.word_loss, m.patch_loss]));
  for (const name of ['effnet_words', 'effnet_patches'])
    expect(head(cut, 4, name).equals(head(path.join(tmp, 'words-ref'), 4, name))).toBe(true);
  // the patch head's weights depend on the patch side, so every phase that trains the compressor must give the same
  cfg.phases = [cfg.phases[0], { ...cfg.phases[1], effnet_size: 6 }];
  expect(() =>
    new StageBTrainer({
      config: cfg,
      data,
      out: path.join(tmp, 'words-sides'),
      progress: 'none',
      log: () => undefined,
    }).init(),
  ).toThrow(
    /objective\.effnet_patches: the phases that train the compressor give patch sides 8, 6; they must share one/,
  );
});

test('the patch targets: each map cell gets its own patch of the input, rows, then columns, then RGB', () => {
  // a 1×4×6×3 input whose value encodes (row, column, channel), cut into 2×2 patches under a 2×3 map
  const input = tf.tensor4d(
    Array.from({ length: 4 * 6 * 3 }, (_, i) => i),
    [1, 4, 6, 3],
  );
  const t = patchTargets(input, 2);
  expect(t.shape).toEqual([1, 2, 3, 12]);
  const v = (y: number, x: number, c: number) => (y * 6 + x) * 3 + c;
  const cell = t.arraySync()[0][1][2];
  // cell (1, 2) covers rows 2–3 and columns 4–5
  expect(cell).toEqual([2, 3].flatMap((y) => [4, 5].flatMap((x) => [0, 1, 2].map((c) => v(y, x, c)))));
  expect(() => patchTargets(input, 4)).toThrow(/input 4×6 is not a whole number of 4×4 patches/);
  tf.dispose([input, t]);
});

test('the caption-word head starts every word at −log(buckets); its targets have one bucket per token id', () => {
  const h = new CaptionWordHead(4, 32);
  h.init(new Generator(1));
  expect(Array.from(h.proj.bias!.value.dataSync())).toEqual(new Array(32).fill(Math.fround(-Math.log(32))));
  h.dispose();
  const tok = CLIPTokenizer.fromPretrained(
    path.resolve(__dirname, '../packages/wuerstchen/models/wuerstchen-tiny/wuerstchen/tokenizer'),
  );
  const ids = tok.encode('a red circle');
  const t = captionWordTargets(tok, ['a red circle', ''], 1000);
  const rows = t.arraySync();
  t.dispose();
  expect(rows[0].flatMap((v, i) => (v === 1 ? [i] : []))).toEqual(
    [...new Set(ids.map((id) => id % 1000))].sort((a, b) => a - b),
  );
  expect(rows[1].every((v) => v === 0)).toBe(true);
});
