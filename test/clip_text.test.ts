/** CLIPTextModel (transformers modeling_clip.py; golden README "CLIP text model"). */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { HostTensor, StateDictError, loadSafetensors, writeSafetensors } from '@wuerstchen/core';
import { runGolden, toTf } from '../packages/golden/src/harness';
import '../packages/golden/src/runners/clip';
import {
  CLIPTextConfig,
  CLIPTextModel,
  CLIP_TEXT_BIGG,
  CLIP_TEXT_H,
  parseCLIPTextConfig,
} from '../packages/wuerstchen/src/models/clip_text';
import { useTempDir } from './helpers/tmp';
import { GOLDEN } from './helpers/shared';

const HUB_PRIOR_TE = path.join(GOLDEN, 'hub', 'wuerstchen-prior', 'text_encoder');
const HUB_DECODER_TE = path.join(GOLDEN, 'hub', 'wuerstchen', 'text_encoder');

const TINY: Partial<CLIPTextConfig> = {
  vocab_size: 100,
  hidden_size: 16,
  intermediate_size: 32,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  max_position_embeddings: 12,
  hidden_act: 'gelu',
  bos_token_id: 98,
  eos_token_id: 99,
};

/** A tiny model with random (seeded) weights. */
function tinyModel(cfg: Partial<CLIPTextConfig> = {}): CLIPTextModel {
  const m = new CLIPTextModel({ ...TINY, ...cfg });
  let seed = 1;
  for (const [, p] of m.namedParameters()) {
    const t = tf.randomNormal(p.shape, 0, 0.5, 'float32', seed++);
    p.assign(t);
    t.dispose();
  }
  return m;
}

function maxAbs(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]);
}

describe('golden cases', () => {
  test('clip_text_tiny_gelu and clip_text_tiny_quick_gelu pass (with and without mask, all intermediates)', async () => {
    const lines: string[] = [];
    const reports = await runGolden(GOLDEN, { filter: 'clip_text', log: (l) => lines.push(l) });
    expect(reports.map((r) => r.name).sort()).toEqual(['clip_text_tiny_gelu', 'clip_text_tiny_quick_gelu']);
    for (const r of reports) {
      if (!r.passed) throw new Error(lines.join('\n'));
      expect(r.maxAbsErr).toBeLessThanOrEqual(r.tolerance!);
    }
  });
});

describe('full-size key names and shapes (no weights allocated)', () => {
  const cases: [string, CLIPTextConfig][] = [
    ['prior_text_encoder.json', CLIP_TEXT_BIGG],
    ['decoder_text_encoder.json', CLIP_TEXT_H],
  ];
  test.each(cases)('%s', (file, cfg) => {
    const ref = JSON.parse(fs.readFileSync(path.join(GOLDEN, 'real_checkpoint_keys', file), 'utf8')) as {
      config: Record<string, unknown>;
      num_tensors: number;
      num_float_values: number;
      keys: { name: string; shape: number[]; dtype: string }[];
    };
    const before = tf.memory().numTensors;
    // the config in the key file is a subset of config.json; parsing it with the spec's legacy ids must give the same model
    const fromRef = parseCLIPTextConfig(ref.config);
    for (const k of [
      'hidden_size',
      'intermediate_size',
      'num_hidden_layers',
      'num_attention_heads',
      'vocab_size',
      'max_position_embeddings',
      'hidden_act',
    ] as const) {
      expect(fromRef[k]).toBe(cfg[k]);
    }
    const m = new CLIPTextModel(cfg);
    const named = m.namedParameters();
    expect(named.map(([k, p]) => ({ name: k, shape: p.torchShape, dtype: 'float32' }))).toEqual(ref.keys);
    expect(named.length).toBe(ref.num_tensors);
    expect(m.numParameters()).toBe(ref.num_float_values);
    expect(named.every(([, p]) => !p.allocated)).toBe(true);
    expect(tf.memory().numTensors).toBe(before);
    m.dispose();
  });

  test('parameter counts of the published text encoders (bigG-14, H-14)', () => {
    expect(new CLIPTextModel(CLIP_TEXT_BIGG).numParameters()).toBe(693_021_440);
    expect(new CLIPTextModel(CLIP_TEXT_H).numParameters()).toBe(352_984_064);
  });
});

describe('hub text encoders', () => {
  const io = loadSafetensors(path.join(GOLDEN, 'pipeline_e2e_tiny', 'io.safetensors'));
  const caseJson = JSON.parse(fs.readFileSync(path.join(GOLDEN, 'pipeline_e2e_tiny', 'case.json'), 'utf8')) as {
    tolerance_per_output: Record<string, number>;
  };
  const tol = caseJson.tolerance_per_output;
  const t = (name: string) => toTf(io.get(name)!);

  test.each([
    ['prior', HUB_PRIOR_TE, 32],
    ['decoder', HUB_DECODER_TE, 24],
  ] as const)(
    '%s text_encoder loads (config.json + model.safetensors) and reproduces the pipeline prompt embeddings',
    (which, dir, width) => {
      const before = tf.memory().numTensors;
      const m = CLIPTextModel.fromPretrained(dir);
      try {
        expect(m.config.hidden_size).toBe(width);
        expect(m.config.vocab_size).toBe(49408);
        expect(m.config.eos_token_id).toBe(49407);
        expect(m.namedParameters().every(([, p]) => p.allocated)).toBe(true);
        for (const [ids, mask, out] of [
          ['prompt_input_ids', 'prompt_attention_mask', `${which}_prompt_embeds`],
          ['negative_input_ids', 'negative_attention_mask', `${which}_negative_prompt_embeds`],
        ]) {
          tf.tidy(() => {
            const r = m.forward(t(ids) as tf.Tensor2D, t(mask) as tf.Tensor2D);
            expect(r.lastHiddenState.shape).toEqual([1, 77, width]);
            expect(r.poolerOutput.shape).toEqual([1, width]);
            expect(maxAbs(r.lastHiddenState, t(out))).toBeLessThanOrEqual(tol[out]);
          });
        }
      } finally {
        m.dispose();
      }
      expect(tf.memory().numTensors).toBe(before);
    },
  );

  const tmp = useTempDir('clip-text-');
  test('an extra int64 text_model.embeddings.position_ids is ignored; a missing key is an error', () => {
    const weights = loadSafetensors(path.join(HUB_DECODER_TE, 'model.safetensors'));
    const withIds = new Map<string, HostTensor>(weights);
    withIds.set('text_model.embeddings.position_ids', {
      dtype: 'I64',
      shape: [1, 77],
      data: BigInt64Array.from({ length: 77 }, (_, i) => BigInt(i)),
    });
    const dir = tmp();
    fs.copyFileSync(path.join(HUB_DECODER_TE, 'config.json'), path.join(dir, 'config.json'));
    writeSafetensors(path.join(dir, 'model.safetensors'), withIds);
    const before = tf.memory().numTensors;
    const a = CLIPTextModel.fromPretrained(dir);
    const b = CLIPTextModel.fromPretrained(HUB_DECODER_TE);
    tf.tidy(() => {
      const ids = tf.tensor2d([[49406, 320, 1125, 49407, 49407]], [1, 5], 'int32');
      expect(maxAbs(a.forward(ids).lastHiddenState, b.forward(ids).lastHiddenState)).toBe(0);
    });
    a.dispose();
    b.dispose();

    // the static predicate is usable by other loaders too
    expect(CLIPTextModel.ignoredKeys('text_model.embeddings.position_ids')).toBe(true);
    expect(CLIPTextModel.ignoredKeys('text_model.final_layer_norm.weight')).toBe(false);

    const missing = new Map(weights);
    missing.delete('text_model.final_layer_norm.bias');
    const m = new CLIPTextModel(
      parseCLIPTextConfig(JSON.parse(fs.readFileSync(path.join(HUB_DECODER_TE, 'config.json'), 'utf8'))),
    );
    expect(() => m.loadStateDict(missing)).toThrow(StateDictError);
    expect(() => m.loadStateDict(missing)).toThrow(/final_layer_norm\.bias/);
    m.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('forward', () => {
  let m: CLIPTextModel;
  beforeAll(() => {
    m = tinyModel();
  });
  afterAll(() => m.dispose());

  const ids = () =>
    tf.tensor2d(
      [
        [98, 5, 7, 99, 99, 99],
        [98, 11, 12, 13, 99, 0],
      ],
      [2, 6],
      'int32',
    );
  const mask = () =>
    tf.tensor2d(
      [
        [1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 0],
      ],
      [2, 6],
      'int32',
    );

  test('output shapes and hidden states', () => {
    tf.tidy(() => {
      const r = m.forward(ids(), mask(), { outputHiddenStates: true });
      expect(r.lastHiddenState.shape).toEqual([2, 6, 16]);
      expect(r.poolerOutput.shape).toEqual([2, 16]);
      expect(r.hiddenStates!.length).toBe(3);
      for (const h of r.hiddenStates!) expect(h.shape).toEqual([2, 6, 16]);
      // last_hidden_state = final_layer_norm(hidden_states[-1])
      expect(maxAbs(r.lastHiddenState, m.textModel.finalLayerNorm.forward(r.hiddenStates![2]))).toBeLessThan(1e-6);
      expect(m.forward(ids()).hiddenStates).toBeUndefined();
    });
  });

  test('numTensors stays flat over repeated calls', () => {
    const x = ids();
    const k = mask();
    const run = () => {
      const a = m.forward(x, k, { outputHiddenStates: true });
      const b = m.forward(x);
      tf.dispose([a.lastHiddenState, a.poolerOutput, ...a.hiddenStates!, b.lastHiddenState, b.poolerOutput]);
    };
    run();
    const before = tf.memory().numTensors;
    for (let i = 0; i < 5; i++) run();
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([x, k]);
  });

  test('causal + padding mask: outputs before a position do not depend on later tokens; masked keys are ignored', () => {
    tf.tidy(() => {
      const a = m.forward(tf.tensor2d([[98, 5, 7, 99, 3, 4]], [1, 6], 'int32')).lastHiddenState;
      const b = m.forward(tf.tensor2d([[98, 5, 7, 99, 50, 60]], [1, 6], 'int32')).lastHiddenState;
      expect(maxAbs(a.slice([0, 0, 0], [1, 4, -1]), b.slice([0, 0, 0], [1, 4, -1]))).toBe(0);
      // a padded key never influences any query, even the later ones
      const keep = tf.tensor2d([[1, 1, 0, 1, 1, 1]], [1, 6], 'int32');
      const c = m.forward(tf.tensor2d([[98, 5, 7, 99, 3, 4]], [1, 6], 'int32'), keep).lastHiddenState;
      const d = m.forward(tf.tensor2d([[98, 5, 70, 99, 3, 4]], [1, 6], 'int32'), keep).lastHiddenState;
      const rowsWithout2 = (t: tf.Tensor) =>
        tf.concat([t.slice([0, 0, 0], [1, 2, -1]), t.slice([0, 3, 0], [1, 3, -1])], 1);
      expect(maxAbs(rowsWithout2(c), rowsWithout2(d))).toBeLessThan(1e-6);
      // a bool or float mask means the same as an int32 one
      const e = m.forward(
        tf.tensor2d([[98, 5, 7, 99, 3, 4]], [1, 6], 'int32'),
        keep.cast('bool') as tf.Tensor2D,
      ).lastHiddenState;
      const f = m.forward(
        tf.tensor2d([[98, 5, 7, 99, 3, 4]], [1, 6], 'int32'),
        keep.cast('float32') as tf.Tensor2D,
      ).lastHiddenState;
      expect(maxAbs(c, e)).toBe(0);
      expect(maxAbs(c, f)).toBe(0);
    });
  });

  test('pooling: first eos_token_id position (0 when absent); legacy eos_token_id 2 → argmax of the ids', () => {
    tf.tidy(() => {
      const x = tf.tensor2d(
        [
          [98, 5, 99, 99, 99, 99],
          [98, 11, 12, 13, 14, 0],
          [98, 97, 99, 3, 4, 5],
        ],
        [3, 6],
        'int32',
      );
      expect(Array.from(m.eosPositions(x).dataSync())).toEqual([2, 0, 2]);
      const r = m.forward(x);
      const expected = tf.stack(
        [0, 1, 2].map((b, i) => r.lastHiddenState.slice([b, [2, 0, 2][i], 0], [1, 1, -1]).reshape([16])),
      );
      expect(maxAbs(r.poolerOutput, expected)).toBe(0);
    });
    const legacy = tinyModel({ eos_token_id: 2 });
    tf.tidy(() => {
      const x = tf.tensor2d(
        [
          [49, 5, 60, 2, 2, 2],
          [3, 77, 12, 77, 2, 0],
        ],
        [2, 6],
        'int32',
      );
      expect(Array.from(legacy.eosPositions(x).dataSync())).toEqual([2, 1]);
    });
    legacy.dispose();
  });

  test('clear errors for wrong input shape / dtype / range, without leaking', () => {
    const before = tf.memory().numTensors;
    const f32 = tf.tensor2d([[1, 2, 3]], [1, 3], 'float32');
    const rank1 = tf.tensor1d([1, 2, 3], 'int32');
    const rank3 = tf.zeros([1, 3, 1], 'int32');
    const tooLong = tf.zeros([1, 13], 'int32');
    const outOfRange = tf.tensor2d([[98, 100]], [1, 2], 'int32');
    const negative = tf.tensor2d([[98, -1]], [1, 2], 'int32');
    const ok = tf.tensor2d([[98, 5, 99]], [1, 3], 'int32');
    const badMask = tf.ones([1, 4], 'int32');
    const stringMask = tf.tensor([['a', 'b', 'c']]);
    const n = tf.memory().numTensors;
    expect(() => m.forward(f32 as tf.Tensor2D)).toThrow(
      /inputIds must be an int32 tensor of shape \[batch, seq\]; got float32 \[1, 3\]/,
    );
    expect(() => m.forward(rank1 as unknown as tf.Tensor2D)).toThrow(
      /int32 tensor of shape \[batch, seq\]; got int32 \[3\]/,
    );
    expect(() => m.forward(rank3 as unknown as tf.Tensor2D)).toThrow(/got int32 \[1, 3, 1\]/);
    expect(() => m.forward(tooLong as tf.Tensor2D)).toThrow(/sequence length 13 exceeds max_position_embeddings 12/);
    expect(() => m.forward(outOfRange)).toThrow(/token ids must be in \[0, 100\); got values in \[98, 100\]/);
    expect(() => m.forward(negative)).toThrow(/token ids must be in \[0, 100\)/);
    expect(() => m.forward(ok, badMask as tf.Tensor2D)).toThrow(
      /attentionMask must have the shape of inputIds \[1, 3\]; got int32 \[1, 4\]/,
    );
    expect(() => m.forward(ok, stringMask as tf.Tensor2D)).toThrow(/attentionMask must be int32, bool or float32/);
    expect(tf.memory().numTensors).toBe(n);
    tf.dispose([f32, rank1, rank3, tooLong, outOfRange, negative, ok, badMask, stringMask]);
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('config', () => {
  test('parses transformers config.json (and a CLIPConfig text_config); rejects bad values', () => {
    const hub = JSON.parse(fs.readFileSync(path.join(HUB_PRIOR_TE, 'config.json'), 'utf8')) as Record<string, unknown>;
    const cfg = parseCLIPTextConfig(hub);
    expect(cfg).toMatchObject({
      hidden_size: 32,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      hidden_act: 'gelu',
      eos_token_id: 49407,
      layer_norm_eps: 1e-5,
    });
    expect(parseCLIPTextConfig({ model_type: 'clip', text_config: hub })).toEqual(cfg);
    expect(() => parseCLIPTextConfig({ ...hub, hidden_act: 'relu' })).toThrow(
      /"hidden_act" must be one of "gelu", "quick_gelu", got "relu"/,
    );
    expect(() => parseCLIPTextConfig({ ...hub, num_attention_heads: 5 })).toThrow(/not divisible/);
    expect(() => parseCLIPTextConfig({ ...hub, num_hidden_layers: 0 })).toThrow(
      /"num_hidden_layers" must be an integer from 1 to 256, got 0/,
    );
  });
});
