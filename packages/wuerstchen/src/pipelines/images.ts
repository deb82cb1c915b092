/**
 * Images out of the pipelines: NHWC float tensors in [0, 1] → 8-bit RGB(A) images and PNG bytes.
 * Conversion is diffusers' `numpy_to_pil`: `round(x·255)` in float32 with numpy's round half to
 * even, then uint8. Runs in browsers too (bundlers take pngjs's own browser build), so a page
 * produces the same PNG bytes as the CLI.
 */
import * as tf from '@tensorflow/tfjs';
import { PNG } from 'pngjs';

/** Round half to even (numpy `round`), for finite values. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x - Math.trunc(x)) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** float in [0, 1] → byte, as `(x·255).round().astype(uint8)` on float32 (values are clamped to [0, 255] first). */
export function toByte(x: number): number {
  const v = roundHalfEven(Math.fround(Math.fround(x) * 255));
  return v < 0 || Number.isNaN(v) ? 0 : v > 255 ? 255 : v;
}

export interface RawImage {
  width: number;
  height: number;
  /** 1 (gray), 3 (RGB) or 4 (RGBA). */
  channels: number;
  /** row-major HWC bytes. */
  data: Uint8Array;
}

/**
 * An image holding NaN or ±Infinity (diverged or corrupt weights). Written as a PNG it would silently come out
 * black, so it is an error instead.
 */
export class NonFiniteImageError extends Error {
  constructor(
    /** 0-based index of the first such image. */
    readonly image: number,
    readonly count: number,
    readonly total: number,
  ) {
    super(
      `image ${image + 1} has ${count} of its ${total} values NaN or infinite (the weights are corrupt or the sampling diverged); no PNG written`,
    );
    this.name = 'NonFiniteImageError';
  }
}

/** Splits an NHWC float tensor (values in [0, 1]) into 8-bit images; a non-finite value is a NonFiniteImageError. */
export async function tensorToImages(images: tf.Tensor): Promise<RawImage[]> {
  if (images.rank !== 4) throw new Error(`expected NHWC images [N, H, W, C], got shape [${images.shape}]`);
  const [n, height, width, channels] = images.shape as [number, number, number, number];
  if (![1, 3, 4].includes(channels)) throw new Error(`expected 1, 3 or 4 channels, got ${channels}`);
  const values = (await images.data()) as Float32Array;
  const per = height * width * channels;
  return Array.from({ length: n }, (_, i) => {
    const data = new Uint8Array(per);
    const base = i * per;
    let nonFinite = 0;
    for (let j = 0; j < per; j++) {
      const v = values[base + j];
      if (v - v !== 0) nonFinite++;
      data[j] = toByte(v);
    }
    if (nonFinite > 0) throw new NonFiniteImageError(i, nonFinite, per);
    return { width, height, channels, data };
  });
}

/** Encodes an 8-bit image as PNG (RGB for 3 channels, RGBA for 4, grayscale for 1); deterministic bytes. */
export function encodePng(image: RawImage): Buffer {
  const { width, height, channels, data } = image;
  if (data.length !== width * height * channels)
    throw new Error(`image data has ${data.length} bytes, expected ${width}×${height}×${channels}`);
  const png = new PNG({ width, height });
  const rgba = png.data;
  for (let p = 0; p < width * height; p++) {
    const s = p * channels;
    const d = p * 4;
    if (channels === 1) {
      rgba[d] = rgba[d + 1] = rgba[d + 2] = data[s];
      rgba[d + 3] = 255;
    } else {
      rgba[d] = data[s];
      rgba[d + 1] = data[s + 1];
      rgba[d + 2] = data[s + 2];
      rgba[d + 3] = channels === 4 ? data[s + 3] : 255;
    }
  }
  const colorType = channels === 1 ? 0 : channels === 3 ? 2 : 6;
  return PNG.sync.write(png, { colorType, inputColorType: 6, inputHasAlpha: true, deflateLevel: 9 });
}

/** PNG buffers of each image of an NHWC float tensor in [0, 1]. */
export async function tensorToPng(images: tf.Tensor): Promise<Buffer[]> {
  return (await tensorToImages(images)).map(encodePng);
}

/** Decodes a PNG into 8-bit RGBA (for tests and checks). */
export function decodePng(buffer: Buffer): RawImage {
  const png = PNG.sync.read(buffer);
  return { width: png.width, height: png.height, channels: 4, data: new Uint8Array(png.data) };
}
