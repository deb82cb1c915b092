/**
 * Fused kernels for the layers that dominate the elementwise time of Würstchen's blocks: exact GELU, LayerNorm
 * over the last axis, GlobalResponseNorm and the attention softmax. Each is a tfjs kernel registered by name, with its gradient
 * registered once here; a backend that implements them (the native one, backends/native.ts) runs each in one
 * pass over memory and saves only the input for the backward pass. On any other backend the layers compose the
 * same math from stock tfjs ops, so cpu, wasm and webgl results do not change.
 */
import * as tf from '@tensorflow/tfjs';

export const FusedKernel = {
  /** inputs { x }: 0.5·x·(1 + erf(x/√2)). */
  Gelu: 'WuGelu',
  /** inputs { dy, x }: dy·(Φ(x) + x·φ(x)). */
  GeluGrad: 'WuGeluGrad',
  /** inputs { x }, attrs { eps }: (x − mean)/√(var + eps) over the last axis (biased variance). */
  LayerNorm: 'WuLayerNorm',
  /** inputs { dy, x }, attrs { eps }: the LayerNorm's gradient with respect to x. */
  LayerNormGrad: 'WuLayerNormGrad',
  /** inputs { x: [B,H,W,C], gamma: [1,1,1,C], beta: [1,1,1,C] }: γ·(x·N) + β + x, N = G / (mean_C G + 1e-6),
   *  G = ‖x‖₂ over (H, W). */
  GlobalResponseNorm: 'WuGlobalResponseNorm',
  /** inputs { dy, x, gamma }: the GlobalResponseNorm's gradients with respect to x and to gamma (`[1,1,1,C]`),
   *  two outputs from one pass of sums. */
  GlobalResponseNormGrad: 'WuGlobalResponseNormGrad',
  /** inputs { logits }: softmax over the last axis (tfjs's Softmax kernel, whose gradient takes four ops). */
  Softmax: 'WuSoftmax',
  /** inputs { dy, y }: y·(dy − Σ dy·y) along the last axis, from the softmax y. */
  SoftmaxGrad: 'WuSoftmaxGrad',
  /** inputs { param, m, v, grad }, attrs { beta1, beta2, decay, stepSize, bc2Sqrt, eps }: one AdamW update,
   *  three outputs [param', m', v'] (adamw.ts has the math). Not differentiable. */
  AdamW: 'WuAdamW',
} as const;

/** Whether the active backend runs `kernel` (and `x` is a float32 tensor it takes). */
export function hasFusedKernel(kernel: string, x: tf.Tensor): boolean {
  return x.dtype === 'float32' && tf.getKernel(kernel, tf.getBackend()) !== undefined;
}

export function runFused(kernel: string, inputs: tf.NamedTensorMap, attrs?: tf.NamedAttrMap): tf.Tensor {
  return tf.engine().runKernel(kernel, inputs, attrs) as tf.Tensor;
}

tf.registerGradient({
  kernelName: FusedKernel.Gelu,
  inputsToSave: ['x'],
  gradFunc: (dy, [x]) => ({ x: () => runFused(FusedKernel.GeluGrad, { dy: dy as tf.Tensor, x }) }),
});

tf.registerGradient({
  kernelName: FusedKernel.LayerNorm,
  inputsToSave: ['x'],
  gradFunc: (dy, [x], attrs) => ({
    x: () => runFused(FusedKernel.LayerNormGrad, { dy: dy as tf.Tensor, x }, attrs),
  }),
});

tf.registerGradient({
  kernelName: FusedKernel.GlobalResponseNorm,
  inputsToSave: ['x', 'gamma'],
  gradFunc: (dy, [x, gamma]) => {
    const d = dy as tf.Tensor;
    // Both from one kernel, run here rather than in a thunk: tfjs runs each thunk in its own tidy, which would
    // dispose the other output. The backward pass's own tidy frees whichever of the two is not used.
    const [dx, dgamma] = tf.engine().runKernel(FusedKernel.GlobalResponseNormGrad, { dy: d, x, gamma }) as tf.Tensor[];
    return { x: () => dx, gamma: () => dgamma, beta: () => tf.sum(d, [0, 1, 2], true) };
  },
});

tf.registerGradient({
  kernelName: FusedKernel.Softmax,
  outputsToSave: [true],
  gradFunc: (dy, [y]) => ({ logits: () => runFused(FusedKernel.SoftmaxGrad, { dy: dy as tf.Tensor, y }) }),
});
