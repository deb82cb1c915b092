/**
 * CLIP text encoder: transformers `CLIPTextModel` (`modeling_clip.py`, `CLIPTextTransformer`;
 * transformers src/transformers/models/clip/modeling_clip.py). The prior uses CLIP ViT-bigG-14's text tower, the decoder
 * CLIP ViT-H-14's; both are stored as `text_encoder/{config.json, model.safetensors}`.
 *
 * Keys (state_dict order, as transformers writes them):
 * `text_model.embeddings.{token,position}_embedding.weight`,
 * `text_model.encoder.layers.{l}.self_attn.{k,v,q,out}_proj.{weight,bias}`, `…layer_norm1.*`,
 * `…mlp.fc{1,2}.*`, `…layer_norm2.*`, `text_model.final_layer_norm.*`.
 * Some files also carry the int64 buffer `text_model.embeddings.position_ids`; it is ignored.
 */
import * as tf from '@tensorflow/tfjs';
import {
  Embedding,
  HostTensor,
  LayerNorm,
  Linear,
  LoadOptions,
  Module,
  ModuleList,
  TensorSource,
  openCheckpoint,
} from '@wuerstchen/core';
import { activation, fileStore, joinPath, multiHeadAttention } from '@wuerstchen/core/internal';
import {
  ConfigSchema,
  checkParameterCount,
  linearCount,
  moduleFits,
  parseConfig,
  readConfigJson,
  storedParameterCount,
} from './config_schema';

/** transformers `CLIPTextConfig` (the fields of `text_encoder/config.json` this model uses). */
export interface CLIPTextConfig {
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  /** only used by `CLIPTextModelWithProjection`; kept for round-tripping configs. */
  projection_dim: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  max_position_embeddings: number;
  hidden_act: 'gelu' | 'quick_gelu';
  layer_norm_eps: number;
  /** 2 selects the legacy pooling (argmax of the ids); otherwise the first position holding this id. */
  eos_token_id: number;
  pad_token_id: number;
  bos_token_id: number;
}

/** transformers' `CLIPTextConfig()` defaults (the OpenAI ViT-B/32 text tower). */
export const CLIP_TEXT_DEFAULTS: CLIPTextConfig = {
  vocab_size: 49408,
  hidden_size: 512,
  intermediate_size: 2048,
  projection_dim: 512,
  num_hidden_layers: 12,
  num_attention_heads: 8,
  max_position_embeddings: 77,
  hidden_act: 'quick_gelu',
  layer_norm_eps: 1e-5,
  eos_token_id: 49407,
  pad_token_id: 1,
  bos_token_id: 49406,
};

/** Prior text encoder (laion CLIP-ViT-bigG-14, the text_encoder/config.json of warp-ai/wuerstchen-prior); eos/pad/bos are the checkpoint's stale legacy values. */
export const CLIP_TEXT_BIGG: CLIPTextConfig = {
  ...CLIP_TEXT_DEFAULTS,
  hidden_size: 1280,
  intermediate_size: 5120,
  projection_dim: 512,
  num_hidden_layers: 32,
  num_attention_heads: 20,
  hidden_act: 'gelu',
  eos_token_id: 2,
  pad_token_id: 1,
  bos_token_id: 0,
};

/** Decoder text encoder (laion CLIP-ViT-H-14, the text_encoder/config.json of warp-ai/wuerstchen). */
export const CLIP_TEXT_H: CLIPTextConfig = {
  ...CLIP_TEXT_BIGG,
  hidden_size: 1024,
  intermediate_size: 4096,
  projection_dim: 1024,
  num_hidden_layers: 24,
  num_attention_heads: 16,
};

const TOKEN_ID = { kind: 'int', min: -1, max: 1 << 20 } as const;

/** Sizes are capped far above CLIP ViT-bigG (hidden 1280, 32 layers, vocabulary 49408). */
export const CLIP_TEXT_SCHEMA: ConfigSchema<CLIPTextConfig> = {
  name: 'CLIPTextModel',
  defaults: CLIP_TEXT_DEFAULTS,
  fields: {
    vocab_size: { kind: 'int', min: 1, max: 1 << 20, counted: true },
    hidden_size: { kind: 'int', min: 1, max: 16384, counted: true },
    intermediate_size: { kind: 'int', min: 1, max: 65536, counted: true },
    projection_dim: { kind: 'int', min: 1, max: 16384 },
    num_hidden_layers: { kind: 'int', min: 1, max: 256, counted: true },
    num_attention_heads: { kind: 'int', min: 1, max: 1024 },
    max_position_embeddings: { kind: 'int', min: 1, max: 8192, counted: true },
    hidden_act: { kind: 'enum', values: ['gelu', 'quick_gelu'] },
    layer_norm_eps: { kind: 'number', min: 0, max: 1, minOpen: true, maxOpen: true },
    eos_token_id: TOKEN_ID,
    pad_token_id: TOKEN_ID,
    bos_token_id: TOKEN_ID,
  },
  check(cfg, fail) {
    if (cfg.hidden_size % cfg.num_attention_heads !== 0) {
      fail('hidden_size', `${cfg.hidden_size} is not divisible by num_attention_heads ${cfg.num_attention_heads}`);
    }
  },
  count({
    vocab_size: vocab,
    hidden_size: h,
    intermediate_size: inner,
    num_hidden_layers: layers,
    max_position_embeddings: positions,
  }) {
    const layer = 4 * linearCount(h, h) + linearCount(h, inner) + linearCount(inner, h) + 2 * 2 * h;
    return (vocab + positions) * h + layers * layer + 2 * h;
  },
};

/**
 * Validate a config (a parsed `config.json` or a partial object) and fill defaults. Accepts a
 * full `CLIPConfig` too (uses its `text_config`). Unknown fields are ignored.
 */
export function parseCLIPTextConfig(json: Record<string, unknown>, where = 'CLIPTextConfig'): CLIPTextConfig {
  const src =
    json.model_type === 'clip' && typeof json.text_config === 'object' && json.text_config !== null
      ? (json.text_config as Record<string, unknown>)
      : json;
  return parseConfig(CLIP_TEXT_SCHEMA, src, where);
}

/** Additive value for masked attention logits: exp(score + MASK_VALUE − max) is exactly 0 in float32. */
export const CLIP_MASK_VALUE = -1e9;

/** `CLIPAttention`: q/k/v/out projections with bias; scale head_dim^-0.5 applied to q. */
export class CLIPAttention extends Module {
  readonly kProj: Linear;
  readonly vProj: Linear;
  readonly qProj: Linear;
  readonly outProj: Linear;
  readonly scale: number;
  constructor(
    readonly dim: number,
    readonly heads: number,
  ) {
    super();
    this.scale = (dim / heads) ** -0.5;
    // Declaration order = transformers' state_dict order.
    this.kProj = this.child('k_proj', new Linear(dim, dim));
    this.vProj = this.child('v_proj', new Linear(dim, dim));
    this.qProj = this.child('q_proj', new Linear(dim, dim));
    this.outProj = this.child('out_proj', new Linear(dim, dim));
  }
  /** x: `[B, S, D]`; mask: additive, broadcastable to `[B·heads, S, S]`. */
  forward(x: tf.Tensor, mask?: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const o = multiHeadAttention(
        this.qProj.forward(x),
        this.kProj.forward(x),
        this.vProj.forward(x),
        this.heads,
        this.scale,
        mask,
      );
      return this.outProj.forward(o);
    });
  }
}

/** `CLIPMLP`: fc1 → activation → fc2. */
export class CLIPMLP extends Module {
  readonly fc1: Linear;
  readonly fc2: Linear;
  private readonly act: (x: tf.Tensor) => tf.Tensor;
  constructor(dim: number, intermediate: number, act: CLIPTextConfig['hidden_act']) {
    super();
    this.act = activation(act);
    this.fc1 = this.child('fc1', new Linear(dim, intermediate));
    this.fc2 = this.child('fc2', new Linear(intermediate, dim));
  }
  forward(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => this.fc2.forward(this.act(this.fc1.forward(x))));
  }
}

/** `CLIPEncoderLayer` (pre-LN): h += attn(LN1(h)); h += mlp(LN2(h)). */
export class CLIPEncoderLayer extends Module {
  readonly selfAttn: CLIPAttention;
  readonly layerNorm1: LayerNorm;
  readonly mlp: CLIPMLP;
  readonly layerNorm2: LayerNorm;
  constructor(cfg: CLIPTextConfig) {
    super();
    this.selfAttn = this.child('self_attn', new CLIPAttention(cfg.hidden_size, cfg.num_attention_heads));
    this.layerNorm1 = this.child('layer_norm1', new LayerNorm(cfg.hidden_size, cfg.layer_norm_eps));
    this.mlp = this.child('mlp', new CLIPMLP(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act));
    this.layerNorm2 = this.child('layer_norm2', new LayerNorm(cfg.hidden_size, cfg.layer_norm_eps));
  }
  forward(h: tf.Tensor, mask?: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const a = tf.add(h, this.selfAttn.forward(this.layerNorm1.forward(h), mask));
      return tf.add(a, this.mlp.forward(this.layerNorm2.forward(a)));
    });
  }
}

/** `CLIPTextEmbeddings`: token embedding + learned absolute position embedding. */
export class CLIPTextEmbeddings extends Module {
  readonly tokenEmbedding: Embedding;
  readonly positionEmbedding: Embedding;
  constructor(cfg: CLIPTextConfig) {
    super();
    this.tokenEmbedding = this.child('token_embedding', new Embedding(cfg.vocab_size, cfg.hidden_size));
    this.positionEmbedding = this.child(
      'position_embedding',
      new Embedding(cfg.max_position_embeddings, cfg.hidden_size),
    );
  }
  /** ids: int32 `[B, S]` → `[B, S, D]` (positions 0..S−1). */
  forward(ids: tf.Tensor): tf.Tensor3D {
    return tf.tidy(() => {
      const s = ids.shape[1]!;
      const pos = tf.slice(this.positionEmbedding.weight.value, [0, 0], [s, -1]);
      return tf.add(this.tokenEmbedding.forward(ids), pos) as tf.Tensor3D;
    });
  }
}

/** `CLIPEncoder`: the layer stack (`layers.{l}`). */
export class CLIPEncoder extends Module {
  readonly layers: ModuleList<CLIPEncoderLayer>;
  constructor(cfg: CLIPTextConfig) {
    super();
    this.layers = this.child(
      'layers',
      new ModuleList(Array.from({ length: cfg.num_hidden_layers }, () => new CLIPEncoderLayer(cfg))),
    );
  }
}

/** `CLIPTextTransformer`, the `text_model` submodule. */
export class CLIPTextTransformer extends Module {
  readonly embeddings: CLIPTextEmbeddings;
  readonly encoder: CLIPEncoder;
  readonly finalLayerNorm: LayerNorm;
  constructor(cfg: CLIPTextConfig) {
    super();
    this.embeddings = this.child('embeddings', new CLIPTextEmbeddings(cfg));
    this.encoder = this.child('encoder', new CLIPEncoder(cfg));
    this.finalLayerNorm = this.child('final_layer_norm', new LayerNorm(cfg.hidden_size, cfg.layer_norm_eps));
  }
}

export interface CLIPTextForwardOptions {
  /** Also return every hidden state (embeddings output, then each layer's output, pre final LN). */
  outputHiddenStates?: boolean;
}

export interface CLIPTextOutput {
  /** final_layer_norm(last layer output), `[B, S, D]` — what the Würstchen pipelines use. */
  lastHiddenState: tf.Tensor3D;
  /** lastHiddenState at the EOS position of each row, `[B, D]`. */
  poolerOutput: tf.Tensor2D;
  /**
   * With `outputHiddenStates`: `num_hidden_layers + 1` tensors `[B, S, D]` like transformers'
   * `hidden_states` — `[0]` is the embeddings output, `[l]` the output of layer l (no final LN);
   * `at(-2)` is the penultimate layer.
   */
  hiddenStates?: tf.Tensor3D[];
}

const POSITION_IDS_KEY = 'text_model.embeddings.position_ids';

const fmtTensor = (t: tf.Tensor): string => `${t.dtype} [${t.shape.join(', ')}]`;

export class CLIPTextModel extends Module {
  readonly config: CLIPTextConfig;
  readonly textModel: CLIPTextTransformer;

  /**
   * Keys that may appear in a checkpoint but are not parameters: the int64 buffer
   * `text_model.embeddings.position_ids` (`[1, 77]`) some transformers versions saved.
   */
  static readonly ignoredKeys = (key: string): boolean => key === POSITION_IDS_KEY;

  constructor(config: Partial<CLIPTextConfig> = {}) {
    super();
    this.config = parseCLIPTextConfig(config as Record<string, unknown>);
    this.textModel = this.child('text_model', new CLIPTextTransformer(this.config));
  }

  /** Build from a `text_encoder/` folder: `config.json` + `model.safetensors` (or its shards / a variant). */
  static fromPretrained(dir: string, opts: { variant?: string; allowNonFinite?: boolean } = {}): CLIPTextModel {
    const configFile = joinPath(dir, 'config.json');
    if (fileStore(configFile).kind(configFile) === undefined)
      throw new Error(`${dir}: no config.json (expected a transformers CLIPTextModel folder)`);
    const json = readConfigJson(configFile);
    const config = parseCLIPTextConfig(json, configFile);
    const ckpt = openCheckpoint(dir, { base: 'model', variant: opts.variant });
    const source = ckpt.files.length === 1 ? ckpt.files[0] : dir;
    let model: CLIPTextModel | undefined;
    try {
      const fits = (candidate: CLIPTextConfig) =>
        moduleFits(() => new CLIPTextModel(candidate), ckpt, CLIPTextModel.ignoredKeys);
      checkParameterCount(
        CLIP_TEXT_SCHEMA,
        config,
        configFile,
        storedParameterCount(ckpt, CLIPTextModel.ignoredKeys),
        source,
        fits,
      );
      model = new CLIPTextModel(config);
      model.loadStateDict(ckpt, { source, allowNonFinite: opts.allowNonFinite });
    } catch (e) {
      model?.dispose();
      throw e;
    } finally {
      ckpt.close();
    }
    return model.eval();
  }

  /** As Module.loadStateDict, but always ignores `CLIPTextModel.ignoredKeys` (plus `opts.ignore`). */
  override loadStateDict(tensors: TensorSource | Map<string, HostTensor>, opts: LoadOptions = {}): void {
    const user = opts.ignore;
    super.loadStateDict(tensors, { ...opts, ignore: (k) => CLIPTextModel.ignoredKeys(k) || (user ? user(k) : false) });
  }

  private get layers(): CLIPEncoderLayer[] {
    return this.textModel.encoder.layers.items;
  }

  private validate(inputIds: tf.Tensor, attentionMask?: tf.Tensor): void {
    const cfg = this.config;
    if (!(inputIds instanceof tf.Tensor)) throw new Error('CLIPTextModel.forward: inputIds must be a tf.Tensor');
    if (inputIds.rank !== 2 || inputIds.dtype !== 'int32') {
      throw new Error(
        `CLIPTextModel.forward: inputIds must be an int32 tensor of shape [batch, seq]; got ${fmtTensor(inputIds)}`,
      );
    }
    const [b, s] = inputIds.shape;
    if (b < 1 || s < 1) throw new Error(`CLIPTextModel.forward: inputIds is empty (${fmtTensor(inputIds)})`);
    if (s > cfg.max_position_embeddings) {
      throw new Error(
        `CLIPTextModel.forward: sequence length ${s} exceeds max_position_embeddings ${cfg.max_position_embeddings}`,
      );
    }
    if (attentionMask !== undefined) {
      if (!(attentionMask instanceof tf.Tensor))
        throw new Error('CLIPTextModel.forward: attentionMask must be a tf.Tensor');
      if (attentionMask.rank !== 2 || attentionMask.shape[0] !== b || attentionMask.shape[1] !== s) {
        throw new Error(
          `CLIPTextModel.forward: attentionMask must have the shape of inputIds [${b}, ${s}]; got ${fmtTensor(attentionMask)}`,
        );
      }
      if (attentionMask.dtype === 'string' || attentionMask.dtype === 'complex64') {
        throw new Error(
          `CLIPTextModel.forward: attentionMask must be int32, bool or float32 (1 = keep, 0 = padding); got ${fmtTensor(attentionMask)}`,
        );
      }
    }
    // One small read ([B, 2] numbers): out-of-range ids would otherwise give zeros on some backends.
    const range = tf.tidy(() => tf.stack([tf.min(inputIds), tf.max(inputIds)]));
    const [lo, hi] = Array.from(range.dataSync());
    range.dispose();
    if (lo < 0 || hi >= cfg.vocab_size) {
      throw new Error(
        `CLIPTextModel.forward: token ids must be in [0, ${cfg.vocab_size}); got values in [${lo}, ${hi}]`,
      );
    }
  }

  /**
   * Additive attention mask, built once per call: 0 where key j ≤ query i and key j is not padding,
   * CLIP_MASK_VALUE elsewhere. `[1, S, S]` without a padding mask, else `[B·heads, S, S]`.
   */
  private buildMask(batch: number, seq: number, attentionMask?: tf.Tensor): tf.Tensor3D {
    return tf.tidy(() => {
      const causal = tf.linalg
        .bandPart(tf.ones([seq, seq]), -1, 0)
        .reshape([1, seq, seq])
        .cast('bool');
      let allowed: tf.Tensor = causal;
      if (attentionMask) {
        const keys = tf.notEqual(attentionMask, 0).reshape([batch, 1, seq]);
        const heads = this.config.num_attention_heads;
        allowed = tf
          .logicalAnd(causal, keys)
          .reshape([batch, 1, seq, seq])
          .tile([1, heads, 1, 1])
          .reshape([batch * heads, seq, seq]);
      }
      return tf.where(allowed, tf.scalar(0), tf.scalar(CLIP_MASK_VALUE)) as unknown as tf.Tensor3D;
    });
  }

  /** EOS position of each row (`CLIPTextTransformer.forward`, modeling_clip.py): argmax(ids) when eos_token_id == 2 (legacy), else first id == eos_token_id (0 if none). */
  eosPositions(inputIds: tf.Tensor): tf.Tensor1D {
    return tf.tidy(() => {
      const eos = this.config.eos_token_id;
      const score = eos === 2 ? inputIds : tf.equal(inputIds, eos).cast('int32');
      return tf.argMax(score, 1) as tf.Tensor1D;
    });
  }

  /**
   * inputIds: int32 `[B, S]` (S ≤ max_position_embeddings); attentionMask: `[B, S]` (1 = token,
   * 0 = padding; int32, bool or float32). Without a mask only the causal mask applies.
   */
  forward(inputIds: tf.Tensor2D, attentionMask?: tf.Tensor2D, opts: CLIPTextForwardOptions = {}): CLIPTextOutput {
    this.validate(inputIds, attentionMask);
    const [batch, seq] = inputIds.shape;
    const dim = this.config.hidden_size;
    return tf.tidy(() => {
      const mask = this.buildMask(batch, seq, attentionMask);
      let h = this.textModel.embeddings.forward(inputIds);
      const hidden: tf.Tensor3D[] | null = opts.outputHiddenStates ? [h] : null;
      for (const layer of this.layers) {
        const next = layer.forward(h, mask) as tf.Tensor3D;
        if (hidden) hidden.push(next);
        else h.dispose(); // keep peak memory at one layer's activations
        h = next;
      }
      const lastHiddenState = this.textModel.finalLayerNorm.forward(h) as tf.Tensor3D;
      const rows = tf.add(tf.range(0, batch * seq, seq, 'int32'), this.eosPositions(inputIds));
      const poolerOutput = tf.gather(lastHiddenState.reshape([batch * seq, dim]), rows) as tf.Tensor2D;
      const out: CLIPTextOutput = { lastHiddenState, poolerOutput };
      if (hidden) out.hiddenStates = hidden;
      return out as unknown as tf.TensorContainer;
    }) as unknown as CLIPTextOutput;
  }
}
