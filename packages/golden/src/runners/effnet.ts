/**
 * Runners for the semantic-compressor cases (golden README "Cases"; diffusers
 * examples/research_projects/wuerstchen/text_to_image/modeling_efficient_net_encoder.py):
 * `effnet_reduced` (numbers, every backbone stage) and `effnet_v2_s_keys` (key names, shapes and
 * dtypes of the full-size module, built without allocating its weights).
 */
import * as fs from 'fs';
import * as tf from '@tensorflow/tfjs';
import { Module } from '@wuerstchen/core';
import { toNCHW, toNHWC } from '@wuerstchen/core/internal';
import { EfficientNetEncoder, EfficientNetEncoderConfig } from 'wuerstchen';
import { InvertedResidualConfig, collectTrace } from 'wuerstchen/internal';
import { CaseContext, Check, RunResult, registerRunner } from '../harness';

interface KeySpec {
  name: string;
  shape: number[];
  dtype: string;
}

/** Compare a module's state-dict entries (order, names, shapes, dtypes) with a reference key list. */
function compareKeys(model: Module, expected: KeySpec[]): Check[] {
  const got = model
    .namedParameters()
    .map(([name, p]) => ({ name, shape: p.torchShape, dtype: p.dtype === 'I64' ? 'int64' : 'float32' }));
  const gotNames = new Set(got.map((k) => k.name));
  const expNames = new Set(expected.map((k) => k.name));
  const missing = expected.filter((k) => !gotNames.has(k.name)).map((k) => k.name);
  const unexpected = got.filter((k) => !expNames.has(k.name)).map((k) => k.name);
  const byName = new Map(got.map((k) => [k.name, k]));
  const shapes = expected.filter(
    (e) => byName.has(e.name) && byName.get(e.name)!.shape.join(',') !== e.shape.join(','),
  );
  const dtypes = expected.filter((e) => byName.has(e.name) && byName.get(e.name)!.dtype !== e.dtype);
  const firstOutOfOrder = expected.findIndex((e, i) => got[i]?.name !== e.name);
  const list = (xs: string[]) => `${xs.slice(0, 5).join(', ')}${xs.length > 5 ? ` … (${xs.length})` : ''}`;
  return [
    {
      name: 'key count',
      ok: got.length === expected.length,
      detail: `${got.length} keys, expected ${expected.length}`,
    },
    {
      name: 'key names',
      ok: !missing.length && !unexpected.length,
      detail: `missing: ${list(missing)}; unexpected: ${list(unexpected)}`,
    },
    {
      name: 'key order',
      ok: firstOutOfOrder < 0,
      detail: `first difference at #${firstOutOfOrder}: ${got[firstOutOfOrder]?.name} vs ${expected[firstOutOfOrder]?.name}`,
    },
    {
      name: 'shapes',
      ok: !shapes.length,
      detail: shapes
        .slice(0, 5)
        .map((e) => `${e.name} [${byName.get(e.name)!.shape}] vs [${e.shape}]`)
        .join('; '),
    },
    {
      name: 'dtypes',
      ok: !dtypes.length,
      detail: dtypes
        .slice(0, 5)
        .map((e) => `${e.name} ${byName.get(e.name)!.dtype} vs ${e.dtype}`)
        .join('; '),
    },
  ];
}

function keysCase(ctx: CaseContext): RunResult {
  const expected = JSON.parse(fs.readFileSync(ctx.file(ctx.spec.keys_file as string), 'utf8')) as KeySpec[];
  const model = new EfficientNetEncoder(ctx.spec.config as Partial<EfficientNetEncoderConfig>);
  const allocated = model.namedParameters().filter(([, p]) => p.allocated).length;
  return {
    tensors: {},
    checks: [
      ...compareKeys(model, expected),
      { name: 'no weights allocated', ok: allocated === 0, detail: `${allocated} allocated` },
    ],
  };
}

function numericCase(ctx: CaseContext): RunResult {
  const reduced = ctx.spec.reduced_config as {
    inverted_residual_setting: InvertedResidualConfig[];
    last_channel: number;
    stem_channels: number;
  };
  const cfg = ctx.spec.config as { c_latent: number; c_cond: number };
  const model = new EfficientNetEncoder({ c_latent: cfg.c_latent, c_cond: cfg.c_cond, ...reduced });
  const traced: Record<string, tf.Tensor> = {};
  try {
    model.loadStateDict(ctx.weights(), { source: ctx.file(ctx.spec.weights as string) });
    model.eval();
    const output = tf.tidy(() =>
      toNCHW(
        model.forward(
          toNHWC(ctx.tensor('x')),
          collectTrace(traced, (_, t) => toNCHW(t)),
        ),
      ),
    );
    return { tensors: { output, ...traced } };
  } catch (e) {
    Object.values(traced).forEach((t) => t.dispose());
    throw e;
  } finally {
    model.dispose();
  }
}

registerRunner('EfficientNetEncoder', (ctx) => (ctx.spec.weights ? numericCase(ctx) : keysCase(ctx)));
