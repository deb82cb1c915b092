/**
 * Seeded from-scratch initialisation (every value drawn from our {@link Generator}, so two runs with
 * the same seed start bit-identical — tfjs's own initialisers are unseeded).
 *
 * Recipes (the `_init_weights` of dome272/Wuerstchen modules.py and of diffusers' Würstchen models):
 *  - Stage C prior: xavier_uniform for every Conv/Linear weight, biases 0; `projection`,
 *    `cond_mapper.0`, `cond_mapper.2` N(0, 0.02); `out.1.weight` = 0; each ResBlock's last
 *    channelwise Linear ×√(1/depth); TimestepBlock mappers 0.
 *  - Stage B DiffNeXt: xavier_uniform + zero bias; `effnet_mappers.*`, `clip_mapper`
 *    N(0, 0.02); `embedding.1` xavier gain 0.02; `clf.1.weight` = 0; ResBlockStageB last
 *    channelwise Linear ×√(1/Σblocks); TimestepBlock mappers 0.
 *  - Stage A VQGAN: xavier_uniform, biases 0, MixingResidualBlock gammas 0 (identity at
 *    init), codebook U(−1/k, 1/k).
 *  - EfficientNet (torchvision): conv kaiming_normal(fan_out), BN weight 1 / bias 0.
 * Norm weights 1, biases/GRN 0, BatchNorm running_var 1, everything else 0.
 */
import { Module, Parameter } from '@wuerstchen/core';
import { Generator } from 'wuerstchen';

export type InitSpec =
  | { kind: 'zeros' }
  | { kind: 'ones' }
  | { kind: 'normal'; std: number }
  | { kind: 'uniform'; bound: number }
  | { kind: 'xavier'; gain?: number }
  | { kind: 'kaiming_fan_out' };

export interface InitRule {
  match: RegExp;
  init?: InitSpec;
  /** multiply after initialising. */
  scale?: number;
}

function fans(p: Parameter): { fanIn: number; fanOut: number } {
  const s = p.torchShape;
  if (s.length < 2) return { fanIn: s[0] ?? 1, fanOut: s[0] ?? 1 };
  const receptive = s.slice(2).reduce((a, b) => a * b, 1);
  // ConvTranspose2d weights are [in, out, kh, kw]; torch's fan computation still reads size(1) as fan_in.
  return { fanIn: s[1] * receptive, fanOut: s[0] * receptive };
}

function defaultSpec(key: string, p: Parameter, weightInit: InitSpec): InitSpec {
  const name = key.slice(key.lastIndexOf('.') + 1);
  if (p.layout !== 'identity' && name.startsWith('weight')) return weightInit;
  if (name === 'running_var') return { kind: 'ones' };
  if (name === 'weight' && p.torchShape.length === 1) return { kind: 'ones' }; // LayerNorm / BatchNorm affine
  return { kind: 'zeros' };
}

function draw(spec: InitSpec, p: Parameter, rng: Generator): Float32Array {
  const n = p.size;
  switch (spec.kind) {
    case 'zeros':
      return new Float32Array(n);
    case 'ones':
      return new Float32Array(n).fill(1);
    case 'normal': {
      const d = rng.randnArray(n);
      for (let i = 0; i < n; i++) d[i] *= spec.std;
      return d;
    }
    case 'uniform': {
      const d = new Float32Array(n);
      for (let i = 0; i < n; i++) d[i] = (2 * rng.nextFloat() - 1) * spec.bound;
      return d;
    }
    case 'xavier': {
      const { fanIn, fanOut } = fans(p);
      const bound = (spec.gain ?? 1) * Math.sqrt(6 / (fanIn + fanOut));
      const d = new Float32Array(n);
      for (let i = 0; i < n; i++) d[i] = (2 * rng.nextFloat() - 1) * bound;
      return d;
    }
    case 'kaiming_fan_out': {
      const std = Math.sqrt(2 / fans(p).fanOut);
      const d = rng.randnArray(n);
      for (let i = 0; i < n; i++) d[i] *= std;
      return d;
    }
  }
}

/** Initialise every parameter and buffer of `model` (PyTorch layout values, then converted). */
export function initModule(
  model: Module,
  rng: Generator,
  rules: InitRule[] = [],
  weightInit: InitSpec = { kind: 'xavier' },
): void {
  for (const [key, p] of model.namedParameters()) {
    const rule = rules.find((r) => r.match.test(key));
    const spec = rule?.init ?? defaultSpec(key, p, weightInit);
    if (p.dtype === 'I64') {
      p.load({ dtype: 'I64', shape: p.torchShape, data: new BigInt64Array(p.size) });
      continue;
    }
    const data = draw(spec, p, rng);
    if (rule?.scale !== undefined) for (let i = 0; i < data.length; i++) data[i] *= rule.scale;
    p.load({ dtype: 'F32', shape: p.torchShape, data });
  }
}

export function priorInitRules(depth: number): InitRule[] {
  return [
    { match: /^projection\.weight$/, init: { kind: 'normal', std: 0.02 } },
    { match: /^cond_mapper\.(0|2)\.weight$/, init: { kind: 'normal', std: 0.02 } },
    { match: /^out\.1\.weight$/, init: { kind: 'zeros' } },
    { match: /^blocks\.\d+\.channelwise\.4\.weight$/, init: { kind: 'xavier' }, scale: Math.sqrt(1 / depth) },
    { match: /^blocks\.\d+\.mapper\.weight$/, init: { kind: 'zeros' } },
  ];
}

export function diffnextInitRules(totalBlocks: number): InitRule[] {
  return [
    { match: /^effnet_mappers\.\d+\.weight$/, init: { kind: 'normal', std: 0.02 } },
    { match: /^clip_mapper\.weight$/, init: { kind: 'normal', std: 0.02 } },
    { match: /^embedding\.1\.weight$/, init: { kind: 'xavier', gain: 0.02 } },
    { match: /^clf\.1\.weight$/, init: { kind: 'zeros' } },
    {
      match: /_blocks\.\d+\.\d+\.channelwise\.4\.weight$/,
      init: { kind: 'xavier' },
      scale: Math.sqrt(1 / totalBlocks),
    },
    { match: /_blocks\.\d+\.\d+\.mapper\.weight$/, init: { kind: 'zeros' } },
  ];
}

export function vqganInitRules(codebookSize: number): InitRule[] {
  return [
    { match: /\.gammas$/, init: { kind: 'zeros' } },
    { match: /^vquantizer\.embedding\.weight$/, init: { kind: 'uniform', bound: 1 / codebookSize } },
  ];
}

/**
 * transformers' `CLIPPreTrainedModel._init_weights` (factor 1): embeddings N(0, 0.02); q/k/v and
 * fc2 N(0, D^-0.5·(2L)^-0.5); out_proj N(0, D^-0.5); fc1 N(0, (2D)^-0.5); biases 0, LayerNorm 1/0.
 */
export function clipTextInitRules(hidden: number, layers: number): InitRule[] {
  const inProj = hidden ** -0.5 * (2 * layers) ** -0.5;
  return [
    { match: /embedding\.weight$/, init: { kind: 'normal', std: 0.02 } },
    { match: /self_attn\.(q|k|v)_proj\.weight$/, init: { kind: 'normal', std: inProj } },
    { match: /self_attn\.out_proj\.weight$/, init: { kind: 'normal', std: hidden ** -0.5 } },
    { match: /mlp\.fc1\.weight$/, init: { kind: 'normal', std: (2 * hidden) ** -0.5 } },
    { match: /mlp\.fc2\.weight$/, init: { kind: 'normal', std: inProj } },
  ];
}

export const EFFNET_WEIGHT_INIT: InitSpec = { kind: 'kaiming_fan_out' };
