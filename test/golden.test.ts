/**
 * Every reference case in shared/golden must pass through the project's own modules
 * (the same harness as `npm run golden`).
 */
import * as tf from '@tensorflow/tfjs';
import { formatReport, readIndex, runCase } from '../packages/wuerstchen/src/golden';
import { GOLDEN } from './helpers/shared';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

describe('golden reference cases (cpu backend)', () => {
  const cases = readIndex(GOLDEN).map((c) => c.case);
  test.each(cases)('%s', async (name) => {
    const before = tf.memory().numTensors;
    const report = await runCase(GOLDEN, name);
    if (!report.passed) throw new Error(formatReport(report));
    expect(tf.memory().numTensors).toBe(before);
  });
});
