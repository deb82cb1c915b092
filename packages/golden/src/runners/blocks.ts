/** Runners for the block-level cases and the resize (golden README "Cases"). */
import * as tf from '@tensorflow/tfjs';
import { Attention, GlobalResponseNorm, Module } from '@wuerstchen/core';
import { resizeBicubicAA, toNCHW, toNHWC } from '@wuerstchen/core/internal';
import {
  AttnBlock,
  ResBlock,
  ResBlockStageB,
  TimestepBlock,
  WuerstchenLayerNorm,
  genREmbedding,
} from 'wuerstchen/internal';
import { CaseContext, RunResult, registerRunner } from '../harness';

type Cfg = Record<string, number | boolean | undefined>;

/** Build a module, load the case weights (if any), run `fn`, and always free the module. */
function withModule<M extends Module>(ctx: CaseContext, m: M, fn: (m: M) => Record<string, tf.Tensor>): RunResult {
  try {
    if (ctx.spec.weights) m.loadStateDict(ctx.weights(), { source: ctx.file(ctx.spec.weights) });
    m.eval();
    return { tensors: tf.tidy(() => fn(m)) };
  } finally {
    m.dispose();
  }
}

/** Apply an NHWC image function to an NCHW case tensor and return NCHW. */
const nchw = (ctx: CaseContext, name: string, f: (x: tf.Tensor) => tf.Tensor): tf.Tensor =>
  toNCHW(f(toNHWC(ctx.tensor(name))));

registerRunner('WuerstchenLayerNorm', (ctx) => {
  const cfg = ctx.spec.config as Cfg;
  const m = new WuerstchenLayerNorm(
    cfg.normalized_shape as number,
    (cfg.eps as number) ?? 1e-6,
    Boolean(cfg.elementwise_affine),
  );
  return withModule(ctx, m, (mod) => ({ y: nchw(ctx, 'x', (x) => mod.forward(x)) }));
});

registerRunner('GlobalResponseNorm', (ctx) => {
  const cfg = ctx.spec.config as Cfg;
  return withModule(ctx, new GlobalResponseNorm(cfg.dim as number), (m) => ({ y: m.forward(ctx.tensor('x')) }));
});

registerRunner('TimestepBlock', (ctx) => {
  const cfg = ctx.spec.config as Cfg;
  return withModule(
    ctx,
    new TimestepBlock(cfg.c as number, (cfg.c_timestep as number) ?? (cfg.c_r as number)),
    (m) => ({
      y: nchw(ctx, 'x', (x) => m.forward(x, ctx.tensor('t'))),
    }),
  );
});

function resBlockRunner(Block: typeof ResBlock | typeof ResBlockStageB) {
  return (ctx: CaseContext) => {
    const cfg = ctx.spec.config as Cfg;
    const hasSkip = ctx.spec.inputs!.some((i) => i.name === 'x_skip');
    const m = new Block(cfg.c as number, (cfg.c_skip as number) ?? 0, (cfg.kernel_size as number) ?? 3);
    return withModule(ctx, m, (mod) => ({
      y: nchw(ctx, 'x', (x) => mod.forward(x, hasSkip ? toNHWC(ctx.tensor('x_skip')) : undefined)),
    }));
  };
}
registerRunner('ResBlock', resBlockRunner(ResBlock));
registerRunner('ResBlockStageB', resBlockRunner(ResBlockStageB));

registerRunner('AttnBlock', (ctx) => {
  const cfg = ctx.spec.config as Cfg;
  const m = new AttnBlock(cfg.c as number, cfg.c_cond as number, cfg.nhead as number, cfg.self_attn as boolean);
  return withModule(ctx, m, (mod) => ({ y: nchw(ctx, 'x', (x) => mod.forward(x, ctx.tensor('kv'))) }));
});

registerRunner('Attention', (ctx) => {
  const cfg = ctx.spec.config as Cfg;
  const m = new Attention(cfg.query_dim as number, {
    heads: cfg.heads as number,
    dimHead: cfg.dim_head as number,
    bias: cfg.bias as boolean,
  });
  return withModule(ctx, m, (mod) => {
    // A 4-D input is flattened to row-major pixel tokens and reshaped back (diffusers AttnProcessor).
    const run = (ctxTokens?: tf.Tensor) =>
      nchw(ctx, 'x', (x) => {
        const [b, h, w, c] = x.shape;
        return mod.forward(x.reshape([b, h * w, c]), ctxTokens).reshape([b, h, w, c]);
      });
    return { y: run(ctx.tensor('encoder_hidden_states')), y_self: run() };
  });
});

registerRunner('gen_r_embedding', (ctx) => {
  const width = ctx.spec.outputs![0].shape[1];
  return { tensors: tf.tidy(() => ({ emb: genREmbedding(ctx.tensor('r'), width) })) };
});

registerRunner('torch.nn.functional.interpolate', (ctx) => {
  const resizes = ctx.spec.resizes as { input: string; size: [number, number]; output: string }[];
  return {
    tensors: tf.tidy(() =>
      Object.fromEntries(
        resizes.map((r) => [r.output, nchw(ctx, r.input, (x) => resizeBicubicAA(x as tf.Tensor4D, r.size))]),
      ),
    ),
  };
});
