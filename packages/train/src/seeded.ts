/**
 * Deterministic stochastic layers. `tf.dropout` and the effnet's StochasticDepth draw from tfjs's
 * own unseeded RNG, which would make a resumed run diverge from an uninterrupted one. During
 * training the trainers replace the `forward` of every Dropout / StochasticDepth instance of the
 * trained model (instance-level override; the classes are untouched) with a version that takes an
 * explicit seed `deriveSeed(stepSeed, callIndex)`, where `stepSeed` is drawn from the run's
 * saved Generator once per micro-batch. Layers with p = 0 are left alone.
 */
import * as tf from '@tensorflow/tfjs';
import { Dropout, Module } from '@wuerstchen/core';
import { StochasticDepth } from 'wuerstchen';
import { deriveSeed } from './rng';

export class SeededStochasticLayers {
  private base = 0;
  private calls = 0;
  /** number of layers whose forward was replaced. */
  readonly count: number;

  constructor(model: Module) {
    let n = 0;
    const visit = (m: Module) => {
      if (m instanceof Dropout && m.p > 0) {
        const layer = m;
        layer.forward = (x: tf.Tensor) => (layer.training ? tf.dropout(x, layer.p, undefined, this.nextSeed()) : x);
        n++;
      } else if (m instanceof StochasticDepth && m.p > 0) {
        const layer = m;
        layer.forward = (x: tf.Tensor) => {
          if (!layer.training) return x;
          return tf.tidy(() => {
            const survival = 1 - layer.p;
            const u = tf.randomUniform([x.shape[0], 1, 1, 1], 0, 1, 'float32', this.nextSeed());
            const keep = tf.cast(tf.less(u, survival), 'float32');
            return tf.mul(x, survival > 0 ? tf.div(keep, survival) : keep);
          });
        };
        n++;
      }
      for (const [, c] of m.namedChildren()) if (c) visit(c);
    };
    visit(model);
    this.count = n;
  }

  /** Start a new micro-batch: all masks of the next forward derive from `seed`. */
  reseed(seed: number): void {
    this.base = seed >>> 0;
    this.calls = 0;
  }

  private nextSeed(): number {
    return deriveSeed(this.base, this.calls++);
  }
}
