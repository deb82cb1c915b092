/**
 * The semantic compressor: `EfficientNetEncoder` (diffusers research example
 * examples/research_projects/wuerstchen/text_to_image/modeling_efficient_net_encoder.py). backbone = torchvision
 * `efficientnet_v2_s().features`, mapper = Conv1×1(c_cond → c_latent, no bias) + BatchNorm2d.
 * Activations are NHWC.
 */
import * as tf from '@tensorflow/tfjs';
import { BatchNorm2d, Conv2d, Layer, Module, Sequential, SiLU } from '@wuerstchen/core';
import { silu } from '@wuerstchen/core/internal';
import { Trace } from './trace';

/** One stage of torchvision's `inverted_residual_setting` (`FusedMBConvConfig` / `MBConvConfig` arguments). */
export interface InvertedResidualConfig {
  block: 'FusedMBConv' | 'MBConv';
  expand_ratio: number;
  kernel: number;
  stride: number;
  input_channels: number;
  out_channels: number;
  num_layers: number;
}

const stage = (
  block: InvertedResidualConfig['block'],
  e: number,
  k: number,
  s: number,
  i: number,
  o: number,
  n: number,
): InvertedResidualConfig => ({
  block,
  expand_ratio: e,
  kernel: k,
  stride: s,
  input_channels: i,
  out_channels: o,
  num_layers: n,
});

/** torchvision `_efficientnet_conf` for the EfficientNetV2 variants Würstchen uses (v2: S; dome272 v1: L), last_channel 1280. */
export const EFFNET_SETTINGS: Record<'efficientnet_v2_s' | 'efficientnet_v2_l', InvertedResidualConfig[]> = {
  efficientnet_v2_s: [
    stage('FusedMBConv', 1, 3, 1, 24, 24, 2),
    stage('FusedMBConv', 4, 3, 2, 24, 48, 4),
    stage('FusedMBConv', 4, 3, 2, 48, 64, 4),
    stage('MBConv', 4, 3, 2, 64, 128, 6),
    stage('MBConv', 6, 3, 1, 128, 160, 9),
    stage('MBConv', 6, 3, 2, 160, 256, 15),
  ],
  efficientnet_v2_l: [
    stage('FusedMBConv', 1, 3, 1, 32, 32, 4),
    stage('FusedMBConv', 4, 3, 2, 32, 64, 7),
    stage('FusedMBConv', 4, 3, 2, 64, 96, 7),
    stage('MBConv', 4, 3, 2, 96, 192, 10),
    stage('MBConv', 6, 3, 1, 192, 224, 19),
    stage('MBConv', 6, 5, 2, 224, 384, 25),
    stage('MBConv', 6, 3, 1, 384, 640, 7),
  ],
};

/** torchvision `_make_divisible(v, 8)`: round to a multiple of 8, never more than 10% down. */
function makeDivisible(v: number, divisor = 8): number {
  const rounded = Math.max(divisor, Math.floor((v + divisor / 2) / divisor) * divisor);
  return rounded < 0.9 * v ? rounded + divisor : rounded;
}

/** torchvision `Conv2dNormActivation`: Conv2d(k, stride, padding (k−1)/2, no bias) → BatchNorm2d → SiLU (if `act`). */
export class Conv2dNormActivation extends Sequential {
  constructor(
    inC: number,
    outC: number,
    kernel: number,
    opts: { stride?: number; groups?: number; act?: boolean; eps: number },
  ) {
    const layers: Layer[] = [
      new Conv2d(inC, outC, kernel, {
        stride: opts.stride ?? 1,
        padding: (kernel - 1) >> 1,
        groups: opts.groups ?? 1,
        bias: false,
      }),
      new BatchNorm2d(outC, opts.eps),
    ];
    if (opts.act ?? true) layers.push(new SiLU());
    super(layers);
  }
}

/** torchvision `SqueezeExcitation(C, S, activation=SiLU)`: x·σ(fc2(SiLU(fc1(avgpool(x))))). */
export class SqueezeExcitation extends Module {
  readonly fc1: Conv2d;
  readonly fc2: Conv2d;
  constructor(inputChannels: number, squeezeChannels: number) {
    super();
    this.fc1 = this.child('fc1', new Conv2d(inputChannels, squeezeChannels, 1));
    this.fc2 = this.child('fc2', new Conv2d(squeezeChannels, inputChannels, 1));
  }
  forward(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => tf.mul(x, tf.sigmoid(this.fc2.forward(silu(this.fc1.forward(tf.mean(x, [1, 2], true)))))));
  }
}

/**
 * torchvision `StochasticDepth(p, "row")`: in training, zero each batch row's residual branch
 * with probability p and scale the survivors by 1/(1−p); identity in eval (no keys).
 */
export class StochasticDepth extends Module {
  /** Seed of the next mask (a trainer sets this for replayable runs); unseeded when absent. */
  seed?: () => number;
  constructor(readonly p: number) {
    super();
  }
  forward(x: tf.Tensor): tf.Tensor {
    if (!this.training || this.p === 0) return x;
    return tf.tidy(() => {
      const survival = 1 - this.p;
      const u = tf.randomUniform([x.shape[0], 1, 1, 1], 0, 1, 'float32', this.seed?.());
      const keep = tf.cast(tf.less(u, survival), 'float32');
      return tf.mul(x, survival > 0 ? tf.div(keep, survival) : keep);
    });
  }
}

/** Shared residual logic of FusedMBConv / MBConv: `block(x)`, plus `x` through stochastic depth when stride 1 and in = out. */
abstract class InvertedResidual extends Module {
  abstract readonly block: Sequential;
  readonly stochasticDepth: StochasticDepth;
  readonly useResConnect: boolean;
  constructor(cnf: InvertedResidualConfig, sdProb: number) {
    super();
    this.useResConnect = cnf.stride === 1 && cnf.input_channels === cnf.out_channels;
    this.stochasticDepth = this.child('stochastic_depth', new StochasticDepth(sdProb));
  }
  forward(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const y = this.block.forward(x);
      return this.useResConnect ? tf.add(this.stochasticDepth.forward(y), x) : y;
    });
  }
}

/**
 * torchvision `FusedMBConv` (torchvision/models/efficientnet.py): expanded ≠ in: [Conv k×k stride s +BN+SiLU,
 * Conv1×1 project +BN]; else a single Conv k×k stride s +BN+SiLU.
 */
export class FusedMBConv extends InvertedResidual {
  readonly block: Sequential;
  constructor(cnf: InvertedResidualConfig, sdProb: number, eps: number) {
    super(cnf, sdProb);
    const expanded = makeDivisible(cnf.input_channels * cnf.expand_ratio);
    const layers =
      expanded !== cnf.input_channels
        ? [
            new Conv2dNormActivation(cnf.input_channels, expanded, cnf.kernel, { stride: cnf.stride, eps }),
            new Conv2dNormActivation(expanded, cnf.out_channels, 1, { act: false, eps }),
          ]
        : [new Conv2dNormActivation(cnf.input_channels, cnf.out_channels, cnf.kernel, { stride: cnf.stride, eps })];
    this.block = this.child('block', new Sequential(layers));
  }
}

/**
 * torchvision `MBConv` (torchvision/models/efficientnet.py): [Conv1×1 expand +BN+SiLU] (if expanded ≠ in),
 * depthwise Conv k×k stride s +BN+SiLU, SqueezeExcitation(expanded, max(1, in/4)), Conv1×1 project +BN.
 */
export class MBConv extends InvertedResidual {
  readonly block: Sequential;
  constructor(cnf: InvertedResidualConfig, sdProb: number, eps: number) {
    super(cnf, sdProb);
    const expanded = makeDivisible(cnf.input_channels * cnf.expand_ratio);
    const layers: Layer[] = [];
    if (expanded !== cnf.input_channels)
      layers.push(new Conv2dNormActivation(cnf.input_channels, expanded, 1, { eps }));
    layers.push(
      new Conv2dNormActivation(expanded, expanded, cnf.kernel, { stride: cnf.stride, groups: expanded, eps }),
      new SqueezeExcitation(expanded, Math.max(1, Math.floor(cnf.input_channels / 4))),
      new Conv2dNormActivation(expanded, cnf.out_channels, 1, { act: false, eps }),
    );
    this.block = this.child('block', new Sequential(layers));
  }
}

/**
 * torchvision `EfficientNet(...).features`: stem Conv3×3 s2 (3 → first stage's input) +BN+SiLU,
 * one Sequential of blocks per stage (only a stage's first block has its stride and input
 * width), head Conv1×1 → `lastChannel` +BN+SiLU. Block b of B gets stochastic-depth p = prob·b/B.
 */
export class EfficientNetFeatures extends Sequential {
  constructor(
    setting: InvertedResidualConfig[],
    lastChannel: number,
    opts: { stochasticDepthProb?: number; eps?: number } = {},
  ) {
    const eps = opts.eps ?? 1e-3;
    const sdProb = opts.stochasticDepthProb ?? 0.2;
    const total = setting.reduce((a, s) => a + s.num_layers, 0);
    const layers: Layer[] = [new Conv2dNormActivation(3, setting[0].input_channels, 3, { stride: 2, eps })];
    let id = 0;
    for (const cnf of setting) {
      const blocks: Layer[] = [];
      for (let j = 0; j < cnf.num_layers; j++) {
        const c = j === 0 ? cnf : { ...cnf, input_channels: cnf.out_channels, stride: 1 };
        const Block = cnf.block === 'MBConv' ? MBConv : FusedMBConv;
        blocks.push(new Block(c, (sdProb * id++) / total, eps));
      }
      layers.push(new Sequential(blocks));
    }
    layers.push(new Conv2dNormActivation(setting[setting.length - 1].out_channels, lastChannel, 1, { eps }));
    super(layers);
  }
}

/** Constructor config: the diffusers example's fields, plus an explicit backbone for reduced variants. */
export interface EfficientNetEncoderConfig {
  c_latent: number;
  c_cond: number;
  effnet: keyof typeof EFFNET_SETTINGS;
  /** custom backbone stages (overrides `effnet`). */
  inverted_residual_setting?: InvertedResidualConfig[];
  /** head width (torchvision default: 1280 for the named variants, else 4× the last stage's output); must equal `c_cond`. */
  last_channel?: number;
  /** stem width; torchvision takes it from the first stage's input_channels, so it must match. */
  stem_channels?: number;
  /** torchvision `stochastic_depth_prob` (0.2 for EfficientNetV2-S), scaled per block; training only. */
  stochastic_depth_prob?: number;
}

/** ImageNet statistics of the compressor's input normalisation (torchvision's EfficientNetV2 weights). */
export const IMAGENET_MEAN: readonly [number, number, number] = [0.485, 0.456, 0.406];
export const IMAGENET_STD: readonly [number, number, number] = [0.229, 0.224, 0.225];

export const EFFNET_ENCODER_DEFAULTS: EfficientNetEncoderConfig = {
  c_latent: 16,
  c_cond: 1280,
  effnet: 'efficientnet_v2_s',
};

export class EfficientNetEncoder extends Module {
  readonly config: EfficientNetEncoderConfig;
  readonly backbone: EfficientNetFeatures;
  readonly mapper: Sequential;

  constructor(config: Partial<EfficientNetEncoderConfig> = {}) {
    super();
    const cfg = (this.config = { ...EFFNET_ENCODER_DEFAULTS, ...config });
    const setting = cfg.inverted_residual_setting ?? EFFNET_SETTINGS[cfg.effnet];
    if (!setting)
      throw new Error(
        `EfficientNetEncoder: unknown effnet "${cfg.effnet}"; expected ${Object.keys(EFFNET_SETTINGS).join(' or ')}`,
      );
    const lastChannel =
      cfg.last_channel ?? (cfg.inverted_residual_setting ? 4 * setting[setting.length - 1].out_channels : 1280);
    if (lastChannel !== cfg.c_cond) {
      throw new Error(
        `EfficientNetEncoder: the backbone's last_channel (${lastChannel}) must equal c_cond (${cfg.c_cond})`,
      );
    }
    if (cfg.stem_channels !== undefined && cfg.stem_channels !== setting[0].input_channels) {
      throw new Error(
        `EfficientNetEncoder: stem_channels ${cfg.stem_channels} differs from the first stage's input_channels ${setting[0].input_channels}`,
      );
    }
    this.backbone = this.child(
      'backbone',
      new EfficientNetFeatures(setting, lastChannel, { stochasticDepthProb: cfg.stochastic_depth_prob }),
    );
    this.mapper = this.child(
      'mapper',
      new Sequential([new Conv2d(cfg.c_cond, cfg.c_latent, 1, { bias: false }), new BatchNorm2d(cfg.c_latent, 1e-5)]),
    );
  }

  /**
   * x: image `[B, H, W, 3]` (ImageNet-normalised) → `mapper(backbone(x))` `[B, H/32, W/32, c_latent]`,
   * the raw (≈ N(0, 1)) map Stage B is conditioned on. Stage C's target is `toPriorLatents` of it.
   * `trace` sees `features_<i>` (each backbone stage) and `backbone_out`.
   */
  forward(x: tf.Tensor, trace?: Trace): tf.Tensor4D {
    if (x.rank !== 4 || x.shape[3] !== 3) {
      throw new Error(`EfficientNetEncoder: expected an NHWC image [B, H, W, 3], got [${x.shape}]`);
    }
    return tf.tidy(() => {
      let h = x;
      this.backbone.items.forEach((layer, i) => {
        h = layer.forward(h);
        trace?.(`features_${i}`, h);
      });
      trace?.('backbone_out', h);
      return this.mapper.forward(h);
    }) as tf.Tensor4D;
  }
}

/**
 * The Stage C (prior) latent of an effnet map: `(e + 1) / 42` (dome272/Wuerstchen train_stage_C.py; dome272
 * applies it inside the encoder). Stage B takes the raw map; the prior pipeline undoes this
 * with `latents·42 − 1`.
 */
export function toPriorLatents(effnet: tf.Tensor): tf.Tensor {
  return tf.tidy(() => tf.div(tf.add(effnet, 1), 42));
}

/** Output side of the compressor for an input side (the stem and each stride-2 stage: ceil(n/2)). */
export function effnetOutSize(cfg: EfficientNetEncoderConfig, n: number): number {
  const setting = cfg.inverted_residual_setting ?? EFFNET_SETTINGS[cfg.effnet];
  let s = Math.ceil(n / 2);
  for (const st of setting) if (st.stride === 2) s = Math.ceil(s / 2);
  return s;
}

/** Input side whose compressor map has side `n` (the compressor's total stride times n). */
export function effnetInSize(cfg: EfficientNetEncoderConfig, n: number): number {
  const setting = cfg.inverted_residual_setting ?? EFFNET_SETTINGS[cfg.effnet];
  return n * 2 ** (1 + setting.filter((st) => st.stride === 2).length);
}

const BLOCK_FIELDS = ['expand_ratio', 'kernel', 'stride', 'input_channels', 'out_channels', 'num_layers'] as const;

/** Checks an `EfficientNetEncoder` config.json (the fields of {@link EfficientNetEncoderConfig}); errors name `where`. */
export function parseEfficientNetEncoderConfig(
  json: Record<string, unknown>,
  where = 'EfficientNetEncoderConfig',
): EfficientNetEncoderConfig {
  const fail = (msg: string): never => {
    throw new Error(`${where}: ${msg}`);
  };
  const cfg: EfficientNetEncoderConfig = { ...EFFNET_ENCODER_DEFAULTS };
  for (const k of ['c_latent', 'c_cond', 'last_channel', 'stem_channels'] as const) {
    const v = json[k];
    if (v === undefined) continue;
    if (!Number.isInteger(v) || (v as number) <= 0 || (v as number) > 65536)
      fail(`"${k}" must be a positive integer, got ${JSON.stringify(v)}`);
    cfg[k] = v as number;
  }
  if (json.effnet !== undefined) {
    if (typeof json.effnet !== 'string' || !(json.effnet in EFFNET_SETTINGS))
      fail(`"effnet" must be one of ${Object.keys(EFFNET_SETTINGS).join(', ')}, got ${JSON.stringify(json.effnet)}`);
    cfg.effnet = json.effnet as EfficientNetEncoderConfig['effnet'];
  }
  if (json.stochastic_depth_prob !== undefined) {
    const p = json.stochastic_depth_prob;
    if (typeof p !== 'number' || !(p >= 0 && p < 1))
      fail(`"stochastic_depth_prob" must be in [0, 1), got ${JSON.stringify(p)}`);
    cfg.stochastic_depth_prob = p as number;
  }
  const setting = json.inverted_residual_setting;
  if (setting !== undefined) {
    if (!Array.isArray(setting) || setting.length === 0 || setting.length > 64)
      fail('"inverted_residual_setting" must be a list of 1 to 64 stages');
    cfg.inverted_residual_setting = (setting as unknown[]).map((st, i) => {
      const s = st as Record<string, unknown>;
      if (!s || typeof s !== 'object' || (s.block !== 'MBConv' && s.block !== 'FusedMBConv'))
        fail(`inverted_residual_setting[${i}].block must be "MBConv" or "FusedMBConv"`);
      for (const k of BLOCK_FIELDS) {
        if (!Number.isInteger(s[k]) || (s[k] as number) <= 0 || (s[k] as number) > 65536)
          fail(`inverted_residual_setting[${i}].${k} must be a positive integer, got ${JSON.stringify(s[k])}`);
      }
      return s as unknown as InvertedResidualConfig;
    });
  }
  return cfg;
}
