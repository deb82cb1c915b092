import * as tf from '@tensorflow/tfjs';

/**
 * Optional observer of named intermediate tensors (used by the reference-case harness and for
 * debugging). It receives a tensor owned by the caller and must clone what it keeps.
 */
export type Trace = (name: string, t: tf.Tensor) => void;

/** A Trace that keeps clones of everything it sees. */
export function collectTrace(
  into: Record<string, tf.Tensor>,
  map: (name: string, t: tf.Tensor) => tf.Tensor = (_, t) => t,
): Trace {
  return (name, t) => {
    into[name]?.dispose();
    into[name] = tf.keep(tf.tidy(() => tf.clone(map(name, t))));
  };
}
