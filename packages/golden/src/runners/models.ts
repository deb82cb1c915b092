/** Runners for the Stage C prior and Stage B decoder cases (with their intermediates). */
import * as tf from '@tensorflow/tfjs';
import { resizeBicubicAA, toNCHW, toNHWC } from '@wuerstchen/core/internal';
import { WuerstchenDiffNeXt, WuerstchenDiffNeXtConfig, WuerstchenPrior, WuerstchenPriorConfig } from 'wuerstchen';
import { collectTrace } from 'wuerstchen/internal';
import { CaseContext, RunResult, registerRunner } from '../harness';

/** Intermediates are NHWC in the project; 4-D ones go back to NCHW for comparison. */
const asTorch = (_: string, t: tf.Tensor) => (t.rank === 4 ? toNCHW(t) : t);

function runPrior(ctx: CaseContext): RunResult {
  const model = new WuerstchenPrior(ctx.spec.config as Partial<WuerstchenPriorConfig>);
  const tensors: Record<string, tf.Tensor> = {};
  try {
    model.loadStateDict(ctx.weights(), { source: ctx.file(ctx.spec.weights as string) });
    tf.tidy(() => {
      const out = model.forward(
        toNHWC(ctx.tensor('x')),
        ctx.tensor('r'),
        ctx.tensor('c'),
        collectTrace(tensors, asTorch),
      );
      tensors.output = tf.keep(toNCHW(out));
    });
  } finally {
    model.dispose();
  }
  return { tensors };
}

registerRunner('WuerstchenPrior', (ctx) => {
  if (ctx.spec.case.startsWith('loader_')) throw new Error('loader cases run through the loader runner');
  return runPrior(ctx);
});

registerRunner('WuerstchenDiffNeXt', (ctx) => {
  const model = new WuerstchenDiffNeXt(ctx.spec.config as Partial<WuerstchenDiffNeXtConfig>);
  const tensors: Record<string, tf.Tensor> = {};
  try {
    model.loadStateDict(ctx.weights(), { source: ctx.file(ctx.spec.weights as string) });
    tf.tidy(() => {
      const out = model.forward(
        toNHWC(ctx.tensor('x')),
        ctx.tensor('r'),
        toNHWC(ctx.tensor('effnet')),
        ctx.tensor('clip'),
        {
          trace: collectTrace(tensors, asTorch),
        },
      );
      tensors.output = tf.keep(toNCHW(out));
      addEffnetResizes(ctx, tensors);
    });
  } finally {
    model.dispose();
  }
  return { tensors };
});

/**
 * The case also lists `effnet_resized_HxW` for levels without an effnet mapper (level 0), which
 * the model never computes; those are produced here with the same resize.
 */
function addEffnetResizes(ctx: CaseContext, tensors: Record<string, tf.Tensor>): void {
  for (const { name } of ctx.spec.intermediates ?? []) {
    const size = /^effnet_resized_(\d+)x(\d+)$/.exec(name);
    if (!size || tensors[name]) continue;
    const resized = resizeBicubicAA(toNHWC(ctx.tensor('effnet')), [Number(size[1]), Number(size[2])]);
    tensors[name] = tf.keep(toNCHW(resized));
  }
}
