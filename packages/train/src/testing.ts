/**
 * A small synthetic image–caption dataset (coloured shapes on a background) for tests, demos
 * and timing: `makeToyDataset(dir, n)` writes PNG/JPEG images with same-named .txt captions.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as jpeg from 'jpeg-js';
import { PNG } from 'pngjs';
import { Generator } from 'wuerstchen';
import { writeTar } from './data/tar';

const COLOURS: [string, [number, number, number]][] = [
  ['red', [220, 30, 30]],
  ['green', [30, 200, 60]],
  ['blue', [40, 60, 220]],
  ['yellow', [230, 210, 40]],
];
const SHAPES = ['square', 'circle', 'stripe'];

export interface ToyImage {
  name: string;
  caption: string;
  width: number;
  height: number;
  rgba: Buffer;
}

export function toyImage(i: number, seed = 0, size?: [number, number]): ToyImage {
  const rng = new Generator(seed * 7919 + i);
  const [cname, col] = COLOURS[i % COLOURS.length];
  const shape = SHAPES[Math.floor(i / COLOURS.length) % SHAPES.length];
  const sizes: [number, number][] = [
    [64, 64],
    [72, 56],
    [56, 80],
    [96, 64],
  ];
  const [w, h] = size ?? sizes[i % sizes.length];
  const bg = [240, 240, 235].map((v) => v - rng.int(20));
  const rgba = Buffer.alloc(w * h * 4);
  const cx = w / 2 + (rng.nextFloat() - 0.5) * w * 0.2;
  const cy = h / 2 + (rng.nextFloat() - 0.5) * h * 0.2;
  const r = Math.min(w, h) * 0.3;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let inside = false;
      if (shape === 'square') inside = Math.abs(x - cx) < r && Math.abs(y - cy) < r;
      else if (shape === 'circle') inside = (x - cx) ** 2 + (y - cy) ** 2 < r * r;
      else inside = Math.abs(y - cy) < r * 0.35;
      const c = inside ? col : bg;
      const o = (y * w + x) * 4;
      rgba[o] = c[0];
      rgba[o + 1] = c[1];
      rgba[o + 2] = c[2];
      rgba[o + 3] = 255;
    }
  }
  return { name: `img${String(i).padStart(4, '0')}`, caption: `a ${cname} ${shape}`, width: w, height: h, rgba };
}

export function encodeToy(img: ToyImage, format: 'png' | 'jpg'): Buffer {
  if (format === 'jpg') return jpeg.encode({ data: img.rgba, width: img.width, height: img.height }, 95).data;
  const png = new PNG({ width: img.width, height: img.height });
  img.rgba.copy(png.data);
  return PNG.sync.write(png);
}

export interface ToyDatasetOptions {
  seed?: number;
  /** every k-th image is a JPEG (0 = none). */
  jpegEvery?: number;
  /** also write a corrupt image and an image without caption (to exercise the warnings). */
  withBroken?: boolean;
  /** fixed image size. */
  size?: [number, number];
}

/** Write `n` images + captions into `dir` (created). Returns the captions by file name. */
export function makeToyDataset(dir: string, n: number, opts: ToyDatasetOptions = {}): Map<string, string> {
  fs.mkdirSync(dir, { recursive: true });
  const out = new Map<string, string>();
  for (let i = 0; i < n; i++) {
    const img = toyImage(i, opts.seed ?? 0, opts.size);
    const fmt = opts.jpegEvery && i % opts.jpegEvery === opts.jpegEvery - 1 ? 'jpg' : 'png';
    fs.writeFileSync(path.join(dir, `${img.name}.${fmt}`), encodeToy(img, fmt));
    fs.writeFileSync(path.join(dir, `${img.name}.txt`), img.caption + '\n');
    out.set(`${img.name}.${fmt}`, img.caption);
  }
  if (opts.withBroken) {
    fs.writeFileSync(path.join(dir, 'broken.png'), Buffer.from('\x89PNG\r\n\x1a\nnot really a png'));
    fs.writeFileSync(path.join(dir, 'broken.txt'), 'a broken image\n');
    fs.writeFileSync(path.join(dir, 'nocaption.png'), encodeToy(toyImage(0, 1), 'png'));
  }
  return out;
}

/** Write the same kind of samples as WebDataset shards (`key.png` + `key.txt`). */
export function makeToyShards(dir: string, shards: number, perShard: number, opts: ToyDatasetOptions = {}): string[] {
  fs.mkdirSync(dir, { recursive: true });
  const files: string[] = [];
  let i = 0;
  for (let s = 0; s < shards; s++) {
    const entries: [string, Buffer][] = [];
    for (let k = 0; k < perShard; k++, i++) {
      const img = toyImage(i, opts.seed ?? 0, opts.size);
      const fmt = opts.jpegEvery && i % opts.jpegEvery === opts.jpegEvery - 1 ? 'jpg' : 'png';
      entries.push([`${img.name}.${fmt}`, encodeToy(img, fmt)], [`${img.name}.txt`, Buffer.from(img.caption)]);
    }
    const f = path.join(dir, `shard-${String(s).padStart(3, '0')}.tar`);
    writeTar(f, entries);
    files.push(f);
  }
  return files;
}
