import * as tf from '@tensorflow/tfjs';

/** PyTorch NCHW → the project's NHWC. */
export const toNHWC = (x: tf.Tensor): tf.Tensor4D => tf.transpose(x, [0, 2, 3, 1]) as tf.Tensor4D;
/** The project's NHWC → PyTorch NCHW. */
export const toNCHW = (x: tf.Tensor): tf.Tensor4D => tf.transpose(x, [0, 3, 1, 2]) as tf.Tensor4D;
