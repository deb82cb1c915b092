/**
 * The bundled tiny model (packages/wuerstchen/models/wuerstchen-tiny, made by `npm run train:tiny`):
 * it loads with no folder given, and draws what fixed prompts ask for — judged from the pixels by
 * the evaluator's classifier, not by a hash. Fewer sampling steps than the defaults keep it quick.
 */
import * as tf from '@tensorflow/tfjs';
import { TINY_MODEL, WuerstchenCombinedPipeline, judgeImage, parseCaption, tensorToImages } from 'wuerstchen';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

const PROMPTS = [
  'a large red circle in the middle on a blue background',
  'a large yellow square on the left on a black background',
  'a small white triangle at the top on a green background',
  'a large blue triangle at the bottom on a orange background',
];

test('fromPretrained() loads the bundled model; its pictures have the asked background and colour', async () => {
  const pipe = WuerstchenCombinedPipeline.fromPretrained();
  const before = tf.memory().numTensors;
  const out = await pipe(PROMPTS, { width: TINY_MODEL.width, height: TINY_MODEL.height, priorNumInferenceSteps: 20, numInferenceSteps: 8, seed: 7 });
  expect(out.images.shape).toEqual([PROMPTS.length, 64, 64, 3]);
  const images = await tensorToImages(out.images);
  out.images.dispose();
  pipe.release();
  expect(tf.memory().numTensors).toBe(before);
  let right = 0;
  for (const [i, img] of images.entries()) {
    const want = parseCaption(PROMPTS[i])!;
    const got = judgeImage(img.data, img.width, img.height, img.channels);
    if (got.background === want.background && got.colour === want.colour) right++;
  }
  expect(right).toBeGreaterThanOrEqual(3);
});
