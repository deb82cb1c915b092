/**
 * Checkpoint cases through the golden harness: fp16 / bf16 variant files and a sharded checkpoint loaded into
 * WuerstchenPrior (bitwise against the expected float32 tensors), and the key lists of the full-size real modules
 * (prior, decoder, vqgan, both CLIP text encoders) built without allocating weights. Also checks that these runners
 * do fail when a fixture is altered, so a pass means something.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { loadSafetensors, writeSafetensors } from '@wuerstchen/core';
import { formatReport, runCase, runGolden } from '../packages/golden/src';
import { GOLDEN } from './helpers/shared';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

describe('checkpoint golden cases', () => {
  test('runGolden with filter "loader_" passes all three loader cases without leaks', async () => {
    const lines: string[] = [];
    const reports = await runGolden(GOLDEN, { filter: 'loader_', log: (l) => lines.push(l) });
    expect(reports.map((r) => r.name).sort()).toEqual([
      'loader_prior_bf16',
      'loader_prior_fp16',
      'loader_prior_sharded',
    ]);
    for (const r of reports) if (!r.passed) throw new Error(formatReport(r));
  });

  test.each(['loader_prior_fp16', 'loader_prior_bf16', 'loader_prior_sharded', 'real_checkpoint_keys'])(
    '%s',
    async (name) => {
      const before = tf.memory().numTensors;
      const report = await runCase(GOLDEN, name);
      if (!report.passed) throw new Error(formatReport(report));
      expect(tf.memory().numTensors).toBe(before);
    },
  );
});

describe('the checkpoint runners detect altered fixtures', () => {
  let root: string;
  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'wuerstchen-ckpt-'));
  });
  afterEach(() => {
    fs.rmSync(root, { recursive: true, force: true });
  });

  const copyCase = (name: string) => fs.cpSync(path.join(GOLDEN, name), path.join(root, name), { recursive: true });

  test('a one-ulp change in expected_float32 fails the bitwise check of loader_prior_bf16', async () => {
    copyCase('loader_prior_bf16');
    fs.chmodSync(path.join(root, 'loader_prior_bf16'), 0o755);
    const file = path.join(root, 'loader_prior_bf16', 'expected_float32.safetensors');
    fs.chmodSync(file, 0o644);
    const tensors = loadSafetensors(file);
    const t = tensors.get('out.1.bias')!;
    const bits = new Uint32Array((t.data as Float32Array).slice().buffer);
    bits[3] += 1;
    tensors.set('out.1.bias', { ...t, data: new Float32Array(bits.buffer) });
    fs.rmSync(file);
    writeSafetensors(file, tensors);
    const report = await runCase(root, 'loader_prior_bf16');
    expect(report.passed).toBe(false);
    expect(report.problems.join('\n')).toMatch(
      /expected_float32 \(bitwise\).*out\.1\.bias: first difference at element 3/,
    );
  });

  test('a renamed key and a wrong shape fail the key-list checks', async () => {
    copyCase('real_checkpoint_keys');
    const dir = path.join(root, 'real_checkpoint_keys');
    fs.chmodSync(dir, 0o755);
    const file = path.join(dir, 'vqgan.json');
    fs.chmodSync(file, 0o644);
    const json = JSON.parse(fs.readFileSync(file, 'utf8'));
    json.keys[5].name = 'down_blocks.0.depthwise.9.weight';
    json.keys[7].shape = [1, 2, 3];
    fs.writeFileSync(file, JSON.stringify(json));
    const report = await runCase(root, 'real_checkpoint_keys');
    expect(report.passed).toBe(false);
    const text = report.problems.join('\n');
    expect(text).toMatch(/vqgan: key names in order: at #5/);
    expect(text).toMatch(/vqgan: shapes: at #7/);
    expect(text).not.toMatch(/prior:|decoder:|text_encoder:/);
  });
});
