#!/usr/bin/env python3
"""PyTorch reference for `npm run bench`: the same measurements, shapes and JSON fields, backend "torch".

CPU only, torch.set_num_threads(2), NCHW for convolutions (as diffusers), float32, random weights.
The Würstchen modules are the diffusers math (modeling_wuerstchen_common.py, _prior.py, _diffnext.py,
modeling_paella_vq_model.py, AttnProcessor) written in plain torch; diffusers is not imported.

    python3 bench/torch_reference.py                 # all measurements, each in its own subprocess
    python3 bench/torch_reference.py matmul conv     # names containing "matmul" or "conv"
    python3 bench/torch_reference.py --only matmul   # one measurement in this process (what bench/run.js calls)
    options: --threads 2  --max-seconds 600  --repeats N  --list

Debian's python3-torch links libblas.so.3; install libopenblas0-pthread so that resolves to OpenBLAS
(with the reference libblas3 it is 20-50x slower). The BLAS in use is printed in the "blas" field.
"""
import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------
# FLOP counting (multiply-add = 2), matmul/conv only, like bench/flops.js

FLOPS = {"on": False, "n": 0}


def _count(n):
    if FLOPS["on"]:
        FLOPS["n"] += n


class Linear(nn.Linear):
    def forward(self, x):
        _count(2 * x.numel() // self.in_features * self.in_features * self.out_features)
        return super().forward(x)


class Conv2d(nn.Conv2d):
    def forward(self, x):
        y = super().forward(x)
        kh, kw = self.kernel_size
        _count(2 * y.numel() * (self.in_channels // self.groups) * kh * kw)
        return y


class ConvTranspose2d(nn.ConvTranspose2d):
    def forward(self, x):
        kh, kw = self.kernel_size
        _count(2 * x.numel() * self.out_channels * kh * kw)  # input-centric, like bench/flops.js
        return super().forward(x)


# ---------------------------------------------------------------------------------------------
# diffusers modeling_wuerstchen_common.py


class WuerstchenLayerNorm(nn.LayerNorm):
    def __init__(self, c, elementwise_affine=False, eps=1e-6):
        super().__init__(c, elementwise_affine=elementwise_affine, eps=eps)

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = super().forward(x)
        return x.permute(0, 3, 1, 2)


class TimestepBlock(nn.Module):
    def __init__(self, c, c_timestep):
        super().__init__()
        self.mapper = Linear(c_timestep, c * 2)

    def forward(self, x, t):
        a, b = self.mapper(t)[:, :, None, None].chunk(2, dim=1)
        return x * (1 + a) + b


class GlobalResponseNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x):
        agg_norm = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        stand_div_norm = agg_norm / (agg_norm.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * stand_div_norm) + self.beta + x


class ResBlock(nn.Module):
    """Prior ResBlock: skip concatenated before the depthwise conv."""

    def __init__(self, c, c_skip=0, kernel_size=3, dropout=0.0):
        super().__init__()
        self.depthwise = Conv2d(c + c_skip, c, kernel_size=kernel_size, padding=kernel_size // 2, groups=c)
        self.norm = WuerstchenLayerNorm(c, elementwise_affine=False, eps=1e-6)
        self.channelwise = nn.Sequential(
            Linear(c, c * 4), nn.GELU(), GlobalResponseNorm(c * 4), nn.Dropout(dropout), Linear(c * 4, c)
        )

    def forward(self, x, x_skip=None):
        x_res = x
        if x_skip is not None:
            x = torch.cat([x, x_skip], dim=1)
        x = self.norm(self.depthwise(x)).permute(0, 2, 3, 1)
        x = self.channelwise(x).permute(0, 3, 1, 2)
        return x + x_res


class Attention(nn.Module):
    """diffusers Attention(query_dim=c, heads, dim_head=c//heads, bias=True) with AttnProcessor
    (baddbmm -> softmax -> bmm; this torch has no scaled_dot_product_attention)."""

    def __init__(self, query_dim, heads, dim_head, dropout=0.0, bias=True):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.scale = dim_head**-0.5
        self.to_q = Linear(query_dim, inner, bias=bias)
        self.to_k = Linear(query_dim, inner, bias=bias)
        self.to_v = Linear(query_dim, inner, bias=bias)
        self.to_out = nn.ModuleList([Linear(inner, query_dim, bias=True), nn.Dropout(dropout)])

    def head_to_batch_dim(self, t):
        b, n, d = t.shape
        h = self.heads
        return t.reshape(b, n, h, d // h).permute(0, 2, 1, 3).reshape(b * h, n, d // h)

    def batch_to_head_dim(self, t):
        bh, n, d = t.shape
        h = self.heads
        return t.reshape(bh // h, h, n, d).permute(0, 2, 1, 3).reshape(bh // h, n, d * h)

    def forward(self, hidden_states, encoder_hidden_states):
        b, c, hh, ww = hidden_states.shape
        hidden_states = hidden_states.view(b, c, hh * ww).transpose(1, 2)
        query = self.head_to_batch_dim(self.to_q(hidden_states))
        key = self.head_to_batch_dim(self.to_k(encoder_hidden_states))
        value = self.head_to_batch_dim(self.to_v(encoder_hidden_states))
        scores = torch.baddbmm(
            torch.empty(query.shape[0], query.shape[1], key.shape[1], dtype=query.dtype),
            query, key.transpose(-1, -2), beta=0, alpha=self.scale,
        )
        probs = scores.softmax(dim=-1)
        out = torch.bmm(probs, value)
        _count(2 * 2 * query.shape[0] * query.shape[1] * key.shape[1] * query.shape[2])
        out = self.batch_to_head_dim(out)
        out = self.to_out[1](self.to_out[0](out))
        return out.transpose(-1, -2).reshape(b, c, hh, ww)


class AttnBlock(nn.Module):
    def __init__(self, c, c_cond, nhead, self_attn=True, dropout=0.0):
        super().__init__()
        self.self_attn = self_attn
        self.norm = WuerstchenLayerNorm(c, elementwise_affine=False, eps=1e-6)
        self.attention = Attention(query_dim=c, heads=nhead, dim_head=c // nhead, dropout=dropout, bias=True)
        self.kv_mapper = nn.Sequential(nn.SiLU(), Linear(c_cond, c))

    def forward(self, x, kv):
        kv = self.kv_mapper(kv)
        norm_x = self.norm(x)
        if self.self_attn:
            batch_size, channel, _, _ = x.shape
            kv = torch.cat([norm_x.view(batch_size, channel, -1).transpose(1, 2), kv], dim=1)
        return x + self.attention(norm_x, encoder_hidden_states=kv)


def gen_r_embedding(r, c_r, max_positions=10000):
    r = r * max_positions
    half_dim = c_r // 2
    emb = math.log(max_positions) / (half_dim - 1)
    emb = torch.arange(half_dim, device=r.device).float().mul(-emb).exp()
    emb = r[:, None] * emb[None, :]
    emb = torch.cat([emb.sin(), emb.cos()], dim=1)
    if c_r % 2 == 1:
        emb = F.pad(emb, (0, 1), mode="constant")
    return emb.to(dtype=r.dtype)


# ---------------------------------------------------------------------------------------------
# diffusers modeling_wuerstchen_prior.py


class WuerstchenPrior(nn.Module):
    def __init__(self, c_in=16, c=1280, c_cond=1024, c_r=64, depth=16, nhead=16, dropout=0.1):
        super().__init__()
        self.c_r = c_r
        self.projection = Conv2d(c_in, c, kernel_size=1)
        self.cond_mapper = nn.Sequential(Linear(c_cond, c), nn.LeakyReLU(0.2), Linear(c, c))
        self.blocks = nn.ModuleList()
        for _ in range(depth):
            self.blocks.append(ResBlock(c, dropout=dropout))
            self.blocks.append(TimestepBlock(c, c_r))
            self.blocks.append(AttnBlock(c, c, nhead, dropout=dropout))
        self.out = nn.Sequential(WuerstchenLayerNorm(c, elementwise_affine=False, eps=1e-6), Conv2d(c, c_in * 2, kernel_size=1))

    def forward(self, x, r, c):
        x_in = x
        x = self.projection(x)
        c_embed = self.cond_mapper(c)
        r_embed = gen_r_embedding(r, self.c_r)
        for block in self.blocks:
            if isinstance(block, AttnBlock):
                x = block(x, c_embed)
            elif isinstance(block, TimestepBlock):
                x = block(x, r_embed)
            else:
                x = block(x)
        a, b = self.out(x).chunk(2, dim=1)
        return (x_in - a) / ((1 - b).abs() + 1e-5)


# ---------------------------------------------------------------------------------------------
# diffusers modeling_wuerstchen_diffnext.py


class ResBlockStageB(nn.Module):
    def __init__(self, c, c_skip=0, kernel_size=3, dropout=0.0):
        super().__init__()
        self.depthwise = Conv2d(c, c, kernel_size=kernel_size, padding=kernel_size // 2, groups=c)
        self.norm = WuerstchenLayerNorm(c, elementwise_affine=False, eps=1e-6)
        self.channelwise = nn.Sequential(
            Linear(c + c_skip, c * 4), nn.GELU(), GlobalResponseNorm(c * 4), nn.Dropout(dropout), Linear(c * 4, c)
        )

    def forward(self, x, x_skip=None):
        x_res = x
        x = self.norm(self.depthwise(x))
        if x_skip is not None:
            x = torch.cat([x, x_skip], dim=1)
        x = self.channelwise(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return x + x_res


class WuerstchenDiffNeXt(nn.Module):
    def __init__(self, c_in=4, c_out=4, c_r=64, patch_size=2, c_cond=1024, c_hidden=(320, 640, 1280, 1280),
                 nhead=(-1, 10, 20, 20), blocks=(4, 4, 14, 4), level_config=("CT", "CTA", "CTA", "CTA"),
                 inject_effnet=(False, True, True, True), effnet_embd=16, clip_embd=1024, kernel_size=3, dropout=0.1):
        super().__init__()
        self.c_r = c_r
        self.c_cond = c_cond
        self.clip_mapper = Linear(clip_embd, c_cond)
        inject = list(inject_effnet) + list(reversed(inject_effnet))
        self.effnet_mappers = nn.ModuleList([Conv2d(effnet_embd, c_cond, kernel_size=1) if on else None for on in inject])
        self.seq_norm = nn.LayerNorm(c_cond, elementwise_affine=False, eps=1e-6)
        self.embedding = nn.Sequential(
            nn.PixelUnshuffle(patch_size),
            Conv2d(c_in * (patch_size**2), c_hidden[0], kernel_size=1),
            WuerstchenLayerNorm(c_hidden[0], elementwise_affine=False, eps=1e-6),
        )

        def get_block(block_type, c_hidden, nhead, c_skip=0, dropout=0):
            if block_type == "C":
                return ResBlockStageB(c_hidden, c_skip, kernel_size=kernel_size, dropout=dropout)
            elif block_type == "A":
                return AttnBlock(c_hidden, c_cond, nhead, self_attn=True, dropout=dropout)
            elif block_type == "T":
                return TimestepBlock(c_hidden, c_r)
            raise ValueError(block_type)

        self.down_blocks = nn.ModuleList()
        for i in range(len(c_hidden)):
            down_block = nn.ModuleList()
            if i > 0:
                down_block.append(nn.Sequential(
                    WuerstchenLayerNorm(c_hidden[i - 1], elementwise_affine=False, eps=1e-6),
                    Conv2d(c_hidden[i - 1], c_hidden[i], kernel_size=2, stride=2),
                ))
            for _ in range(blocks[i]):
                for block_type in level_config[i]:
                    c_skip = c_cond if inject_effnet[i] else 0
                    down_block.append(get_block(block_type, c_hidden[i], nhead[i], c_skip=c_skip, dropout=dropout))
            self.down_blocks.append(down_block)

        self.up_blocks = nn.ModuleList()
        for i in reversed(range(len(c_hidden))):
            up_block = nn.ModuleList()
            for j in range(blocks[i]):
                for k, block_type in enumerate(level_config[i]):
                    c_skip = c_hidden[i] if i < len(c_hidden) - 1 and j == k == 0 else 0
                    c_skip += c_cond if inject_effnet[i] else 0
                    up_block.append(get_block(block_type, c_hidden[i], nhead[i], c_skip=c_skip, dropout=dropout))
            if i > 0:
                up_block.append(nn.Sequential(
                    WuerstchenLayerNorm(c_hidden[i], elementwise_affine=False, eps=1e-6),
                    ConvTranspose2d(c_hidden[i], c_hidden[i - 1], kernel_size=2, stride=2),
                ))
            self.up_blocks.append(up_block)

        self.clf = nn.Sequential(
            WuerstchenLayerNorm(c_hidden[0], elementwise_affine=False, eps=1e-6),
            Conv2d(c_hidden[0], 2 * c_out * (patch_size**2), kernel_size=1),
            nn.PixelShuffle(patch_size),
        )

    @staticmethod
    def _interp(effnet, size):
        return F.interpolate(effnet.float(), size=size, mode="bicubic", antialias=True, align_corners=True)

    def _down_encode(self, x, r_embed, effnet, clip):
        level_outputs = []
        for i, down_block in enumerate(self.down_blocks):
            effnet_c = None
            for block in down_block:
                if isinstance(block, ResBlockStageB):
                    if effnet_c is None and self.effnet_mappers[i] is not None:
                        effnet_c = self.effnet_mappers[i](self._interp(effnet, x.shape[-2:]))
                    skip = effnet_c if self.effnet_mappers[i] is not None else None
                    x = block(x, skip)
                elif isinstance(block, AttnBlock):
                    x = block(x, clip)
                elif isinstance(block, TimestepBlock):
                    x = block(x, r_embed)
                else:
                    x = block(x)
            level_outputs.insert(0, x)
        return level_outputs

    def _up_decode(self, level_outputs, r_embed, effnet, clip):
        x = level_outputs[0]
        for i, up_block in enumerate(self.up_blocks):
            effnet_c = None
            for j, block in enumerate(up_block):
                if isinstance(block, ResBlockStageB):
                    mapper = self.effnet_mappers[len(self.down_blocks) + i]
                    if effnet_c is None and mapper is not None:
                        effnet_c = mapper(self._interp(effnet, x.shape[-2:]))
                    skip = level_outputs[i] if j == 0 and i > 0 else None
                    if effnet_c is not None:
                        skip = effnet_c if skip is None else torch.cat([skip, effnet_c], dim=1)
                    x = block(x, skip)
                elif isinstance(block, AttnBlock):
                    x = block(x, clip)
                elif isinstance(block, TimestepBlock):
                    x = block(x, r_embed)
                else:
                    x = block(x)
        return x

    def forward(self, x, r, effnet, clip, eps=1e-3):
        r_embed = gen_r_embedding(r, self.c_r)
        clip = self.seq_norm(self.clip_mapper(clip))
        x_in = x
        x = self.embedding(x)
        level_outputs = self._down_encode(x, r_embed, effnet, clip)
        x = self._up_decode(level_outputs, r_embed, effnet, clip)
        a, b = self.clf(x).chunk(2, dim=1)
        b = b.sigmoid() * (1 - eps * 2) + eps
        return (x_in - a) / b


# ---------------------------------------------------------------------------------------------
# diffusers modeling_paella_vq_model.py (decoder half; decode(force_not_quantize=True))


class MixingResidualBlock(nn.Module):
    def __init__(self, inp_channels, embed_dim):
        super().__init__()
        self.norm1 = nn.LayerNorm(inp_channels, elementwise_affine=False, eps=1e-6)
        self.depthwise = nn.Sequential(nn.ReplicationPad2d(1), Conv2d(inp_channels, inp_channels, kernel_size=3, groups=inp_channels))
        self.norm2 = nn.LayerNorm(inp_channels, elementwise_affine=False, eps=1e-6)
        self.channelwise = nn.Sequential(Linear(inp_channels, embed_dim), nn.GELU(), Linear(embed_dim, inp_channels))
        self.gammas = nn.Parameter(torch.zeros(6), requires_grad=True)

    def forward(self, x):
        mods = self.gammas
        x_temp = self.norm1(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) * (1 + mods[0]) + mods[1]
        x = x + self.depthwise(x_temp) * mods[2]
        x_temp = self.norm2(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) * (1 + mods[3]) + mods[4]
        x = x + self.channelwise(x_temp.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) * mods[5]
        return x


class PaellaVQDecoder(nn.Module):
    def __init__(self, out_channels=3, up_down_scale_factor=2, levels=2, bottleneck_blocks=12, embed_dim=384, latent_channels=4):
        super().__init__()
        c_levels = [embed_dim // (2**i) for i in reversed(range(levels))]
        up_blocks = [nn.Sequential(Conv2d(latent_channels, c_levels[-1], kernel_size=1))]
        for i in range(levels):
            for j in range(bottleneck_blocks if i == 0 else 1):
                block = MixingResidualBlock(c_levels[levels - 1 - i], c_levels[levels - 1 - i] * 4)
                up_blocks.append(block)
            if i < levels - 1:
                up_blocks.append(ConvTranspose2d(c_levels[levels - 1 - i], c_levels[levels - 2 - i], kernel_size=4, stride=2, padding=1))
        self.up_blocks = nn.Sequential(*up_blocks)
        self.out_block = nn.Sequential(
            Conv2d(c_levels[0], out_channels * up_down_scale_factor**2, kernel_size=1),
            nn.PixelShuffle(up_down_scale_factor),
        )

    def decode(self, h):
        return self.out_block(self.up_blocks(h))


# ---------------------------------------------------------------------------------------------
# measurements: name -> (shape, flops or None (counted on the warm-up run), setup() -> run)

FWD_BWD_NOTE = "forward+backward counted as 3x forward"


def block_triple(c=1536, nhead=24, c_r=64):
    return nn.ModuleList([ResBlock(c, 0, 3, 0.0), TimestepBlock(c, c_r), AttnBlock(c, c, nhead, True, 0.0)]).eval()


def setup_block(backward, H=24, W=24):
    blocks = block_triple()
    x = torch.randn(2, 1536, H, W)
    r = torch.randn(2, 64)
    cond = torch.randn(2, 77, 1536)

    def fwd():
        return blocks[2](blocks[1](blocks[0](x), r), cond)

    if not backward:
        def run():
            with torch.no_grad():
                fwd()
        return run, fwd

    params = list(blocks.parameters())

    def run():
        loss = fwd().square().mean()
        loss.backward()
        for p in params:
            p.grad = None
    return run, fwd


def setup_matmul():
    a, b = torch.randn(1536, 1536), torch.randn(1536, 6144)
    return lambda: torch.mm(a, b), None


def setup_bmm():
    a, b = torch.randn(48, 576, 64), torch.randn(48, 64, 1152)
    return lambda: torch.bmm(a, b), None


def setup_dwconv():
    x, w = torch.randn(2, 1536, 24, 24), torch.randn(1536, 1, 3, 3) * 0.3
    return lambda: F.conv2d(x, w, padding=1, groups=1536), None


def setup_conv():
    x, w = torch.randn(1, 320, 64, 64), torch.randn(320, 320, 3, 3) * 0.02
    return lambda: F.conv2d(x, w, padding=1), None


def setup_conv_backward():
    x, w, dy = torch.randn(1, 320, 64, 64), torch.randn(320, 320, 3, 3) * 0.02, torch.randn(1, 320, 64, 64)

    def run():
        # the kernel autograd runs for conv2d: grads wrt input and weight
        torch.ops.aten.convolution_backward(dy, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [True, True, False])
    return run, None


def no_grad(f):
    def run():
        with torch.no_grad():
            return f()
    return run


def setup_prior():
    model = WuerstchenPrior(c_in=16, c=1536, c_cond=1280, c_r=64, depth=32, nhead=24).eval()
    x, r, c = torch.randn(2, 16, 24, 24), torch.rand(2), torch.randn(2, 77, 1280)
    f = lambda: model(x, r, c)
    return no_grad(f), f


def setup_decoder(latent, effnet):
    model = WuerstchenDiffNeXt().eval()
    x, r = torch.randn(1, 4, latent, latent), torch.rand(1)
    eff, clip = torch.randn(1, 16, effnet, effnet), torch.randn(1, 77, 1024)
    f = lambda: model(x, r, eff, clip)
    return no_grad(f), f


def setup_vq():
    model = PaellaVQDecoder().eval()
    latents = torch.randn(1, 4, 256, 256)
    f = lambda: model.decode(latents)
    return no_grad(f), f


def setup_generate(steps=2):
    """bench/measurements.js generate_1024: prior, decoder and VQGAN resident; 2 steps per stage, then the decode."""
    prior = WuerstchenPrior(c_in=16, c=1536, c_cond=1280, c_r=64, depth=32, nhead=24).eval()
    decoder = WuerstchenDiffNeXt().eval()
    vq = PaellaVQDecoder().eval()
    x, c = torch.randn(2, 16, 24, 24), torch.randn(2, 77, 1280)
    latents, clip = torch.randn(1, 4, 256, 256), torch.randn(1, 77, 1024)

    def f():
        effnet = x
        for i in range(steps):
            effnet = prior(effnet, torch.full((2,), 1 - i / steps), c)
        z = latents
        for i in range(steps):
            z = decoder(z, torch.full((1,), 1 - i / steps), effnet[:1], clip)
        return vq.decode(z)
    return no_grad(f), f


MEASUREMENTS = {
    "matmul": ("[1536,1536] @ [1536,6144]", 2 * 1536 * 1536 * 6144, setup_matmul),
    "bmm_attention": ("[48,576,64] @ [48,64,1152]", 2 * 48 * 576 * 64 * 1152, setup_bmm),
    "dwconv": ("depthwise 3x3 [2,1536,24,24] (NCHW)", 2 * 2 * 24 * 24 * 1536 * 9, setup_dwconv),
    "conv3x3": ("[1,320,64,64] * 320x320x3x3 (NCHW, pad 1)", 2 * 64 * 64 * 320 * 320 * 9, setup_conv),
    "conv3x3_backward": ("grads wrt input and filter of [1,320,64,64] * 320x320x3x3", 2 * 2 * 64 * 64 * 320 * 320 * 9, setup_conv_backward),
    "stagec_block_fwd": ("ResBlock+TimestepBlock+AttnBlock c=1536 nhead=24 c_r=64, x [2,1536,24,24], cond [2,77,1536]", None, lambda: setup_block(False)),
    "stagec_block_fwd_bwd": ("same block, loss = mean(out^2), grads of all parameters", "3x", lambda: setup_block(True)),
    "prior_step_full": ("WuerstchenPrior(c_in 16, c 1536, c_cond 1280, c_r 64, depth 32, nhead 24), x [2,16,24,24], c [2,77,1280]", None, setup_prior),
    "decoder_step_512": ("WuerstchenDiffNeXt (published config), x [1,4,128,128], effnet [1,16,12,12], clip [1,77,1024]", None, lambda: setup_decoder(128, 12)),
    "decoder_step_1024": ("WuerstchenDiffNeXt (published config), x [1,4,256,256], effnet [1,16,24,24], clip [1,77,1024]", None, lambda: setup_decoder(256, 24)),
    "vqgan_decode_1024": ("PaellaVQModel.decode, latents [1,4,256,256] -> image [1,3,1024,1024]", None, setup_vq),
    "generate_1024": ("prior 2 steps [2,16,24,24] + decoder 2 steps [1,4,256,256] + VQGAN decode to [1,3,1024,1024], all resident", None, setup_generate),
}


def blas_info():
    try:
        maps = open("/proc/self/maps").read()
        libs = sorted({line.split()[-1] for line in maps.splitlines() if "blas" in line.split()[-1]})
        return ", ".join(os.path.realpath(l) for l in libs) or None
    except OSError:
        return None


def measure(name, max_seconds, repeats):
    shape, flops, setup = MEASUREMENTS[name]
    started = time.perf_counter()
    load = round(os.getloadavg()[0], 3)
    t0 = time.perf_counter()
    run, fwd = setup()
    setup_s = time.perf_counter() - t0

    # FLOPs of the forward are counted on one extra un-timed forward with the module hooks
    if flops is None or flops == "3x":
        FLOPS["on"], FLOPS["n"] = True, 0
        with torch.no_grad():
            fwd()
        FLOPS["on"] = False
        flops = FLOPS["n"] * (3 if flops == "3x" else 1)

    t0 = time.perf_counter()
    run()
    warm = time.perf_counter() - t0
    n = repeats or (1 if warm > 20 else 3 if warm > 5 else 5 if warm > 0.05 else 20)
    if not repeats:
        left = max_seconds - (time.perf_counter() - started)
        n = max(1, min(n, int(left // warm)))
    print(f"[torch {name}] setup {setup_s:.2f} s, warm-up {warm:.3f} s, timing {n} run(s)", file=sys.stderr, flush=True)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    times.sort()
    med = times[n // 2] if n % 2 else (times[n // 2 - 1] + times[n // 2]) / 2
    r4 = lambda v: float(f"{v:.4g}")
    rec = {
        "name": name,
        "backend": "torch",
        "shape": shape,
        "seconds": r4(med),
        "gflops": r4(flops / 1e9 / med),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "work_gflop": float(f"{flops / 1e9:.5g}"),
        "load_avg_1m": load,
        "runs": n,
        "min_seconds": r4(times[0]),
        "max_seconds": r4(times[-1]),
        "warmup_seconds": r4(warm),
        "setup_seconds": round(setup_s, 3),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "blas": blas_info(),
    }
    ru = resource.getrusage(resource.RUSAGE_SELF)
    rec["cpu_seconds"] = round(ru.ru_utime + ru.ru_stime, 2)
    if MEASUREMENTS[name][1] == "3x":
        rec["flops_note"] = FWD_BWD_NOTE
    return rec


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("filters", nargs="*")
    ap.add_argument("--only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-seconds", type=float, default=600)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args()
    if a.list:
        for k, v in MEASUREMENTS.items():
            print(f"{k}\t{v[0]}")
        return
    if a.only:
        torch.set_num_threads(a.threads)
        torch.manual_seed(0)
        try:
            rec = measure(a.only, a.max_seconds, a.repeats)
        except Exception as e:  # report, like the JS worker
            print(f"[torch {a.only}] {e!r}", file=sys.stderr)
            rec = {"name": a.only, "backend": "torch", "shape": MEASUREMENTS.get(a.only, ("",))[0], "seconds": None, "gflops": None,
                   "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), "skipped": f"error: {e}"}
        print(json.dumps(rec), flush=True)
        return
    names = [n for n in MEASUREMENTS if not a.filters or any(f in n for f in a.filters)]
    for n in names:
        argv = [sys.executable, os.path.abspath(__file__), "--only", n, "--threads", str(a.threads), "--max-seconds", str(a.max_seconds)]
        if a.repeats:
            argv += ["--repeats", str(a.repeats)]
        out = subprocess.run(argv, stdout=subprocess.PIPE, text=True).stdout
        for line in out.splitlines():
            if line.startswith("{"):
                print(line, flush=True)


if __name__ == "__main__":
    main()
