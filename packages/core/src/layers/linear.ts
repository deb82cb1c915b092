import * as tf from '@tensorflow/tfjs';
import { Module, Parameter, init } from '../module';

/**
 * A term added to a layer's output, computed from the layer's own input: how LoRA adapters
 * (lora.ts) attach to an existing Linear or 1×1 Conv2d without replacing it in the module tree.
 * Deltas are not parameters of the layer: they have no state-dict keys.
 */
export interface OutputDelta {
  forward(x: tf.Tensor): tf.Tensor;
}

/**
 * `nn.Linear(in, out, bias)`: y = x·Wᵀ + b over the last axis of any-rank input.
 * The weight is held as `[in, out]` so the forward is a flag-free 2-D matmul.
 */
export class Linear extends Module {
  readonly weight: Parameter;
  readonly bias: Parameter | null;
  /** added to the output (LoRA); see OutputDelta. */
  readonly deltas: OutputDelta[] = [];

  constructor(
    readonly inFeatures: number,
    readonly outFeatures: number,
    bias = true,
  ) {
    super();
    const bound = 1 / Math.sqrt(inFeatures);
    this.weight = this.param('weight', [outFeatures, inFeatures], { layout: 'linear', init: init.uniform(bound) });
    this.bias = bias ? this.param('bias', [outFeatures], { init: init.uniform(bound) }) : null;
  }

  forward(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const shape = x.shape;
      const last = shape[shape.length - 1];
      if (last !== this.inFeatures) {
        throw new Error(
          `Linear(${this.inFeatures}→${this.outFeatures}): input has ${last} features (shape [${shape}])`,
        );
      }
      const x2 = x.reshape([-1, this.inFeatures]) as tf.Tensor2D;
      const y = tf.fused
        .matMul({ a: x2, b: this.weight.value as tf.Tensor2D, bias: this.bias?.value })
        .reshape([...shape.slice(0, -1), this.outFeatures]);
      return this.deltas.reduce((acc, d) => tf.add(acc, d.forward(x)), y);
    });
  }
}
