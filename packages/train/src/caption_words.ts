/**
 * A caption-word head on the semantic compressor, for Stage B's joint phase (`objective.effnet_words`).
 *
 * The paper's compressor starts as an ImageNet classifier, so its map carries what the picture shows
 * before Stage B ever sees it. Ours starts from nothing, and Stage B's ε-loss alone barely rewards it for
 * encoding small details (in the shapes data it learns the colour and the place, not the shape). This
 * head stands in for that pretraining with the data we have: from every location of the map a linear
 * layer predicts which words the caption holds (token ids hashed into `buckets`), averaged over the
 * map, with a sigmoid cross-entropy. It is trained beside the decoder and is not part of the exported model.
 */
import * as tf from '@tensorflow/tfjs';
import { Linear, Module } from '@wuerstchen/core';
import { CLIPTokenizer, Generator } from 'wuerstchen';
import { initModule } from './init';

export class CaptionWordHead extends Module {
  readonly proj: Linear;
  constructor(
    readonly cLatent: number,
    readonly buckets: number,
  ) {
    super();
    this.proj = this.child('proj', new Linear(cLatent, buckets));
  }

  /**
   * Seeded init, then the biases at −log(buckets): a caption holds a few of the buckets, so every word
   * starts improbable, and the first updates go into telling the words apart rather than into the biases.
   */
  init(rng: Generator): void {
    initModule(this, rng);
    tf.tidy(() => this.proj.bias!.assign(tf.fill([this.buckets], -Math.log(this.buckets))));
  }

  /**
   * map `[B, H, W, c_latent]` → word logits `[B, buckets]`: each cell's logits, averaged over the map. The head is
   * linear, so this reads the map's mean: every cell gets the same gradient, and the words end up in a code that
   * all cells share (on the shapes data the cells then tell less of what lies under them; docs/training.md).
   */
  forward(map: tf.Tensor): tf.Tensor2D {
    return tf.tidy(() => tf.mean(this.proj.forward(map), [1, 2]) as tf.Tensor2D);
  }

  /** Sigmoid cross-entropy summed over buckets, averaged over the batch. */
  loss(map: tf.Tensor, targets: tf.Tensor2D): tf.Scalar {
    return tf.tidy(() => {
      const z = this.forward(map);
      return tf.div(tf.sum(tf.sub(tf.softplus(z), tf.mul(targets, z))), z.shape[0]) as tf.Scalar;
    });
  }
}

/** Multi-hot targets `[B, buckets]`: bucket `id mod buckets` is 1 for every token id of the caption. */
export function captionWordTargets(tokenizer: CLIPTokenizer, captions: string[], buckets: number): tf.Tensor2D {
  const data = new Float32Array(captions.length * buckets);
  captions.forEach((c, i) => {
    for (const id of tokenizer.encode(c)) data[i * buckets + (id % buckets)] = 1;
  });
  return tf.tensor2d(data, [captions.length, buckets]);
}
