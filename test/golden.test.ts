/**
 * Every reference case in shared/golden must pass through the project's own modules (the same
 * harness as `npm run golden`), on the cpu backend, on wasm, and on the native backend when it is
 * built (under CI it must be).
 */
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '@wuerstchen/core';
import { registerNativeBackend } from '../packages/core/src/backends/native';
import { formatReport, readIndex, runCase } from '../packages/golden/src';
import { GOLDEN } from './helpers/shared';

const nativeRequired = Boolean(process.env.CI) || process.env.WUERSTCHEN_REQUIRE_NATIVE === '1';
const backends = ['cpu', 'wasm'];
if (registerNativeBackend() || nativeRequired) backends.push('native');

const cases = readIndex(GOLDEN).map((c) => c.case);

describe.each(backends)('golden reference cases on %s', (backend) => {
  beforeAll(async () => {
    await useBackend(backend, { quiet: true });
  });

  test.each(cases)('%s', async (name) => {
    const before = tf.memory().numTensors;
    const report = await runCase(GOLDEN, name);
    if (!report.passed) throw new Error(formatReport(report));
    expect(tf.memory().numTensors).toBe(before);
  });
});
