/**
 * The bundled tiny model (packages/wuerstchen/models/wuerstchen-tiny, made by `npm run train:tiny`).
 *  - `fromPretrained()` with no folder loads it and generates finite 64×64 pictures without leaking.
 *  - Its Stage B + Stage A, given the shipped compressor's maps of rendered scenes, draw those
 *    scenes' background and shape colour — judged from the pixels by the evaluator's classifier.
 * (Its prior does not yet follow prompts reliably; the model card has the evaluator's numbers.)
 */
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '@wuerstchen/core';
import { EfficientNetEncoder, Generator, TINY_MODEL, TINY_MODEL_DIR, WuerstchenCombinedPipeline, WuerstchenDecoderPipeline, judgeImage, randomScene, renderScene, sceneCaption, tensorToImages } from 'wuerstchen';
import { loadDiffusersWeights, modelArgs, normalize, readModelConfig } from '@wuerstchen/train';

beforeAll(async () => {
  // the native backend when it is built (as under CI): tfjs-cpu's convolutions take minutes here
  await useBackend('auto', { quiet: true });
});

test('fromPretrained() loads the bundled model and generates at its native size without leaking', async () => {
  const pipe = WuerstchenCombinedPipeline.fromPretrained();
  const before = tf.memory().numTensors;
  const out = await pipe([TINY_MODEL.examplePrompt, 'a small white square at the top on a black background'], { width: TINY_MODEL.width, height: TINY_MODEL.height, priorNumInferenceSteps: 6, numInferenceSteps: 4, seed: 7 });
  expect(out.images!.shape).toEqual([2, 64, 64, 3]);
  expect(Array.from(out.images!.dataSync()).every((v) => v >= 0 && v <= 1)).toBe(true);
  out.images!.dispose();
  pipe.release();
  expect(tf.memory().numTensors).toBe(before);
});

test("Stage B + A draw the background and colour of the compressor's maps of rendered scenes", async () => {
  const dir = path.join(TINY_MODEL_DIR, 'effnet');
  const effnet = new EfficientNetEncoder(modelArgs(readModelConfig(dir)));
  loadDiffusersWeights(effnet, dir);
  effnet.eval();
  const rng = new Generator(41);
  const scenes = Array.from({ length: 6 }, () => randomScene(rng, 'exclude'));
  const side = TINY_MODEL.width;
  const pixels = new Float32Array(scenes.length * side * side * 3);
  scenes.forEach((s, i) => {
    const img = { width: side, height: side, data: Float32Array.from(renderScene(s, new Generator(i), { side }), (v) => v / 255) };
    pixels.set(normalize(img).data, i * side * side * 3);
  });
  const maps = tf.tidy(() => effnet.forward(tf.tensor4d(pixels, [scenes.length, side, side, 3])));
  effnet.dispose();
  const decoder = WuerstchenDecoderPipeline.fromPretrained(path.join(TINY_MODEL_DIR, 'wuerstchen'));
  const { images } = await decoder(maps, scenes.map(sceneCaption), { numInferenceSteps: 8, seed: 3 });
  maps.dispose();
  decoder.release();
  const raws = await tensorToImages(images!);
  images!.dispose();
  let right = 0;
  raws.forEach((img, i) => {
    const j = judgeImage(img.data, img.width, img.height, img.channels);
    if (j.background === scenes[i].background && j.colour === scenes[i].colour) right++;
  });
  expect(right).toBeGreaterThanOrEqual(5);
});
