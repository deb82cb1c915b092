/**
 * The bundled tiny model (packages/wuerstchen/models/wuerstchen-tiny, made by `npm run train:tiny`).
 *  - `fromPretrained()` with no folder loads it and generates finite 64×64 pictures without leaking.
 *  - Text to image through all three stages: for a fixed prompt and seed the picture has the
 *    prompt's background and shape colour, judged from its pixels by the evaluator's classifier.
 * (Stage B + A from the compressor's maps are covered by test/variation.test.ts.)
 */
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '@wuerstchen/core';
import { TINY_MODEL, WuerstchenCombinedPipeline, tensorToImages } from 'wuerstchen';
import { judgeImage, parseCaption } from 'wuerstchen/internal';

beforeAll(async () => {
  // the native backend when it is built (as under CI): tfjs-cpu's convolutions take minutes here
  await useBackend('auto', { quiet: true });
});

test('fromPretrained() loads the bundled model and generates at its native size without leaking', async () => {
  const pipe = WuerstchenCombinedPipeline.fromPretrained();
  const before = tf.memory().numTensors;
  const out = await pipe([TINY_MODEL.examplePrompt, 'a small white square at the top on a black background'], {
    width: TINY_MODEL.width,
    height: TINY_MODEL.height,
    priorNumInferenceSteps: 6,
    numInferenceSteps: 4,
    seed: 7,
  });
  expect(out.images!.shape).toEqual([2, 64, 64, 3]);
  expect(Array.from(out.images!.dataSync()).every((v) => v >= 0 && v <= 1)).toBe(true);
  out.images!.dispose();
  pipe.release();
  expect(tf.memory().numTensors).toBe(before);
});

test('a prompt gives a picture with its background and shape colour', async () => {
  const pipe = WuerstchenCombinedPipeline.fromPretrained();
  const prompt = TINY_MODEL.examplePrompt;
  const { images } = await pipe(prompt, {
    width: TINY_MODEL.width,
    height: TINY_MODEL.height,
    priorNumInferenceSteps: TINY_MODEL.priorSteps,
    priorGuidanceScale: TINY_MODEL.priorGuidance,
    numInferenceSteps: 8,
    seed: 1,
  });
  pipe.release();
  const [img] = await tensorToImages(images!);
  images!.dispose();
  const judged = judgeImage(img.data, img.width, img.height, img.channels);
  const wanted = parseCaption(prompt)!;
  expect({ background: judged.background, colour: judged.colour }).toEqual({
    background: wanted.background,
    colour: wanted.colour,
  });
});
