/**
 * A patch head on the semantic compressor, for Stage B (`objective.effnet_patches`).
 *
 * The caption-word head asks the map what the picture holds, and it reads only the map's mean. This head asks
 * every cell what lies under it: one linear layer, shared by all cells, maps a cell's features to the pixels of
 * that cell's own p×p patch of the compressor's (normalised) input, with a mean squared error. Stage B's effnet
 * mapper reads the map cell by cell too, so a map that passes this test tells it where things are. Trained
 * with the compressor and not exported (docs/training.md has the measurements).
 */
import * as tf from '@tensorflow/tfjs';
import { Linear, Module } from '@wuerstchen/core';
import { Generator } from 'wuerstchen';
import { initModule } from './init';

export class PatchHead extends Module {
  readonly proj: Linear;
  /**
   * @param cLatent the compressor's map channels
   * @param patch the side of the input patch under one map cell (input side / map side)
   */
  constructor(
    readonly cLatent: number,
    readonly patch: number,
  ) {
    super();
    this.proj = this.child('proj', new Linear(cLatent, patch * patch * 3));
  }

  init(rng: Generator): void {
    initModule(this, rng);
  }

  /** map `[B, h, w, c_latent]` → each cell's patch `[B, h, w, p·p·3]` (rows, then columns, then RGB). */
  forward(map: tf.Tensor): tf.Tensor4D {
    return this.proj.forward(map) as tf.Tensor4D;
  }

  /** Mean squared error between every cell's patch and the patch of `input` `[B, h·p, w·p, 3]` under it. */
  loss(map: tf.Tensor, input: tf.Tensor4D): tf.Scalar {
    return tf.tidy(
      () => tf.mean(tf.squaredDifference(this.forward(map), patchTargets(input, this.patch))) as tf.Scalar,
    );
  }
}

/** `[B, h·p, w·p, 3]` → `[B, h, w, p·p·3]`: the p×p patch under each cell, flattened as the head predicts it. */
export function patchTargets(input: tf.Tensor4D, p: number): tf.Tensor4D {
  const [b, height, width, c] = input.shape;
  if (height % p !== 0 || width % p !== 0)
    throw new Error(`patchTargets: input ${height}×${width} is not a whole number of ${p}×${p} patches`);
  const h = height / p;
  const w = width / p;
  return tf.tidy(() =>
    tf.reshape(tf.transpose(tf.reshape(input, [b, h, p, w, p, c]), [0, 1, 3, 2, 4, 5]), [b, h, w, p * p * c]),
  );
}
