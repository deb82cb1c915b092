/** Runner for `clip_tokenizer`: ids and masks exactly, plus the per-prompt normalised text, tokens and ids. */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { CLIPTokenizer } from 'wuerstchen';
import { Check, registerRunner } from '../harness';

/** One row of the golden `clip_tokenizer` prompts.json. */
export interface PromptRow {
  row: number;
  prompt: string;
  normalized: string;
  ids: number[];
  tokens: string[];
  /** the prompt had more than model_max_length tokens. */
  truncated: boolean;
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

registerRunner('CLIPTokenizer', (ctx) => {
  const config = ctx.spec.config as { vocab_files: string; model_max_length: number };
  const tokenizer = CLIPTokenizer.fromPretrained(path.resolve(ctx.dir, config.vocab_files));
  const rows = JSON.parse(fs.readFileSync(ctx.file(ctx.spec.prompts_file as string), 'utf8')) as PromptRow[];
  const prompts = rows.map((r) => r.prompt);
  const opts = { padding: 'max_length' as const, maxLength: config.model_max_length, truncation: true };
  const out = tokenizer.call(prompts, opts);
  const pad0 = tokenizer.call(prompts, { ...opts, padTokenId: 0 });
  const checks: Check[] = rows.flatMap((r) => [
    {
      name: `row ${r.row} normalized`,
      ok: tokenizer.normalize(r.prompt) === r.normalized,
      detail: JSON.stringify(tokenizer.normalize(r.prompt)),
    },
    {
      name: `row ${r.row} tokens`,
      ok: same(tokenizer.tokenize(r.prompt), r.tokens),
      detail: JSON.stringify(tokenizer.tokenize(r.prompt)),
    },
    {
      name: `row ${r.row} ids`,
      ok: same(tokenizer.encode(r.prompt), r.ids),
      detail: JSON.stringify(tokenizer.encode(r.prompt)),
    },
  ]);
  const ids = (m: number[][]) => tf.tensor2d(m.flat(), [m.length, m[0].length], 'int32');
  return {
    tensors: {
      input_ids: ids(out.inputIds),
      attention_mask: ids(out.attentionMask),
      input_ids_pad0: ids(pad0.inputIds),
    },
    checks,
  };
});
