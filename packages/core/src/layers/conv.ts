import * as tf from '@tensorflow/tfjs';
import { Module, Parameter, init } from '../module';
import { OutputDelta } from './linear';

export type PaddingMode = 'zeros' | 'replicate';

export interface Conv2dOptions {
  stride?: number;
  padding?: number;
  groups?: number;
  bias?: boolean;
  paddingMode?: PaddingMode;
}

/** Edge-replicate padding of an NHWC tensor (`nn.ReplicationPad2d`), built from edge slices. */
export function replicatePad(x: tf.Tensor4D, p: number): tf.Tensor4D {
  if (p === 0) return x;
  return tf.tidy(() => {
    const [, h, w] = x.shape;
    const rep = (t: tf.Tensor4D, axis: 1 | 2, start: number): tf.Tensor4D => {
      const begin = [0, 0, 0, 0];
      const size = [-1, -1, -1, -1];
      begin[axis] = start;
      size[axis] = 1;
      const edge = tf.slice(t, begin, size);
      return tf.concat(new Array(p).fill(edge), axis) as tf.Tensor4D;
    };
    const rows = tf.concat([rep(x, 1, 0), x, rep(x, 1, h - 1)], 1) as tf.Tensor4D;
    return tf.concat([rep(rows, 2, 0), rows, rep(rows, 2, w - 1)], 2) as tf.Tensor4D;
  });
}

function zeroPad(x: tf.Tensor4D, p: number): tf.Tensor4D {
  return p === 0
    ? x
    : tf.pad(x, [
        [0, 0],
        [p, p],
        [p, p],
        [0, 0],
      ]);
}

/**
 * `nn.Conv2d` on NHWC input. groups = 1 is a dense conv (weight `[kh, kw, in, out]`);
 * groups = out with in = m·out (depthwise, m = 1, or the prior's skip-concatenated ResBlock,
 * m = 2) runs as a depthwise conv over all inputs followed by a sum over each group's m channels.
 */
export class Conv2d extends Module {
  readonly weight: Parameter;
  readonly bias: Parameter | null;
  readonly stride: number;
  readonly padding: number;
  readonly groups: number;
  readonly paddingMode: PaddingMode;
  /** added to the output (LoRA on 1×1 convs); see OutputDelta. */
  readonly deltas: OutputDelta[] = [];

  constructor(
    readonly inChannels: number,
    readonly outChannels: number,
    readonly kernelSize: number,
    opts: Conv2dOptions = {},
  ) {
    super();
    this.stride = opts.stride ?? 1;
    this.padding = opts.padding ?? 0;
    this.groups = opts.groups ?? 1;
    this.paddingMode = opts.paddingMode ?? 'zeros';
    const g = this.groups;
    if (inChannels % g !== 0 || outChannels % g !== 0) {
      throw new Error(
        `Conv2d: in_channels ${inChannels} and out_channels ${outChannels} must be divisible by groups ${g}`,
      );
    }
    if (g !== 1 && g !== outChannels) {
      throw new Error(`Conv2d: groups=${g} is supported only as 1 or out_channels (${outChannels})`);
    }
    const fanIn = (inChannels / g) * kernelSize * kernelSize;
    const bound = 1 / Math.sqrt(fanIn);
    this.weight = this.param('weight', [outChannels, inChannels / g, kernelSize, kernelSize], {
      layout: g === 1 ? 'conv' : 'depthwise',
      init: init.uniform(bound),
    });
    this.bias = (opts.bias ?? true) ? this.param('bias', [outChannels], { init: init.uniform(bound) }) : null;
  }

  forward(x: tf.Tensor): tf.Tensor {
    if (!this.deltas.length) return this.convolve(x);
    return tf.tidy(() => this.deltas.reduce((acc, d) => tf.add(acc, d.forward(x)), this.convolve(x)));
  }

  private convolve(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const x4 = x as tf.Tensor4D;
      if (x4.rank !== 4 || x4.shape[3] !== this.inChannels) {
        throw new Error(
          `Conv2d(${this.inChannels}→${this.outChannels}): expected NHWC input with ${this.inChannels} channels, got [${x.shape}]`,
        );
      }
      const k = this.kernelSize;
      const p = this.padding;
      // A stride-1 conv with an odd kernel and p = k//2 is TF's 'same'; everything else pads explicitly.
      const same = this.paddingMode === 'zeros' && this.stride === 1 && k % 2 === 1 && p === (k - 1) / 2 && p > 0;
      const input = same ? x4 : this.paddingMode === 'replicate' ? replicatePad(x4, p) : zeroPad(x4, p);
      const pad = same ? 'same' : 'valid';
      const bias = this.bias?.value;
      if (this.groups === 1) {
        return tf.fused.conv2d({ x: input, filter: this.weight.value as tf.Tensor4D, strides: this.stride, pad, bias });
      }
      const m = this.inChannels / this.outChannels;
      // torch [out, m, k, k] is held as [k, k, out, m]; input channel g·m + j reads w[g, j].
      const filter = this.weight.value.reshape([k, k, this.inChannels, 1]) as tf.Tensor4D;
      if (m === 1) {
        return tf.fused.depthwiseConv2d({ x: input, filter, strides: this.stride, pad, bias });
      }
      const y = tf.depthwiseConv2d(input, filter, this.stride, pad);
      const [n, h, w] = y.shape;
      const summed = tf.sum(y.reshape([n, h, w, this.outChannels, m]), 4);
      return bias ? tf.add(summed, bias) : summed;
    });
  }
}

/**
 * `nn.ConvTranspose2d` on NHWC input with PyTorch geometry:
 * out = (in − 1)·stride − 2·padding + k, i.e. `out[y] += in[i]·w[k]` with y = i·stride − padding + k.
 */
export class ConvTranspose2d extends Module {
  readonly weight: Parameter;
  readonly bias: Parameter | null;
  readonly stride: number;
  readonly padding: number;

  constructor(
    readonly inChannels: number,
    readonly outChannels: number,
    readonly kernelSize: number,
    opts: { stride?: number; padding?: number; bias?: boolean } = {},
  ) {
    super();
    this.stride = opts.stride ?? 1;
    this.padding = opts.padding ?? 0;
    const bound = 1 / Math.sqrt(outChannels * kernelSize * kernelSize);
    this.weight = this.param('weight', [inChannels, outChannels, kernelSize, kernelSize], {
      layout: 'conv_transpose',
      init: init.uniform(bound),
    });
    this.bias = (opts.bias ?? true) ? this.param('bias', [outChannels], { init: init.uniform(bound) }) : null;
  }

  forward(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const x4 = x as tf.Tensor4D;
      if (x4.rank !== 4 || x4.shape[3] !== this.inChannels) {
        throw new Error(
          `ConvTranspose2d(${this.inChannels}→${this.outChannels}): expected NHWC input with ${this.inChannels} channels, got [${x.shape}]`,
        );
      }
      const [n, h, w] = x4.shape;
      const k = this.kernelSize;
      const s = this.stride;
      const full = tf.conv2dTranspose(
        x4,
        this.weight.value as tf.Tensor4D,
        [n, (h - 1) * s + k, (w - 1) * s + k, this.outChannels],
        s,
        'valid',
      );
      const p = this.padding;
      const cropped =
        p === 0
          ? full
          : tf.slice(full, [0, p, p, 0], [n, (h - 1) * s + k - 2 * p, (w - 1) * s + k - 2 * p, this.outChannels]);
      return this.bias ? tf.add(cropped, this.bias.value) : cropped;
    });
  }
}
