/**
 * variableGrads (packages/core/src/grads.ts): tfjs's backward pass with early frees. Same gradients as
 * tf.variableGrads, bit for bit; a lower peak; nothing left behind.
 */
import * as tf from '@tensorflow/tfjs';
import { variableGrads } from '@wuerstchen/core/internal';
import { WuerstchenPrior } from 'wuerstchen';

describe('variableGrads', () => {
  let prior: WuerstchenPrior;
  let vars: tf.Variable[];
  let inputs: tf.Tensor[];

  beforeAll(async () => {
    await tf.setBackend('cpu');
    prior = new WuerstchenPrior({ c_in: 8, c: 32, c_cond: 16, c_r: 16, depth: 2, nhead: 2 });
    vars = prior.trainableParameters().map(([, p]) => p.value);
    inputs = [
      tf.randomNormal([2, 6, 6, 8], 0, 1, 'float32', 1),
      tf.tensor1d([0.3, 0.8]),
      tf.randomNormal([2, 5, 16], 0, 1, 'float32', 2),
    ];
  });
  afterAll(() => {
    prior.dispose();
    tf.dispose(inputs);
  });

  const loss = () => {
    const [x, r, c] = inputs;
    return tf.mean(tf.square(prior.forward(x, r, c))) as tf.Scalar;
  };

  test('gives tf.variableGrads’ value and gradients bit for bit, and frees everything it made', () => {
    const before = tf.memory().numTensors;
    const theirs = tf.variableGrads(loss, vars);
    const ours = variableGrads(loss, vars);
    expect(ours.value.dataSync()).toEqual(theirs.value.dataSync());
    expect(Object.keys(ours.grads).sort()).toEqual(Object.keys(theirs.grads).sort());
    expect(Object.keys(ours.grads)).toHaveLength(vars.length);
    for (const [name, g] of Object.entries(theirs.grads)) expect(ours.grads[name].dataSync()).toEqual(g.dataSync());
    tf.dispose([ours.value, theirs.value, ...Object.values(ours.grads), ...Object.values(theirs.grads)]);
    expect(tf.memory().numTensors).toBe(before);
  });

  test('peaks lower than tf.variableGrads', async () => {
    const peak = async (grads: typeof variableGrads) => {
      const info = await tf.profile(() => {
        const { value, grads: g } = grads(loss, vars);
        tf.dispose([value, ...Object.values(g)]);
      });
      return info.peakBytes;
    };
    const [theirs, ours] = [await peak(tf.variableGrads), await peak(variableGrads)];
    expect(ours).toBeLessThan(0.8 * theirs);
  });

  test('names what is wrong, and leaves nothing behind', () => {
    const frozen = tf.variable(tf.zeros([1]), false);
    const unrelated = tf.variable(tf.zeros([1]));
    const before = tf.memory().numTensors;
    expect(() => variableGrads(() => tf.ones([2]) as unknown as tf.Scalar, vars)).toThrow(
      /must return a scalar.*rank 1/,
    );
    expect(() => variableGrads(loss, [frozen])).toThrow(/none of the 1 variables is trainable/);
    expect(() => variableGrads(loss, [unrelated])).toThrow(/no variable leads to the value/);
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([frozen, unrelated]);
  });
});
