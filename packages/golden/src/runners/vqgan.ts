/** Runner for the Stage A case `vqgan_tiny` (golden README "Cases"; diffusers src/diffusers/pipelines/wuerstchen/modeling_paella_vq_model.py). */
import * as tf from '@tensorflow/tfjs';
import { toNCHW, toNHWC } from '@wuerstchen/core/internal';
import { PaellaVQConfig, PaellaVQModel } from 'wuerstchen';
import { registerRunner } from '../harness';

registerRunner('PaellaVQModel', (ctx) => {
  const model = new PaellaVQModel(ctx.spec.config as Partial<PaellaVQConfig>);
  try {
    model.loadStateDict(ctx.weights(), { source: ctx.file(ctx.spec.weights as string) });
    model.eval();
    const tensors = tf.tidy(() => {
      const image = toNHWC(ctx.tensor('image'));
      const latentsIn = toNHWC(ctx.tensor('latents_in'));
      const latents = model.encode(image);
      const vq = model.vquantizer.forward(latentsIn);
      const encodedVq = model.vquantizer.forward(latents);
      return {
        latents: toNCHW(latents),
        decoded: toNCHW(model.decode(latentsIn, true)),
        quantized: toNCHW(vq.quantized),
        indices: vq.indices,
        decoded_quantized: toNCHW(model.decode(latentsIn, false)),
        encoded_quantized: toNCHW(encodedVq.quantized),
        encoded_indices: encodedVq.indices,
        forward: toNCHW(model.forward(image)),
      };
    });
    return { tensors };
  } finally {
    model.dispose();
  }
});
