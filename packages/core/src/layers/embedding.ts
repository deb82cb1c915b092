import * as tf from '@tensorflow/tfjs';
import { Module, Parameter, init } from '../module';

/** `nn.Embedding(num, dim)`: rows of a `[num, dim]` table, same layout in both worlds. */
export class Embedding extends Module {
  readonly weight: Parameter;
  constructor(
    readonly numEmbeddings: number,
    readonly embeddingDim: number,
  ) {
    super();
    this.weight = this.param('weight', [numEmbeddings, embeddingDim], { init: init.normal(1) });
  }
  /** ids: int32 tensor of any shape → [...shape, dim]. */
  forward(ids: tf.Tensor): tf.Tensor {
    return tf.tidy(() => tf.gather(this.weight.value, ids.dtype === 'int32' ? ids : ids.toInt()));
  }
}
