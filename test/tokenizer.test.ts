/** CLIPTokenizer against the golden `clip_tokenizer` case (transformers tokenization_clip.py; golden README "Tokenizer"). */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { PromptRow } from '../packages/golden/src/runners/tokenizer';
import { CLIPTokenizer } from 'wuerstchen';
import { GOLDEN } from './helpers/shared';

const CASE_DIR = path.join(GOLDEN, 'clip_tokenizer');
const TOKENIZER_DIR = path.join(GOLDEN, 'hub', 'wuerstchen-prior', 'tokenizer');

/** Minimal safetensors reader for I32 tensors: u64 LE header length, JSON header, raw little-endian data. */
function readI32Tensors(file: string): Record<string, number[][]> {
  const buf = fs.readFileSync(file);
  const headerLength = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + headerLength).toString('utf8')) as Record<
    string,
    { dtype: string; shape: number[]; data_offsets: [number, number] }
  >;
  const out: Record<string, number[][]> = {};
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    expect(info.dtype).toBe('I32');
    const [rows, cols] = info.shape;
    const base = 8 + headerLength + info.data_offsets[0];
    out[name] = Array.from({ length: rows }, (_, r) =>
      Array.from({ length: cols }, (_, c) => buf.readInt32LE(base + 4 * (r * cols + c))),
    );
  }
  return out;
}

/** A temporary folder holding the given files (name → content). */
function tempFolder(files: Record<string, string>): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clip-tokenizer-'));
  for (const [name, content] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), content);
  return dir;
}

describe('CLIPTokenizer (golden clip_tokenizer)', () => {
  const prompts = JSON.parse(fs.readFileSync(path.join(CASE_DIR, 'prompts.json'), 'utf8')) as PromptRow[];
  const golden = readI32Tensors(path.join(CASE_DIR, 'io.safetensors'));
  let tokenizer: CLIPTokenizer;

  beforeAll(() => {
    tokenizer = CLIPTokenizer.fromPretrained(TOKENIZER_DIR);
  });

  it('loads the real vocabulary with the folder special tokens', () => {
    expect(tokenizer.vocabSize).toBe(49408);
    expect(tokenizer.bosTokenId).toBe(49406);
    expect(tokenizer.eosTokenId).toBe(49407);
    expect(tokenizer.padTokenId).toBe(49407);
    expect(tokenizer.modelMaxLength).toBe(77);
  });

  it.each(prompts.map((p) => [p.row, p] as const))('row %i: normalised text, BPE tokens, ids', (_row, p) => {
    expect(tokenizer.normalize(p.prompt)).toBe(p.normalized);
    expect(tokenizer.tokenize(p.prompt)).toEqual(p.tokens);
    expect(tokenizer.encode(p.prompt)).toEqual(p.ids);
  });

  it('reproduces input_ids and attention_mask [20, 77]', () => {
    const out = tokenizer.call(
      prompts.map((p) => p.prompt),
      { padding: 'max_length', maxLength: 77, truncation: true },
    );
    expect(out.inputIds).toEqual(golden.input_ids);
    expect(out.attentionMask).toEqual(golden.attention_mask);
  });

  it('reproduces input_ids_pad0 with a pad id override', () => {
    const out = tokenizer.call(
      prompts.map((p) => p.prompt),
      { padding: 'max_length', padTokenId: 0 },
    );
    expect(out.inputIds).toEqual(golden.input_ids_pad0);
  });

  it('tokenizes the empty prompt to BOS, EOS and padding', () => {
    const out = tokenizer.call('');
    expect(out.inputIds).toEqual([[49406, ...new Array(76).fill(49407)]]);
    expect(out.attentionMask).toEqual([[1, 1, ...new Array(75).fill(0)]]);
  });

  it('keeps every token without truncation and pads to the longest row', () => {
    const long = prompts.find((p) => p.truncated);
    expect(long).toBeDefined();
    const out = tokenizer.call([long!.prompt, 'a cat'], { padding: 'longest', truncation: false });
    expect(out.inputIds[0]).toEqual([49406, ...long!.ids, 49407]);
    expect(out.inputIds[1]).toHaveLength(long!.ids.length + 2);
    expect(out.attentionMask[1].filter((m) => m === 1)).toHaveLength(4);
  });

  it('maps literal special tokens to their ids, in any case', () => {
    expect(tokenizer.encode('a <|endoftext|> b')).toEqual([320, 49407, 321]);
    expect(tokenizer.encode('a<|STARTOFTEXT|>b')).toEqual([320, 49406, 321]);
  });

  it('decodes ids back to the normalised text (words without punctuation)', () => {
    for (const p of prompts.filter((q) => [1, 2, 4, 6, 12, 13].includes(q.row))) {
      expect(tokenizer.decode(p.ids)).toBe(p.normalized);
    }
    expect(tokenizer.decode(golden.input_ids[1], { skipSpecialTokens: true })).toBe('a photo of a cat');
  });

  it('loads tokenizer.json alone, with object-valued special tokens', () => {
    const vocab = JSON.parse(fs.readFileSync(path.join(TOKENIZER_DIR, 'vocab.json'), 'utf8')) as Record<string, number>;
    const merges = fs.readFileSync(path.join(TOKENIZER_DIR, 'merges.txt'), 'utf8').trim().split('\n').slice(1);
    const dir = tempFolder({
      'tokenizer.json': JSON.stringify({ model: { type: 'BPE', vocab, merges: merges.map((m) => m.split(' ')) } }),
      'special_tokens_map.json': JSON.stringify({ pad_token: { content: '!' } }),
    });
    const fromJson = CLIPTokenizer.fromPretrained(dir);
    expect(fromJson.padTokenId).toBe(0);
    expect(fromJson.modelMaxLength).toBe(77);
    for (const p of prompts.filter((q) => !q.prompt.includes('!'))) expect(fromJson.encode(p.prompt)).toEqual(p.ids);
  });

  it('names the folder and the expected files when they are missing', () => {
    const dir = tempFolder({ 'vocab.json': '{}' });
    expect(() => CLIPTokenizer.fromPretrained(dir)).toThrow(new RegExp(`${dir}.*vocab\\.json and merges\\.txt`));
    expect(() => CLIPTokenizer.fromPretrained(path.join(dir, 'missing'))).toThrow(/does not exist/);
  });
});
