'use strict';
/**
 * Analytic FLOP counts (multiply-add = 2 FLOPs) of the matmul / conv work in each benchmark.
 * Elementwise work (LayerNorm, GELU, GRN, softmax, resize) is not counted, for every backend alike
 * (so that the backends compare on the same work). Forward+backward is counted as 3× forward.
 *
 * bench/check_flops.js cross-checks these formulas against the kernels tfjs actually runs
 * (tf.profile), and bench/torch_reference.py counts its own FLOPs with module hooks.
 */

/** Linear over `tokens` rows. */
const lin = (tokens, cin, cout) => 2 * tokens * cin * cout;
/** Conv with output n×oh×ow×cout, each output reading (cin/groups)·k² inputs. */
const conv = (n, oh, ow, cin, cout, k, groups = 1) => 2 * n * oh * ow * cout * (cin / groups) * k * k;
/** Transposed conv counted input-centrically: every input pixel × k² × cin × cout. */
const convT = (n, ih, iw, cin, cout, k) => 2 * n * ih * iw * cin * cout * k * k;

function resBlock(B, N, c, k = 3) {
  // depthwise k×k (groups = c), then Linear(c→4c), Linear(4c→c) per pixel
  return 2 * B * N * c * k * k + lin(B * N, c, 4 * c) + lin(B * N, 4 * c, c);
}

function resBlockStageB(B, N, c, cSkip, k = 3) {
  return 2 * B * N * c * k * k + lin(B * N, c + cSkip, 4 * c) + lin(B * N, 4 * c, c);
}

function timestepBlock(B, c, cR) {
  return lin(B, cR, 2 * c);
}

/** AttnBlock with self_attn: kv = N image tokens + S cond tokens. */
function attnBlock(B, N, c, cCond, S) {
  const L = N + S;
  return (
    lin(B * S, cCond, c) + // kv_mapper
    lin(B * N, c, c) + // to_q
    2 * lin(B * L, c, c) + // to_k, to_v
    2 * (2 * B * N * L * c) + // q·kᵀ and P·v summed over heads (heads·d = c)
    lin(B * N, c, c) // to_out.0
  );
}

/** One Stage C block triple (ResBlock + TimestepBlock + AttnBlock), c_cond = c. */
function stagecBlock({ B = 2, H = 24, W = 24, c = 1536, cR = 64, S = 77 } = {}) {
  const N = H * W;
  return resBlock(B, N, c) + timestepBlock(B, c, cR) + attnBlock(B, N, c, c, S);
}

function prior({ B = 2, H = 24, W = 24, S = 77, c_in = 16, c = 1536, c_cond = 1280, c_r = 64, depth = 32 } = {}) {
  return (
    conv(B, H, W, c_in, c, 1) + // projection
    lin(B * S, c_cond, c) +
    lin(B * S, c, c) + // cond_mapper
    depth * stagecBlock({ B, H, W, c, cR: c_r, S }) +
    conv(B, H, W, c, 2 * c_in, 1) // out
  );
}

const DIFFNEXT = {
  c_in: 4,
  c_out: 4,
  c_r: 64,
  patch_size: 2,
  c_cond: 1024,
  c_hidden: [320, 640, 1280, 1280],
  blocks: [4, 4, 14, 4],
  level_config: ['CT', 'CTA', 'CTA', 'CTA'],
  inject_effnet: [false, true, true, true],
  effnet_embd: 16,
  clip_embd: 1024,
  kernel_size: 3,
};

/** WuerstchenDiffNeXt forward on a latent `[B, H, W, c_in]` with S text tokens. */
function diffnext({ B = 1, H = 128, W = 128, S = 77, config = {} } = {}) {
  const cfg = { ...DIFFNEXT, ...config };
  const p = cfg.patch_size;
  const levels = cfg.c_hidden.length;
  const side = (i) => [H / p / 2 ** i, W / p / 2 ** i];
  let f = lin(B * S, cfg.clip_embd, cfg.c_cond); // clip_mapper
  const [h0, w0] = side(0);
  f += conv(B, h0, w0, cfg.c_in * p * p, cfg.c_hidden[0], 1); // embedding
  const block = (type, i, cSkip) => {
    const [h, w] = side(i);
    const c = cfg.c_hidden[i];
    if (type === 'C') return resBlockStageB(B, h * w, c, cSkip, cfg.kernel_size);
    if (type === 'T') return timestepBlock(B, c, cfg.c_r);
    return attnBlock(B, h * w, c, cfg.c_cond, S);
  };
  const effnet = (i) => {
    const [h, w] = side(i);
    return cfg.inject_effnet[i] ? conv(B, h, w, cfg.effnet_embd, cfg.c_cond, 1) : 0;
  };
  for (let i = 0; i < levels; i++) {
    const [h, w] = side(i);
    if (i > 0) f += conv(B, h, w, cfg.c_hidden[i - 1], cfg.c_hidden[i], 2); // stride-2 k2 downsampler
    f += effnet(i);
    for (let b = 0; b < cfg.blocks[i]; b++) {
      for (const type of cfg.level_config[i]) f += block(type, i, cfg.inject_effnet[i] ? cfg.c_cond : 0);
    }
  }
  for (let i = levels - 1; i >= 0; i--) {
    const [h, w] = side(i);
    f += effnet(i);
    for (let b = 0; b < cfg.blocks[i]; b++) {
      [...cfg.level_config[i]].forEach((type, k) => {
        const levelSkip = i < levels - 1 && b === 0 && k === 0 ? cfg.c_hidden[i] : 0;
        f += block(type, i, levelSkip + (cfg.inject_effnet[i] ? cfg.c_cond : 0));
      });
    }
    if (i > 0) f += convT(B, h, w, cfg.c_hidden[i], cfg.c_hidden[i - 1], 2); // ConvTranspose k2 s2 upsampler
  }
  f += conv(B, h0, w0, cfg.c_hidden[0], cfg.c_out * 2 * p * p, 1); // clf
  return f;
}

/** MixingResidualBlock(C, 4C) at N pixels: depthwise 3×3 + Linear(C→4C) + Linear(4C→C). */
function mixBlock(B, N, C) {
  return 2 * B * N * C * 9 + lin(B * N, C, 4 * C) + lin(B * N, 4 * C, C);
}

/** PaellaVQModel.decode of latents `[B, h, w, 4]` (c_levels 192, 384; 12 bottleneck blocks). */
function vqDecode({ B = 1, h = 256, w = 256, levels = [192, 384], bottleneck = 12, latent = 4, out = 3, r = 2 } = {}) {
  const N = h * w;
  const [c0, c1] = levels;
  return (
    conv(B, h, w, latent, c1, 1) +
    bottleneck * mixBlock(B, N, c1) +
    convT(B, h, w, c1, c0, 4) + // ConvTranspose2d(384→192, k4, s2, p1)
    mixBlock(B, 4 * N, c0) +
    conv(B, 2 * h, 2 * w, c0, out * r * r, 1)
  );
}

/**
 * FLOPs of the matmul/conv kernels in a tf.profile() result (for cross-checking the formulas).
 * Only the output and input shapes are recorded, so K is derived from a's element count.
 */
function flopsFromProfile(kernels) {
  const prod = (s) => s.reduce((a, b) => a * b, 1);
  let total = 0;
  const byKernel = {};
  for (const k of kernels) {
    const ins = k.inputShapes;
    const out = k.outputShapes[0];
    let f = 0;
    switch (k.name) {
      case 'BatchMatMul':
      case '_FusedMatMul': {
        const a = ins[0];
        const m = out[out.length - 2];
        const batchA = prod(a.slice(0, -2));
        const kk = prod(a) / batchA / m;
        f = 2 * prod(out) * kk;
        break;
      }
      case 'Conv2D':
      case 'FusedConv2D': {
        const [kh, kw, cin] = ins[1];
        f = 2 * prod(out) * kh * kw * cin;
        break;
      }
      case 'DepthwiseConv2dNative':
      case 'FusedDepthwiseConv2D': {
        const [kh, kw] = ins[1];
        f = 2 * prod(out) * kh * kw;
        break;
      }
      case 'Conv2DBackpropInput': {
        // inputs dy [n, oh, ow, cout], filter [kh, kw, cin, cout]
        const [kh, kw, cin] = ins[1];
        f = 2 * prod(ins[0]) * kh * kw * cin;
        break;
      }
      case 'Conv2DBackpropFilter': {
        // inputs x, dy; output filter [kh, kw, cin, cout]
        const [kh, kw, cin] = out;
        f = 2 * prod(ins[1]) * kh * kw * cin;
        break;
      }
      default:
        continue;
    }
    byKernel[k.name] = (byKernel[k.name] || 0) + f;
    total += f;
  }
  return { total, byKernel };
}

module.exports = {
  lin,
  conv,
  convT,
  resBlock,
  resBlockStageB,
  timestepBlock,
  attnBlock,
  stagecBlock,
  prior,
  diffnext,
  mixBlock,
  vqDecode,
  flopsFromProfile,
  DIFFNEXT,
};
