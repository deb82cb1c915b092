/**
 * Image decoding (PNG via pngjs, JPEG via jpeg-js) and the torchvision-style transforms the
 * trainers use, on float32 HWC RGB images in [0, 1]:
 * `Resize(size)` (short side, bilinear, antialias=True), `CenterCrop`, `RandomCrop`,
 * `RandomHorizontalFlip`, `Normalize(mean, std)`.
 */
import { PNG } from 'pngjs';
import * as jpeg from 'jpeg-js';
import { AAWeights, antialiasWeights } from '@wuerstchen/core/internal';
import { Generator } from 'wuerstchen';
import { IMAGENET_MEAN, IMAGENET_STD } from 'wuerstchen/internal';

/** Float32 RGB image, row-major HWC, values in [0, 1]. */
export interface RGBImage {
  width: number;
  height: number;
  data: Float32Array;
}

export class ImageDecodeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ImageDecodeError';
  }
}

/** An image (or its file) over the size limit, found before it is decoded. */
export class ImageTooLargeError extends ImageDecodeError {
  constructor(message: string) {
    super(message);
    this.name = 'ImageTooLargeError';
  }
}

/** 8192 × 8192; decoding takes about 16 bytes per pixel (RGBA bytes, then float RGB), ~1 GiB here. */
export const DEFAULT_MAX_IMAGE_PIXELS = 8192 * 8192;

/** The most bytes an encoded image of `maxPixels` can need (uncompressed 16-bit RGBA), plus room for metadata. */
export const maxEncodedImageBytes = (maxPixels: number): number => 8 * maxPixels + (1 << 20);

const isPng = (b: Buffer): boolean =>
  b.length >= 8 && b.readUInt32BE(0) === 0x89504e47 && b.readUInt32BE(4) === 0x0d0a1a0a;
const isJpeg = (b: Buffer): boolean => b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff;

/** Width and height from a JPEG's first frame header (SOFn), walking the marker segments before it. */
function jpegDimensions(b: Buffer): { width: number; height: number } {
  let p = 2;
  while (p + 4 <= b.length) {
    if (b[p] !== 0xff) throw new ImageDecodeError(`JPEG: no marker at byte ${p}`);
    const marker = b[p + 1];
    if (marker === 0xff) {
      p++; // fill byte
      continue;
    }
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
      p += 2; // standalone markers have no length
      continue;
    }
    if (marker === 0xd9 || marker === 0xda) break; // end of image / start of scan before any frame header
    const len = b.readUInt16BE(p + 2);
    if (len < 2) throw new ImageDecodeError(`JPEG: segment length ${len} at byte ${p}`);
    const sof = marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc;
    if (sof) {
      if (len < 7 || p + 9 > b.length) throw new ImageDecodeError('JPEG: truncated frame header');
      return { height: b.readUInt16BE(p + 5), width: b.readUInt16BE(p + 7) };
    }
    p += 2 + len;
  }
  throw new ImageDecodeError('JPEG: no frame header before the image data');
}

/** The declared size of a PNG (IHDR) or JPEG (SOFn), read without decoding anything. */
export function imageDimensions(bytes: Buffer): { format: 'png' | 'jpeg'; width: number; height: number } {
  if (isPng(bytes)) {
    if (bytes.length < 24 || bytes.toString('latin1', 12, 16) !== 'IHDR')
      throw new ImageDecodeError('PNG: the IHDR header is missing');
    return { format: 'png', width: bytes.readUInt32BE(16), height: bytes.readUInt32BE(20) };
  }
  if (isJpeg(bytes)) return { format: 'jpeg', ...jpegDimensions(bytes) };
  throw new ImageDecodeError('not a PNG or JPEG file');
}

/**
 * Decode PNG or JPEG bytes (detected by signature) to RGB float in [0, 1]; alpha is dropped (PIL
 * `convert('RGB')`). The declared width × height is checked against `maxPixels` first, so an
 * oversized image costs no memory.
 */
export function decodeImage(bytes: Buffer | Uint8Array, maxPixels = DEFAULT_MAX_IMAGE_PIXELS): RGBImage {
  const b = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dims = imageDimensions(b);
  if (!dims.width || !dims.height) throw new ImageDecodeError('image has no pixels');
  if (dims.width * dims.height > maxPixels) {
    throw new ImageTooLargeError(
      `${dims.width}×${dims.height} = ${dims.width * dims.height} pixels, over the limit of ${maxPixels} (max_image_pixels)`,
    );
  }
  let rgba: Uint8Array;
  let width: number;
  let height: number;
  let channels: number;
  try {
    if (dims.format === 'png') {
      const png = PNG.sync.read(b);
      rgba = png.data;
      width = png.width;
      height = png.height;
      channels = 4;
    } else {
      const img = jpeg.decode(b, {
        useTArray: true,
        formatAsRGBA: false,
        maxMemoryUsageInMB: 1024,
        maxResolutionInMP: Math.max(1, maxPixels / 1e6),
      });
      rgba = img.data;
      width = img.width;
      height = img.height;
      channels = 3;
    }
  } catch (e) {
    // jpeg-js throws plain strings for some malformed streams
    throw new ImageDecodeError(e instanceof Error ? e.message : String(e));
  }
  if (width !== dims.width || height !== dims.height)
    throw new ImageDecodeError(
      `decoded size ${width}×${height} differs from the declared ${dims.width}×${dims.height}`,
    );
  const data = new Float32Array(width * height * 3);
  for (let i = 0, j = 0; i < width * height; i++, j += channels) {
    data[i * 3] = rgba[j] / 255;
    data[i * 3 + 1] = rgba[j + 1] / 255;
    data[i * 3 + 2] = rgba[j + 2] / 255;
  }
  return { width, height, data };
}

/** Encode float RGB (clamped to [0, 1]) as PNG bytes. */
export function encodePNG(img: RGBImage): Buffer {
  const png = new PNG({ width: img.width, height: img.height });
  for (let i = 0; i < img.width * img.height; i++) {
    for (let c = 0; c < 3; c++) png.data[i * 4 + c] = Math.round(Math.min(1, Math.max(0, img.data[i * 3 + c])) * 255);
    png.data[i * 4 + 3] = 255;
  }
  return PNG.sync.write(png);
}

/** Triangle filter of the bilinear resize; zero outside ±1. */
const triangle = (x: number): number => Math.max(0, 1 - Math.abs(x));

/** One axis of PyTorch's antialiased bilinear resize (align_corners=False): the triangle filter widened by the downscale factor (PIL-style). */
const bilinearAAWeights = (nIn: number, nOut: number): AAWeights =>
  antialiasWeights(nIn, nOut, nIn / nOut, triangle, 1);

/** Resize to exactly `outW × outH` (bilinear, antialias; separable, width first). */
export function resize(img: RGBImage, outW: number, outH: number): RGBImage {
  if (outW === img.width && outH === img.height) return img;
  // width pass
  const wx = bilinearAAWeights(img.width, outW);
  const tmp = new Float32Array(img.height * outW * 3);
  for (let y = 0; y < img.height; y++) {
    for (let x = 0; x < outW; x++) {
      let r = 0,
        g = 0,
        b = 0;
      const s = wx.start[x];
      for (let k = 0; k < wx.size[x]; k++) {
        const wt = wx.w[x * wx.maxSize + k];
        const p = (y * img.width + s + k) * 3;
        r += wt * img.data[p];
        g += wt * img.data[p + 1];
        b += wt * img.data[p + 2];
      }
      const o = (y * outW + x) * 3;
      tmp[o] = r;
      tmp[o + 1] = g;
      tmp[o + 2] = b;
    }
  }
  const wy = bilinearAAWeights(img.height, outH);
  const out = new Float32Array(outH * outW * 3);
  for (let y = 0; y < outH; y++) {
    const s = wy.start[y];
    for (let k = 0; k < wy.size[y]; k++) {
      const wt = wy.w[y * wy.maxSize + k];
      const rowIn = (s + k) * outW * 3;
      const rowOut = y * outW * 3;
      for (let i = 0; i < outW * 3; i++) out[rowOut + i] += wt * tmp[rowIn + i];
    }
  }
  return { width: outW, height: outH, data: out };
}

/** torchvision `Resize(size)`: the short side becomes `size`, the long side `int(size·long/short)`. */
export function resizeShortSide(img: RGBImage, size: number): RGBImage {
  const { width: w, height: h } = img;
  if (w <= h) return resize(img, size, Math.trunc((size * h) / w));
  return resize(img, Math.trunc((size * w) / h), size);
}

/** Resize so that the image covers `w × h` (for aspect-ratio buckets): scale = max(w/W, h/H). */
export function resizeToCover(img: RGBImage, w: number, h: number): RGBImage {
  const scale = Math.max(w / img.width, h / img.height);
  return resize(img, Math.max(w, Math.round(img.width * scale)), Math.max(h, Math.round(img.height * scale)));
}

export function crop(img: RGBImage, left: number, top: number, w: number, h: number): RGBImage {
  if (left < 0 || top < 0 || left + w > img.width || top + h > img.height) {
    throw new Error(`crop ${w}x${h}+${left}+${top} is outside the ${img.width}x${img.height} image`);
  }
  const out = new Float32Array(w * h * 3);
  for (let y = 0; y < h; y++)
    out.set(img.data.subarray(((top + y) * img.width + left) * 3, ((top + y) * img.width + left + w) * 3), y * w * 3);
  return { width: w, height: h, data: out };
}

/** torchvision `CenterCrop`: offsets `round((H − h)/2)`. */
export function centerCrop(img: RGBImage, w: number, h: number): RGBImage {
  return crop(img, Math.round((img.width - w) / 2), Math.round((img.height - h) / 2), w, h);
}

/** torchvision `RandomCrop`: uniform integer offsets, drawn from `rng`. */
export function randomCrop(img: RGBImage, w: number, h: number, rng: Generator): RGBImage {
  return crop(img, rng.int(img.width - w + 1), rng.int(img.height - h + 1), w, h);
}

export function hflip(img: RGBImage): RGBImage {
  const { width: w, height: h } = img;
  const out = new Float32Array(img.data.length);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const s = (y * w + x) * 3;
      const d = (y * w + (w - 1 - x)) * 3;
      out[d] = img.data[s];
      out[d + 1] = img.data[s + 1];
      out[d + 2] = img.data[s + 2];
    }
  }
  return { width: w, height: h, data: out };
}

/** `Normalize(mean, std)` per channel (returns a new array). */
export function normalize(img: RGBImage, mean = IMAGENET_MEAN, std = IMAGENET_STD): RGBImage {
  const out = new Float32Array(img.data.length);
  for (let i = 0; i < img.data.length; i += 3) {
    for (let c = 0; c < 3; c++) out[i + c] = (img.data[i + c] - mean[c]) / std[c];
  }
  return { width: img.width, height: img.height, data: out };
}

/** Nearest-neighbour upscale by an integer factor (for showing small latents). */
export function upscaleNearest(img: RGBImage, factor: number): RGBImage {
  const w = img.width * factor;
  const h = img.height * factor;
  const out = new Float32Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const s = (Math.floor(y / factor) * img.width + Math.floor(x / factor)) * 3;
      out.set(img.data.subarray(s, s + 3), (y * w + x) * 3);
    }
  }
  return { width: w, height: h, data: out };
}
