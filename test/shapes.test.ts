/**
 * The shapes world of the bundled model: the caption grammar, the held-out pairs, the renderer, the
 * pixel judge (it must read back every attribute of rendered scenes) and `wuerstchen-train make-shapes`.
 */
import * as fs from 'fs';
import * as path from 'path';
import { Generator } from 'wuerstchen';
import {
  COLOURS,
  HELD_OUT_PAIRS,
  POSITIONS,
  SHAPES,
  SIZES,
  isHeldOut,
  judgeImage,
  parseCaption,
  randomScene,
  renderScene,
  sceneCaption,
} from 'wuerstchen/internal';
import { makeShapes } from '@wuerstchen/train';
import { decodeImage } from '@wuerstchen/train/internal';
import { main as trainMain } from '../packages/train/src/cli';
import { useTempDir } from './helpers/tmp';

const tmpDir = useTempDir('shapes-');

test('captions follow the grammar exactly and parse back', () => {
  const rng = new Generator(5);
  for (let i = 0; i < 500; i++) {
    const s = randomScene(rng, 'any');
    const caption = sceneCaption(s);
    expect(caption).toMatch(
      /^a (small|large) \w+ (circle|square|triangle) (on the left|on the right|at the top|at the bottom|in the middle) on a \w+ background$/,
    );
    expect(parseCaption(caption)).toEqual(s);
    expect(s.background).not.toBe(s.colour);
  }
  expect(parseCaption('a large red circle in the middle on a red background')).toBeNull();
  expect(parseCaption('a photo of a cat')).toBeNull();
  expect(COLOURS.length * SHAPES.length * SIZES.length * POSITIONS.length).toBe(240);
});

test('held-out pairs never occur in training draws, and only they occur in held-out draws', () => {
  expect(HELD_OUT_PAIRS).toHaveLength(6);
  const rng = new Generator(6);
  const seen = new Set<string>();
  for (let i = 0; i < 3000; i++) {
    const s = randomScene(rng, 'exclude');
    expect(isHeldOut(s.colour, s.shape)).toBe(false);
    seen.add(`${s.colour} ${s.shape}`);
  }
  expect(seen.size).toBe(8 * 3 - 6);
  for (let i = 0; i < 200; i++) {
    const s = randomScene(rng, 'only');
    expect(isHeldOut(s.colour, s.shape)).toBe(true);
  }
});

test('the judge reads every attribute of rendered scenes back from the pixels', () => {
  const rng = new Generator(7);
  const attrs = ['background', 'colour', 'shape', 'position', 'size'] as const;
  for (let i = 0; i < 300; i++) {
    const s = randomScene(rng, 'any');
    const j = judgeImage(renderScene(s, rng, { side: 64 }), 64, 64, 3);
    for (const a of attrs) expect([a, j[a]]).toEqual([a, s[a]]);
  }
});

test('the judge finds no shape in a flat picture and accepts RGBA', () => {
  const rgba = new Uint8Array(32 * 32 * 4);
  for (let i = 0; i < 32 * 32; i++) rgba.set([40, 80, 220, 255], i * 4);
  const j = judgeImage(rgba, 32, 32, 4);
  expect(j.background).toBe('blue');
  expect(j.colour).toBeNull();
  expect(j.shape).toBeNull();
});

test('make-shapes writes reproducible PNG + caption pairs and shards, and rejects bad arguments', async () => {
  const dir = tmpDir();
  const a = path.join(dir, 'a');
  const b = path.join(dir, 'b');
  makeShapes({ out: a, n: 12, seed: 3 });
  makeShapes({ out: b, n: 12, seed: 3 });
  const files = fs.readdirSync(a).sort();
  expect(files).toHaveLength(24);
  for (const f of files) expect(fs.readFileSync(path.join(a, f))).toEqual(fs.readFileSync(path.join(b, f)));
  const png = files.find((f) => f.endsWith('.png'))!;
  const img = decodeImage(fs.readFileSync(path.join(a, png)));
  expect([img.width, img.height]).toEqual([64, 64]);
  const caption = fs.readFileSync(path.join(a, png.replace('.png', '.txt')), 'utf8').trim();
  const scene = parseCaption(caption)!;
  const bytes = Uint8Array.from(img.data, (v) => Math.round(v * 255));
  expect(judgeImage(bytes, 64, 64, 3)).toMatchObject({
    background: scene.background,
    colour: scene.colour,
    shape: scene.shape,
  });

  expect(
    await trainMain([
      'make-shapes',
      '--out',
      path.join(dir, 'shards'),
      '--n',
      '10',
      '--shards',
      '2',
      '--held-out',
      'only',
    ]),
  ).toBe(0);
  expect(fs.readdirSync(path.join(dir, 'shards')).sort()).toEqual(['shapes-0000.tar', 'shapes-0001.tar']);
  expect(await trainMain(['make-shapes', '--out', path.join(dir, 'x'), '--n', 'ten'])).toBe(2);
  expect(await trainMain(['make-shapes', '--out', path.join(dir, 'x'), '--n', '4', '--held-out', 'some'])).toBe(2);
  expect(await trainMain(['make-shapes', '--n', '4'])).toBe(2);
});
