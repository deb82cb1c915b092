/**
 * Deterministic stochastic layers. `tf.dropout` and the effnet's StochasticDepth draw from tfjs's
 * own unseeded RNG, which would make a resumed run diverge from an uninterrupted one. During
 * training the trainers give every Dropout / StochasticDepth layer of the trained model a seed
 * source: each mask is drawn with the explicit seed `deriveSeed(stepSeed, callIndex)`, where `stepSeed` is drawn from the run's
 * saved Generator once per micro-batch. Layers with p = 0 are left alone.
 */
import { Dropout, Module } from '@wuerstchen/core';
import { StochasticDepth } from 'wuerstchen/internal';
import { deriveSeed } from './rng';

export class SeededStochasticLayers {
  private base = 0;
  private calls = 0;
  /** number of layers that draw their masks from this source. */
  readonly count: number;

  constructor(model: Module) {
    let n = 0;
    const visit = (m: Module) => {
      if ((m instanceof Dropout || m instanceof StochasticDepth) && m.p > 0) {
        m.seed = () => this.nextSeed();
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
