/**
 * `wuerstchen-train make-shapes`: writes the procedural shapes dataset (the grammar, palette and
 * held-out pairs of `wuerstchen`'s shapes module) as a folder of PNG + .txt pairs, or as
 * WebDataset shards. Image i is drawn from its own seeded generator, so any subset is reproducible.
 */
import * as fs from 'fs';
import * as path from 'path';
import { PNG } from 'pngjs';
import { Generator } from 'wuerstchen';
import { ShapeScene, randomScene, renderScene, sceneCaption } from 'wuerstchen/internal';
import { deriveSeed } from '../rng';
import { writeTar } from './tar';

export interface MakeShapesOptions {
  out: string;
  n: number;
  seed: number;
  /** image side in pixels (default 64). */
  side?: number;
  /** write this many WebDataset shards instead of a folder (0 = folder). */
  shards?: number;
  /** 'exclude' (training data), 'only' (the held-out pairs) or 'any'. */
  heldOut?: 'exclude' | 'only' | 'any';
  /** shape colours to draw from (default the bundled palette; `EXTRA_PALETTE` names such as pink allowed). */
  colours?: readonly string[];
  onProgress?: (done: number, total: number) => void;
}

export interface ShapeSample {
  key: string;
  scene: ShapeScene;
  caption: string;
  png: Buffer;
}

export function encodeRGB(pixels: Uint8Array, side: number): Buffer {
  const png = new PNG({ width: side, height: side });
  for (let i = 0; i < side * side; i++) {
    png.data[i * 4] = pixels[i * 3];
    png.data[i * 4 + 1] = pixels[i * 3 + 1];
    png.data[i * 4 + 2] = pixels[i * 3 + 2];
    png.data[i * 4 + 3] = 255;
  }
  return PNG.sync.write(png);
}

/** Sample i of the dataset with this seed. */
export function shapeSample(
  i: number,
  seed: number,
  side: number,
  heldOut: MakeShapesOptions['heldOut'] = 'exclude',
  colours?: readonly string[],
): ShapeSample {
  const rng = new Generator(deriveSeed(seed, 'shapes', String(i)));
  const scene = randomScene(rng, heldOut, colours);
  return {
    key: `shape-${String(i).padStart(6, '0')}`,
    scene,
    caption: sceneCaption(scene),
    png: encodeRGB(renderScene(scene, rng, { side }), side),
  };
}

/** Write the dataset; returns the files written (images, or shards). */
export function makeShapes(opts: MakeShapesOptions): string[] {
  const side = opts.side ?? 64;
  if (!Number.isInteger(opts.n) || opts.n < 1 || opts.n > 10_000_000)
    throw new Error(`--n must be an integer in [1, 10000000], got ${opts.n}`);
  if (!Number.isInteger(side) || side < 16 || side > 1024)
    throw new Error(`--side must be an integer in [16, 1024], got ${side}`);
  const shards = opts.shards ?? 0;
  if (!Number.isInteger(shards) || shards < 0 || shards > opts.n)
    throw new Error(`--shards must be an integer in [0, n], got ${shards}`);
  fs.mkdirSync(opts.out, { recursive: true });
  const files: string[] = [];
  if (shards === 0) {
    for (let i = 0; i < opts.n; i++) {
      const s = shapeSample(i, opts.seed, side, opts.heldOut, opts.colours);
      const file = path.join(opts.out, `${s.key}.png`);
      fs.writeFileSync(file, s.png);
      fs.writeFileSync(path.join(opts.out, `${s.key}.txt`), s.caption + '\n');
      files.push(file);
      opts.onProgress?.(i + 1, opts.n);
    }
    return files;
  }
  const per = Math.ceil(opts.n / shards);
  for (let k = 0, i = 0; k < shards; k++) {
    const entries: [string, Buffer][] = [];
    for (; i < Math.min(opts.n, (k + 1) * per); i++) {
      const s = shapeSample(i, opts.seed, side, opts.heldOut, opts.colours);
      entries.push([`${s.key}.png`, s.png], [`${s.key}.txt`, Buffer.from(s.caption)]);
      opts.onProgress?.(i + 1, opts.n);
    }
    const file = path.join(opts.out, `shapes-${String(k).padStart(4, '0')}.tar`);
    const tmp = `${file}.tmp-${process.pid}`;
    writeTar(tmp, entries);
    fs.renameSync(tmp, file);
    files.push(file);
  }
  return files;
}
