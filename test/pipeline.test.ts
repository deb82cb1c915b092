/**
 * Loader and pipelines (diffusers pipeline_wuerstchen_prior.py, pipeline_wuerstchen.py) on the miniature hub folders of shared/golden:
 * folder and file checks, fp16/bf16/sharded weights, prior / decoder / combined pipelines, CFG,
 * seeds, sizes, progress, stage-by-stage loading, PNG output, tensor leaks.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { HostTensor, StateDictError, loadSafetensors, writeSafetensors } from '@wuerstchen/core';
import {
  Generator,
  LoaderError,
  ProgressEvent,
  WuerstchenCombinedPipeline,
  WuerstchenDecoderPipeline,
  WuerstchenPrior,
  WuerstchenPriorPipeline,
  decodePng,
  loadModel,
  prepareModel,
  tensorToPng,
} from 'wuerstchen';
import { checkImageSide, guidance, roundHalfEven, toByte, validImageSides, writeFileAtomic } from 'wuerstchen/internal';
import { GOLDEN } from './helpers/shared';
import { useTempDir } from './helpers/tmp';

const HUB_PRIOR = path.join(GOLDEN, 'hub', 'wuerstchen-prior');
const HUB_DECODER = path.join(GOLDEN, 'hub', 'wuerstchen');

beforeAll(async () => {
  await tf.setBackend('cpu');
});

/** Copies a folder tree (the hub fixtures are a few MB) so a test can break it. */
function copyTree(src: string, dst: string): string {
  fs.cpSync(src, dst, { recursive: true });
  // the shared folder is read-only; the copies must be writable
  const chmod = (p: string) => {
    fs.chmodSync(p, fs.statSync(p).isDirectory() ? 0o755 : 0o644);
    if (fs.statSync(p).isDirectory()) for (const f of fs.readdirSync(p)) chmod(path.join(p, f));
  };
  chmod(dst);
  return dst;
}

function editJson(file: string, edit: (j: Record<string, unknown>) => void): void {
  const j = JSON.parse(fs.readFileSync(file, 'utf8'));
  edit(j);
  fs.writeFileSync(file, JSON.stringify(j, null, 2));
}

const errorOf = (fn: () => unknown): Error => {
  try {
    fn();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected an error');
};

describe('loader', () => {
  const tmp = useTempDir();

  test('fromPretrained checks every component but reads no weights until used', () => {
    const before = tf.memory().numTensors;
    const prior = WuerstchenPriorPipeline.fromPretrained(HUB_PRIOR);
    const decoder = WuerstchenDecoderPipeline.fromPretrained(HUB_DECODER);
    expect(tf.memory().numTensors).toBe(before);
    expect(prior.prior.loaded).toBe(false);
    expect(prior.config).toEqual({ latentMean: 42, latentStd: 1, resolutionMultiple: 42.67 });
    expect(decoder.config.latentDimScale).toBe(10.67);
    expect(decoder.geometry).toEqual({ latentDimScale: 10.67, sizeMultiple: 16, vqScale: 4 });
    expect(decoder.vqScaleFactor).toBeCloseTo(0.3764, 6);
  });

  test('fp16 and bf16 variant files are found and upcast exactly', () => {
    for (const v of ['fp16', 'bf16']) {
      const dir = path.join(GOLDEN, `loader_prior_${v}`);
      // no plain file in the folder: the only variant present is used
      const model = loadModel(dir, 'WuerstchenPrior');
      try {
        const expected = loadSafetensors(path.join(dir, 'expected_float32.safetensors'));
        const got = model.stateDict();
        expect([...got.keys()].sort()).toEqual([...expected.keys()].sort());
        for (const [k, t] of expected)
          expect(Array.from(got.get(k)!.data as Float32Array)).toEqual(Array.from(t.data as Float32Array));
      } finally {
        model.dispose();
      }
      const explicit = loadModel(dir, 'WuerstchenPrior', { variant: v });
      explicit.dispose();
    }
  });

  test('sharded weights load like the single file', () => {
    const model = loadModel(path.join(GOLDEN, 'loader_prior_sharded'));
    try {
      expect(model).toBeInstanceOf(WuerstchenPrior);
      const expected = loadSafetensors(path.join(GOLDEN, 'prior_tiny', 'weights.safetensors'));
      const got = model.stateDict();
      for (const [k, t] of expected) expect(got.get(k)!.data).toEqual(t.data);
    } finally {
      model.dispose();
    }
  });

  test('text encoder files with position_ids load (the buffer is ignored)', () => {
    const dir = copyTree(path.join(HUB_PRIOR, 'text_encoder'), path.join(tmp(), 'text_encoder'));
    const file = path.join(dir, 'model.safetensors');
    const tensors = loadSafetensors(file);
    const ids: HostTensor = {
      dtype: 'I64',
      shape: [1, 77],
      data: BigInt64Array.from({ length: 77 }, (_, i) => BigInt(i)),
    };
    tensors.set('text_model.embeddings.position_ids', ids);
    writeSafetensors(file, tensors);
    const model = loadModel(dir, 'CLIPTextModel');
    model.dispose();
  });

  test('a missing folder names the folder and what was expected', () => {
    const e = errorOf(() => WuerstchenPriorPipeline.fromPretrained(path.join(tmp(), 'nope')));
    expect(e).toBeInstanceOf(LoaderError);
    expect(e.message).toContain(path.join(tmp(), 'nope'));
    expect(e.message).toMatch(/folder not found .*model_index\.json/);
  });

  test('a missing component folder or file is named', () => {
    const dir = copyTree(HUB_PRIOR, path.join(tmp(), 'prior'));
    fs.rmSync(path.join(dir, 'prior', 'diffusion_pytorch_model.safetensors'));
    let e = errorOf(() => WuerstchenPriorPipeline.fromPretrained(dir));
    expect(e.message).toContain(path.join(dir, 'prior', 'diffusion_pytorch_model.safetensors'));
    expect(e.message).toMatch(/missing/);
    fs.rmSync(path.join(dir, 'prior'), { recursive: true });
    e = errorOf(() => WuerstchenPriorPipeline.fromPretrained(dir));
    expect(e.message).toContain(path.join(dir, 'prior'));
    expect(e.message).toMatch(/folder not found.*WuerstchenPrior/);
    fs.rmSync(path.join(dir, 'model_index.json'));
    e = errorOf(() => WuerstchenPriorPipeline.fromPretrained(dir));
    expect(e.message).toContain(path.join(dir, 'model_index.json'));
    expect(e.message).toMatch(/missing \(expected the model_index\.json of a WuerstchenPriorPipeline folder\)/);
  });

  test('a prior folder passed as decoder (and vice versa) is rejected', () => {
    expect(() => WuerstchenDecoderPipeline.fromPretrained(HUB_PRIOR)).toThrow(
      /holds a WuerstchenPriorPipeline; expected WuerstchenDecoderPipeline/,
    );
    expect(() => WuerstchenPriorPipeline.fromPretrained(HUB_DECODER)).toThrow(
      /holds a WuerstchenDecoderPipeline; expected WuerstchenPriorPipeline/,
    );
  });

  test('an unknown _class_name is rejected, with a hint for old hub names', () => {
    const dir = copyTree(HUB_DECODER, path.join(tmp(), 'decoder'));
    editJson(path.join(dir, 'vqgan', 'config.json'), (j) => (j._class_name = 'VQModelPaella'));
    const e = errorOf(() => WuerstchenDecoderPipeline.fromPretrained(dir));
    expect(e.message).toContain(path.join(dir, 'vqgan', 'config.json'));
    expect(e.message).toMatch(/unknown class "VQModelPaella".*old hub revision.*PaellaVQModel.*expected PaellaVQModel/);
    editJson(path.join(dir, 'model_index.json'), (j) => (j.decoder = ['wuerstchen', 'DiffNeXt']));
    expect(() => WuerstchenDecoderPipeline.fromPretrained(dir)).toThrow(
      /model_index\.json: component "decoder" has unknown class "DiffNeXt"/,
    );
    editJson(path.join(dir, 'model_index.json'), (j) => (j._class_name = 'StableDiffusionPipeline'));
    expect(() => WuerstchenDecoderPipeline.fromPretrained(dir)).toThrow(
      /unknown pipeline class "StableDiffusionPipeline"; expected WuerstchenDecoderPipeline/,
    );
  });

  test('a corrupt config or weights file is named', () => {
    const dir = copyTree(HUB_PRIOR, path.join(tmp(), 'prior'));
    fs.writeFileSync(path.join(dir, 'scheduler', 'scheduler_config.json'), '{"s": 0.008,');
    let e = errorOf(() => WuerstchenPriorPipeline.fromPretrained(dir));
    expect(e.message).toContain(path.join(dir, 'scheduler', 'scheduler_config.json'));
    expect(e.message).toMatch(/not valid JSON/);
    fs.copyFileSync(
      path.join(HUB_PRIOR, 'scheduler', 'scheduler_config.json'),
      path.join(dir, 'scheduler', 'scheduler_config.json'),
    );
    const weights = path.join(dir, 'prior', 'diffusion_pytorch_model.safetensors');
    const bytes = fs.readFileSync(weights);
    fs.writeFileSync(weights, bytes.subarray(0, bytes.length - 1000)); // truncated download
    e = errorOf(() => WuerstchenPriorPipeline.fromPretrained(dir));
    expect(e.message).toContain(weights);
    expect(e.message).toMatch(/beyond the data section/);
  });

  test('a config that does not match the weights lists what differs', () => {
    const dir = copyTree(HUB_PRIOR, path.join(tmp(), 'prior'));
    editJson(path.join(dir, 'prior', 'config.json'), (j) => {
      j.c = 32;
      j.depth = 3;
    });
    const e = errorOf(() => prepareModel(path.join(dir, 'prior'), 'WuerstchenPrior'));
    expect(e).toBeInstanceOf(StateDictError);
    expect(e.message).toContain(path.join(dir, 'prior', 'diffusion_pytorch_model.safetensors'));
    expect(e.message).toContain(path.join(dir, 'prior', 'config.json'));
    expect(e.message).toMatch(/missing keys \(\d+\): blocks\.6\./);
    expect(e.message).toMatch(
      /blocks\.0\.depthwise\.weight: shape \[64, 1, 3, 3\], but the config needs \[32, 1, 3, 3\]/,
    );
    expect(e.message).toMatch(/\.\.\. \d+ more shape mismatches/);
  });

  test('a text encoder that does not fit the prior is rejected', () => {
    const dir = copyTree(HUB_PRIOR, path.join(tmp(), 'prior'));
    fs.rmSync(path.join(dir, 'text_encoder'), { recursive: true });
    copyTree(path.join(HUB_DECODER, 'text_encoder'), path.join(dir, 'text_encoder'));
    expect(() => WuerstchenPriorPipeline.fromPretrained(dir)).toThrow(
      /hidden_size 24 does not match the prior's c_cond 32/,
    );
  });
});

describe('pipelines', () => {
  const prior = WuerstchenPriorPipeline.fromPretrained(HUB_PRIOR);
  const decoder = WuerstchenDecoderPipeline.fromPretrained(HUB_DECODER);
  const combined = new WuerstchenCombinedPipeline(prior, decoder);
  const tmp = useTempDir();

  afterAll(() => combined.release());

  test('guidance is torch.lerp(uncond, cond, w) with cond first', () => {
    const eps = tf.tensor([
      [1, 2],
      [3, 5],
    ]);
    for (const w of [4, 0.25]) {
      const got = guidance(eps, w).arraySync();
      expect(got).toEqual([[3 + w * (1 - 3), 5 + w * (2 - 5)]]);
    }
    eps.dispose();
  });

  test('prior: latent size ceil(side/42.67), batch = prompts × images, x·42 − 1, no leaks, offloaded', async () => {
    const before = tf.memory().numTensors;
    const { imageEmbeddings } = await prior(['a cat', 'a dog'], {
      width: 300,
      height: 200,
      numInferenceSteps: 2,
      numImagesPerPrompt: 2,
      seed: 3,
    });
    expect(imageEmbeddings.shape).toEqual([4, 5, 8, 16]); // ceil(200/42.67) = 5, ceil(300/42.67) = 8
    imageEmbeddings.dispose();
    expect(tf.memory().numTensors).toBe(before);
    expect(prior.prior.loaded).toBe(false);
    expect(prior.textEncoder.loaded).toBe(false);
  });

  test('prior: given latents and step noise replace the generator; one seed gives the same result', async () => {
    const run = async (opts: object) => {
      const { imageEmbeddings } = await prior('a tiny photo', {
        width: 128,
        height: 128,
        numInferenceSteps: 3,
        ...opts,
      });
      const v = imageEmbeddings.dataSync().slice();
      imageEmbeddings.dispose();
      return v;
    };
    const a = await run({ seed: 7 });
    expect(await run({ seed: 7 })).toEqual(a);
    expect(await run({ seed: 8 })).not.toEqual(a);
    // replay seed 7 by hand: initial latents then one noise tensor per step, drawn NCHW (as diffusers draws them)
    const g = new Generator(7);
    const nchwToNhwc = (t: tf.Tensor) => tf.tidy(() => t.transpose([0, 2, 3, 1]));
    const latents = nchwToNhwc(g.randn([1, 16, 3, 3]));
    const noise = [0, 1, 2].map(() => nchwToNhwc(g.randn([1, 16, 3, 3])));
    expect(await run({ latents, stepNoise: noise, seed: 999 })).toEqual(a);
    tf.dispose([latents, ...noise]);
  });

  test('prior: negative prompt and guidance change the result; list length is checked', async () => {
    const run = async (opts: object) => {
      const { imageEmbeddings } = await prior('a cat', {
        width: 128,
        height: 128,
        numInferenceSteps: 2,
        seed: 1,
        ...opts,
      });
      const v = imageEmbeddings.dataSync().slice();
      imageEmbeddings.dispose();
      return v;
    };
    const base = await run({});
    expect(await run({ negativePrompt: 'blurry' })).not.toEqual(base);
    expect(await run({ guidanceScale: 1 })).not.toEqual(base);
    await expect(prior(['a', 'b'], { negativePrompt: ['x'], numInferenceSteps: 1 })).rejects.toThrow(
      /negativePrompt has 1 entries but there are 2 prompts/,
    );
    await expect(prior('a', { timesteps: [1] })).rejects.toThrow(/timesteps needs at least 2 values/);
  });

  test('progress: step 0..total per stage with it/s and ETA', async () => {
    const events: ProgressEvent[] = [];
    const { images } = await combined('a cat', {
      width: 128,
      height: 128,
      priorNumInferenceSteps: 3,
      numInferenceSteps: 2,
      seed: 1,
      onProgress: (e) => events.push({ ...e }),
    });
    images!.dispose();
    const stages = events.map((e) => `${e.stage}:${e.step}/${e.total}`);
    expect(stages).toEqual([
      'prior:0/3',
      'prior:1/3',
      'prior:2/3',
      'prior:3/3',
      'decoder:0/2',
      'decoder:1/2',
      'decoder:2/2',
      'vqgan:0/1',
      'vqgan:1/1',
    ]);
    const last = events[3];
    expect(last.itPerSec).toBeGreaterThan(0);
    expect(last.etaSeconds).toBe(0);
    expect(events[1].etaSeconds).toBeCloseTo(2 / events[1].itPerSec, 6);
    expect(Number.isNaN(events[0].etaSeconds)).toBe(true);
  });

  test('combined: networks are loaded and freed stage by stage', async () => {
    const seen: string[] = [];
    const loaded = () =>
      [
        ['bigG', prior.textEncoder],
        ['prior', prior.prior],
        ['H', decoder.textEncoder],
        ['decoder', decoder.decoder],
        ['vqgan', decoder.vqgan],
      ]
        .filter(([, h]) => (h as { loaded: boolean }).loaded)
        .map(([n]) => n)
        .join('+');
    const before = tf.memory().numTensors;
    const { images } = await combined('a cat', {
      width: 128,
      height: 128,
      priorNumInferenceSteps: 2,
      numInferenceSteps: 2,
      decoderGuidanceScale: 2,
      seed: 1,
      onProgress: (e) => {
        if (e.step === 1) seen.push(`${e.stage}: ${loaded()}`);
      },
    });
    images!.dispose();
    expect(seen).toEqual(['prior: prior', 'decoder: decoder', 'vqgan: vqgan']);
    expect(loaded()).toBe('');
    expect(tf.memory().numTensors).toBe(before);
  });

  test('combined: tensor output NHWC in [0, 1]; PNG output is the same for a seed', async () => {
    const opts = { width: 128, height: 256, priorNumInferenceSteps: 2, numInferenceSteps: 1, seed: 5 };
    const { images } = await combined('a cat', opts);
    expect(images!.shape).toEqual([1, 256, 128, 3]);
    const v = images!.dataSync();
    expect(Math.min(...v)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...v)).toBeLessThanOrEqual(1);
    const { png } = await combined('a cat', { ...opts, outputType: 'png' });
    expect(png).toHaveLength(1);
    const img = decodePng(png![0]);
    expect([img.width, img.height]).toEqual([128, 256]);
    // the same seed gave the same image; the PNG holds round_half_even(f32(x·255))
    const bytes = Uint8Array.from(v, toByte);
    const rgb = Uint8Array.from({ length: bytes.length }, (_, i) => img.data[Math.floor(i / 3) * 4 + (i % 3)]);
    expect(Buffer.compare(Buffer.from(rgb), Buffer.from(bytes))).toBe(0);
    expect(Buffer.compare((await tensorToPng(images!))[0], png![0])).toBe(0);
    images!.dispose();
  });

  test('combined: several prompts', async () => {
    const { images } = await combined(['a cat', 'a dog'], {
      width: 128,
      height: 128,
      priorNumInferenceSteps: 1,
      numInferenceSteps: 1,
      seed: 2,
    });
    expect(images!.shape).toEqual([2, 128, 128, 3]);
    images!.dispose();
  });

  test('unsupported sides are rejected up front with the valid sizes', async () => {
    expect(validImageSides(decoder.geometry, 42.67, 1024)).toEqual([128, 256, 384, 512, 640, 768, 896, 1024]);
    expect(checkImageSide(1024, 'width', decoder.geometry, 42.67)).toBeNull();
    await expect(combined('a cat', { width: 500, height: 512 })).rejects.toThrow(
      /width 500 is not supported: the pipeline would make 512 px instead; valid sizes are multiples of 128 \(nearest: 384 or 512\)/,
    );
    await expect(combined('a cat', { width: 512, height: 320 })).rejects.toThrow(
      /height 320 is not supported: the decoder cannot take it .*multiple of 16.*nearest: 256 or 384/,
    );
    expect(prior.prior.loaded || prior.textEncoder.loaded).toBe(false);
    const emb = tf.zeros([1, 4, 3, 16]);
    await expect(decoder(emb, 'a cat')).rejects.toThrow(
      /height 4 gives a decoder latent of 42 .* multiple of 16; valid embedding sides: 3, 6, 9/,
    );
    emb.dispose();
  });

  test('decoder: latent output and guidance with zero effnet for the unconditional half', async () => {
    const emb = tf.randomNormal([1, 3, 3, 16], 0, 1, 'float32', 1);
    const { latents } = await decoder(emb, 'a cat', {
      numInferenceSteps: 2,
      seed: 1,
      outputType: 'latent',
      guidanceScale: 3,
    });
    expect(latents!.shape).toEqual([1, 32, 32, 4]);
    tf.dispose([latents!, emb]);
  });

  test('tiled VQGAN decode equals the whole decode', () => {
    const before = tf.memory().numTensors;
    const latents = tf.randomNormal([2, 36, 20, 4], 0, 1, 'float32', 3);
    const whole = decoder.decodeLatents(latents, { vqganTileSize: 0 });
    const tiled = decoder.decodeLatents(latents, { vqganTileSize: 16 });
    expect(tiled.shape).toEqual([2, 144, 80, 3]);
    expect(tf.tidy(() => tf.max(tf.abs(tf.sub(whole, tiled))).dataSync()[0])).toBeLessThan(1e-5);
    tf.dispose([latents, whole, tiled]);
    expect(tf.memory().numTensors).toBe(before);
  });

  test('writeFileAtomic leaves no temporary file', () => {
    const file = path.join(tmp(), 'x.png');
    writeFileAtomic(file, Buffer.from([1, 2, 3]));
    writeFileAtomic(file, Buffer.from([4]));
    expect(fs.readdirSync(tmp())).toEqual(['x.png']);
    expect([...fs.readFileSync(file)]).toEqual([4]);
  });

  test('bytes: numpy round half to even of float32 x·255', () => {
    expect([0.5, 1.5, 2.5, -0.5, 254.5].map(roundHalfEven)).toEqual([0, 2, 2, -0, 254]);
    expect([0, 1, -0.2, 1.3, 0.5].map(toByte)).toEqual([0, 255, 0, 255, 128]);
  });
});
