/**
 * Training feedback: the summary a run ends with, a finished run resumed, the warnings for a missing trained
 * Stage A (Stage B) or compressor (Stage C), and labelled preview grids at least 512 px wide.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { StageBTrainer, StageCTrainer, loadConfig } from '@wuerstchen/train';
import { decodeImage, makeToyDataset, modelArgs, readModelConfig } from '@wuerstchen/train/internal';
import { main } from '../packages/train/src/cli';
import { CHAR_HEIGHT, CHAR_WIDTH, drawText, wrapText } from '../packages/train/src/data/font';
import { MIN_GRID_WIDTH, makeGrid } from '../packages/train/src/data/grid';
import { RGBImage } from '../packages/train/src/data/image';
import { GOLDEN } from './helpers/shared';
import { useTempDir } from './helpers/tmp';

const CONFIGS = path.resolve(__dirname, '../configs');
const BLACK: [number, number, number] = [0, 0, 0];

beforeAll(async () => {
  await tf.setBackend('cpu');
});

/** Runs the train CLI in-process with stderr captured. */
async function cli(argv: string[]): Promise<{ code: number; err: string }> {
  let err = '';
  const spy = jest
    .spyOn(process.stderr, 'write')
    .mockImplementation((s: string | Uint8Array) => ((err += s.toString()), true));
  try {
    return { code: await main(argv), err };
  } finally {
    spy.mockRestore();
  }
}

const white = (width: number, height: number): RGBImage => ({
  width,
  height,
  data: new Float32Array(width * height * 3).fill(1),
});
const solid = (side: number, rgb: [number, number, number]): RGBImage => ({
  width: side,
  height: side,
  data: Float32Array.from({ length: side * side * 3 }, (_, i) => rgb[i % 3]),
});
const pixel = (img: RGBImage, x: number, y: number) =>
  Array.from(img.data.subarray((y * img.width + x) * 3, (y * img.width + x) * 3 + 3));
/** Rows [y, y + h) of `img`. */
const band = (img: RGBImage, y: number, h: number) =>
  Array.from(img.data.subarray(y * img.width * 3, (y + h) * img.width * 3));

describe('preview grids', () => {
  test('the font has a distinct glyph for every printable character', () => {
    const printable = Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i));
    const drawn = printable.map((ch) => {
      const img = white(CHAR_WIDTH, CHAR_HEIGHT);
      drawText(img, 0, 0, ch, BLACK);
      return band(img, 0, CHAR_HEIGHT).join();
    });
    expect(new Set(drawn).size).toBe(95);
    // 'T': the top row inked across, the stem down the middle column
    const t = white(CHAR_WIDTH, CHAR_HEIGHT);
    drawText(t, 0, 0, 'T', BLACK);
    expect([0, 1, 2, 3, 4].map((x) => pixel(t, x, 0)[0])).toEqual([0, 0, 0, 0, 0]);
    expect([1, 2, 3, 4, 5, 6].map((y) => [pixel(t, 1, y)[0], pixel(t, 2, y)[0]])).toEqual(Array(6).fill([1, 0]));
  });

  test('captions wrap at spaces; long words are cut', () => {
    expect(wrapText('a large red circle', 8)).toEqual(['a large', 'red', 'circle']);
    expect(wrapText('abcdefghij', 4)).toEqual(['abcd', 'efgh', 'ij']);
  });

  test('small images are scaled to a grid at least 512 px wide, under their row label and over their captions', () => {
    const red = solid(8, [1, 0, 0]);
    const blue = solid(8, [0, 0, 1]);
    const grid = makeGrid([
      { label: 'targets', images: [red, blue] },
      { label: 'samples', images: [blue, red], captions: ['a red square', 'a blue square'] },
    ]);
    // two 8 px cells, scaled ×32 to 256 px, with 4 px borders
    expect(grid.width).toBe(2 * 256 + 3 * 4);
    expect(grid.width).toBeGreaterThanOrEqual(MIN_GRID_WIDTH);
    const label = white(grid.width, CHAR_HEIGHT + 4);
    drawText(label, 4, 4, 'targets', BLACK);
    expect(band(grid, 0, CHAR_HEIGHT + 4)).toEqual(band(label, 0, CHAR_HEIGHT + 4));
    const firstTop = 4 + CHAR_HEIGHT + 4;
    expect(pixel(grid, 4, firstTop)).toEqual([1, 0, 0]);
    expect(pixel(grid, 4 + 255, firstTop + 255)).toEqual([1, 0, 0]);
    expect(pixel(grid, 4 + 256 + 4, firstTop)).toEqual([0, 0, 1]);
    // the second row: label, cells, then each caption under its cell
    const secondLabel = firstTop + 256 + 4;
    const secondTop = secondLabel + CHAR_HEIGHT + 4;
    expect(pixel(grid, 4, secondTop)).toEqual([0, 0, 1]);
    const captions = white(grid.width, CHAR_HEIGHT);
    drawText(captions, 4, 0, 'a red square', BLACK);
    drawText(captions, 4 + 256 + 4, 0, 'a blue square', BLACK);
    expect(band(grid, secondTop + 256 + 4, CHAR_HEIGHT)).toEqual(band(captions, 0, CHAR_HEIGHT));
    expect(grid.height).toBe(secondTop + 256 + 4 + CHAR_HEIGHT + 4);
  });
});

describe('wuerstchen-train: summary, finished runs', () => {
  const tmp = useTempDir('train-cli-');

  /** The tiny Stage A on 16 px crops: 4 updates, a checkpoint and a preview grid every 2. */
  function setup(): { data: string; config: string } {
    const data = path.join(tmp(), 'data');
    makeToyDataset(data, 4, { size: [24, 24] });
    const raw = JSON.parse(fs.readFileSync(path.join(CONFIGS, 'stage-a-tiny.json'), 'utf8')) as {
      phases: Record<string, unknown>[];
    };
    const config = path.join(tmp(), 'a.json');
    const phase = { ...raw.phases[0], steps: 4, batch_size: 2, image_size: 16 };
    fs.writeFileSync(
      config,
      JSON.stringify({ ...raw, phases: [phase], checkpoint_every: 2, sample_every: 2, log_every: 2 }),
    );
    return { data, config };
  }
  const args = (s: { data: string; config: string }, out: string) => [
    'stage-a',
    '--config',
    s.config,
    '--data',
    s.data,
    '--out',
    out,
    '--backend',
    'cpu',
    '--progress',
    'plain',
  ];

  test('a run ends with its checkpoint, samples, metrics and time; preview grids are labelled and 512 px wide', async () => {
    const s = setup();
    const out = path.join(tmp(), 'run');
    const r = await cli(args(s, out));
    expect(r.code).toBe(0);
    expect(r.err).toMatch(/^A1-32px: step 2\/4 {2}.*(it\/s|s\/it) {2}ETA \d+:\d\d {2}loss \d/m);
    expect(r.err).toMatch(/^A1-32px: 4 steps in \d+\.\d\d s/m);
    expect(r.err).toContain(
      [
        'wuerstchen-train: finished: step 4 of 4',
        `  checkpoint  ${path.resolve(out, 'checkpoints', 'step-00000004')}`,
        `  metrics     ${path.join(out, 'metrics.jsonl')}`,
        `  samples     ${path.join(out, 'samples')} (2 preview grids)`,
      ].join('\n'),
    );
    expect(r.err).toMatch(/\n {2}time {8}\d+:\d\d for 4 steps\n$/);
    const grid = decodeImage(fs.readFileSync(path.join(out, 'samples', 'step-00000004.png')));
    expect(grid.width).toBeGreaterThanOrEqual(512);
    const label = white(grid.width, CHAR_HEIGHT + 4);
    drawText(label, 4, 4, 'training images (step 4)', BLACK);
    expect(band(grid, 0, CHAR_HEIGHT + 4)).toEqual(band(label, 0, CHAR_HEIGHT + 4));
  });

  test('resuming a finished run says so and exits 0 without training; --max-steps says how to continue', async () => {
    const s = setup();
    const out = path.join(tmp(), 'run');
    expect((await cli(args(s, out))).code).toBe(0);
    const checkpoints = fs.readdirSync(path.join(out, 'checkpoints'));
    const metrics = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8');
    const again = await cli([...args(s, out), '--resume']);
    expect(again.code).toBe(0);
    expect(again.err).toContain(
      `wuerstchen-train: the run in ${out} is already finished (step 4 of 4); nothing to train\n`,
    );
    expect(again.err).toMatch(/\n {2}time {8}\d+:\d\d for 0 steps \(resumed at step 4\)\n$/);
    expect(again.err).not.toMatch(/steps? in/);
    expect(fs.readdirSync(path.join(out, 'checkpoints'))).toEqual(checkpoints);
    expect(fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8')).toBe(metrics);

    const partial = path.join(tmp(), 'partial');
    const stopped = await cli([...args(s, partial), '--max-steps', '2']);
    expect(stopped.code).toBe(0);
    expect(stopped.err).toContain(
      `wuerstchen-train: stopped at --max-steps: step 2 of 4 (continue with --resume --out ${partial})\n`,
    );
  });

  test('an unknown or unavailable backend is an argument problem: exit 2, one line', async () => {
    const s = setup();
    const r = await cli([...args(s, path.join(tmp(), 'run')).slice(0, -4), '--backend', 'tensorflow']);
    expect(r.code).toBe(2);
    expect(r.err).toBe('wuerstchen-train: backend "tensorflow" is not available: tensorflow (not installed)\n');
  });
});

describe('Stage B and C: warnings for untrained frozen networks, labelled previews', () => {
  const tmp = useTempDir('train-warn-');

  /** Writes the trainer's preview grid and checks its size and first row label. */
  function checkPreview(trainer: StageBTrainer | StageCTrainer, label: string): void {
    const file = path.join(tmp(), 'preview.png');
    (trainer as any).preview(file);
    const grid = decodeImage(fs.readFileSync(file));
    expect(grid.width).toBeGreaterThanOrEqual(512);
    const expected = white(grid.width, CHAR_HEIGHT + 4);
    drawText(expected, 4, 4, label, BLACK);
    expect(band(grid, 0, CHAR_HEIGHT + 4)).toEqual(band(expected, 0, CHAR_HEIGHT + 4));
  }

  test('Stage B without a trained Stage A warns; its preview is labelled', () => {
    const data = path.join(tmp(), 'data');
    makeToyDataset(data, 2);
    const b = loadConfig(path.join(CONFIGS, 'stage-b-tiny.json'), 'b');
    // the hub's tiny Stage A architecture, seeded instead of loaded
    b.vqgan = { config: modelArgs(readModelConfig(path.join(GOLDEN, 'hub', 'wuerstchen', 'vqgan'))) };
    Object.assign(b, { sample_steps: 2, sample_images: 2 });
    const log: string[] = [];
    const trainer = new StageBTrainer({
      config: b,
      data,
      out: path.join(tmp(), 'b'),
      progress: 'none',
      log: (l) => log.push(l),
    });
    try {
      trainer.init();
      expect(log).toContain(
        'warning: no trained Stage A given (--vqgan, or vqgan.from in the config); using a seeded random one — train Stage A first and pass its run folder',
      );
      checkPreview(trainer, 'training images (step 0)');
    } finally {
      trainer.dispose();
    }
  });

  test('Stage C without a trained compressor warns; its preview is labelled', () => {
    const data = path.join(tmp(), 'data');
    makeToyDataset(data, 2);
    const c = loadConfig(path.join(CONFIGS, 'stage-c-tiny.json'), 'c');
    Object.assign(c, { sample_steps: 2, sample_images: 2, sample_prompts: ['a red square', ''] });
    const log: string[] = [];
    const trainer = new StageCTrainer({
      config: c,
      data,
      out: path.join(tmp(), 'c'),
      progress: 'none',
      log: (l) => log.push(l),
    });
    try {
      trainer.init();
      expect(log).toContain(
        'warning: no trained semantic compressor given (--effnet, or effnet.from in the config); using a seeded random one — train Stage B first and pass its run folder',
      );
      // the text-use probe the preview logs first runs 64 samples; the grid is what is under test here
      jest.spyOn(trainer, 'textGap').mockReturnValue({ correct: 1, shuffled: 2 });
      checkPreview(trainer, 'compressor latents of training images, false colour (step 0)');
    } finally {
      trainer.dispose();
    }
  });
});
