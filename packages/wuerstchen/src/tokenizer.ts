/**
 * CLIP byte-level BPE tokenizer (transformers `tokenization_clip.py`), reproducing the slow transformers `CLIPTokenizer` without ftfy:
 * BasicTokenizer cleaning → CLIP regex → bytes_to_unicode → BPE with `</w>` → vocabulary ids.
 */
import { JsonTextError, fileStore, joinPath, parseStrictJson, readTextFile } from '@wuerstchen/core/internal';

/** Special-token strings of a CLIP tokenizer (the tokenizer/ folders of warp-ai/wuerstchen(-prior): pad is `<|endoftext|>` for Würstchen). */
export interface SpecialTokens {
  bos: string;
  eos: string;
  unk: string;
  pad: string;
}

/** Everything a {@link CLIPTokenizer} is built from; `fromPretrained` fills it from a tokenizer folder. */
export interface CLIPTokenizerData {
  /** token → id (vocab.json, or tokenizer.json `model.vocab` plus `added_tokens`). */
  vocab: Map<string, number>;
  /** Merge pairs in rank order (merges.txt without its `#version` header line). */
  merges: Array<[string, string]>;
  specialTokens: SpecialTokens;
  modelMaxLength: number;
}

/** Options of {@link CLIPTokenizer.call}; the pipelines use max_length padding to 77 with truncation (transformers `tokenization_clip.py`). */
export interface CLIPTokenizerCallOptions {
  /** `'max_length'` pads every row to `maxLength`; `'longest'` to the longest row. Default `'max_length'`. */
  padding?: 'max_length' | 'longest';
  /** Defaults to `modelMaxLength`. */
  maxLength?: number;
  /** Keep at most `maxLength - 2` content tokens. Default `true`. */
  truncation?: boolean;
  /** Overrides the folder's pad id (e.g. 0 for tokenizers whose pad token is `!`). */
  padTokenId?: number;
}

/** Batch output of {@link CLIPTokenizer.call}. */
export interface CLIPTokenizerOutput {
  inputIds: number[][];
  /** 1 for BOS…EOS, 0 for padding. */
  attentionMask: number[][];
}

/** The slow tokenizer reads merges.txt lines [1, 49152 − 256 − 2 + 1) (transformers `tokenization_clip.py`). */
const MAX_MERGES = 49152 - 256 - 2;
const DEFAULT_MAX_LENGTH = 77;
const END_OF_WORD = '</w>';
const START_OF_TEXT = '<|startoftext|>';
const END_OF_TEXT = '<|endoftext|>';
const DEFAULT_SPECIALS: SpecialTokens = { bos: START_OF_TEXT, eos: END_OF_TEXT, unk: END_OF_TEXT, pad: END_OF_TEXT };

/** CLIP pre-tokenizer pattern of the slow tokenizer, with its literal specials; IGNORECASE (transformers `tokenization_clip.py`). */
const CLIP_PATTERN = /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+/giu;
/**
 * U+0345 matches no alternative of the pattern under Python `regex` IGNORECASE, so `findall` skips it; JS /iu
 * folds it into `\p{L}`. A space reproduces the skip (it separates matches and is itself never matched).
 */
const UNMATCHED_BY_PYTHON = /\u0345/gu;
/** BasicTokenizer `_clean_text`: U+FFFD and category C except \t \n \r are dropped. */
const DROPPED_CHARS = /\uFFFD|(?![\t\n\r])\p{C}/gu;
/** BasicTokenizer `_is_whitespace`: mapped to a space. */
const WHITESPACE_CHARS = /[\t\n\r\p{Zs}]/gu;
/** BasicTokenizer `_is_chinese_char` ranges (CJK ideographs only; not Hangul or kana). */
const CJK_IDEOGRAPHS =
  /[\u{3400}-\u{4DBF}\u{4E00}-\u{9FFF}\u{F900}-\u{FAFF}\u{20000}-\u{2A6DF}\u{2A700}-\u{2B73F}\u{2B740}-\u{2B81F}\u{2B820}-\u{2CEAF}\u{2F800}-\u{2FA1F}]/gu;

/** GPT-2/CLIP `bytes_to_unicode`: printable bytes map to themselves, the other 68 to U+0100 + n in order (transformers `tokenization_clip.py`). */
function bytesToUnicode(): string[] {
  const table: string[] = new Array(256);
  let next = 256;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    table[b] = String.fromCharCode(printable ? b : next++);
  }
  return table;
}

/**
 * The slow tokenizer's text normalisation without ftfy (BasicTokenizer with strip_accents=False and no punctuation
 * split): drop control/format chars, whitespace → space, spaces around CJK ideographs, NFC, split on whitespace,
 * lowercase each word; the words joined by single spaces.
 */
export function normalizeText(text: string): string {
  const cleaned = text.replace(DROPPED_CHARS, '').replace(WHITESPACE_CHARS, ' ');
  const spaced = cleaned.replace(CJK_IDEOGRAPHS, ' $& ').normalize('NFC');
  const words = spaced.split(/\s+/u).filter((w) => w.length > 0);
  return words.map((w) => w.toLowerCase()).join(' ');
}

/** Escapes a literal for use inside a RegExp. */
function escapeRegExp(literal: string): string {
  return literal.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** A special token entry of tokenizer_config.json / special_tokens_map.json: a string or `{content}`. */
function tokenContent(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (value !== null && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  return undefined;
}

/** Reads a JSON object file (regular files only; errors name the file and never quote it). */
function readJsonObject(file: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = parseStrictJson(readTextFile(file));
  } catch (e) {
    if (e instanceof JsonTextError) throw new Error(`CLIPTokenizer: ${file} is not valid JSON (${e.message})`);
    throw e;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new Error(`CLIPTokenizer: ${file} is not a JSON object`);
  return value as Record<string, unknown>;
}

const UTF8 = new TextEncoder();

function exists(name: string): boolean {
  return fileStore(name).kind(name) !== undefined;
}

/** Reads a JSON object file, or returns `{}` if it does not exist. */
function readOptionalJson(file: string): Record<string, unknown> {
  return exists(file) ? readJsonObject(file) : {};
}

/** Parses a merge rule given as `"a b"` or `["a", "b"]` (tokenizer.json uses both forms). */
function parseMerge(rule: string | string[]): [string, string] | undefined {
  const parts = typeof rule === 'string' ? rule.trim().split(/\s+/) : rule;
  return parts.length === 2 ? [parts[0], parts[1]] : undefined;
}

/** Merge pairs of a merges.txt: the header line is skipped, as the slow tokenizer does. */
function readMergesTxt(file: string): Array<[string, string]> {
  const lines = readTextFile(file).trim().split('\n').slice(1);
  return lines.map(parseMerge).filter((m): m is [string, string] => m !== undefined);
}

/** vocab + merges from vocab.json/merges.txt, else from tokenizer.json; throws naming the folder otherwise. */
function readVocabAndMerges(dir: string): Pick<CLIPTokenizerData, 'vocab' | 'merges'> {
  const vocabFile = joinPath(dir, 'vocab.json');
  const mergesFile = joinPath(dir, 'merges.txt');
  if (exists(vocabFile) && exists(mergesFile)) {
    const vocab = new Map(Object.entries(readJsonObject(vocabFile) as Record<string, number>));
    return { vocab, merges: readMergesTxt(mergesFile) };
  }
  const tokenizerFile = joinPath(dir, 'tokenizer.json');
  if (exists(tokenizerFile)) return readTokenizerJson(tokenizerFile);
  throw new Error(
    `CLIPTokenizer: no vocabulary in ${dir}: expected vocab.json and merges.txt, or tokenizer.json ` +
      `(plus optional tokenizer_config.json and special_tokens_map.json)`,
  );
}

/** The BPE model of a tokenizers-library tokenizer.json (`model.vocab`, `model.merges`, `added_tokens`). */
function readTokenizerJson(file: string): Pick<CLIPTokenizerData, 'vocab' | 'merges'> {
  const json = readJsonObject(file) as {
    model?: { vocab?: Record<string, number>; merges?: Array<string | string[]> };
    added_tokens?: Array<{ id: number; content: string }>;
  };
  if (!json.model?.vocab || !json.model.merges)
    throw new Error(`CLIPTokenizer: ${file} has no model.vocab/model.merges`);
  const vocab = new Map(Object.entries(json.model.vocab));
  for (const added of json.added_tokens ?? []) vocab.set(added.content, added.id);
  const merges = json.model.merges.map(parseMerge).filter((m): m is [string, string] => m !== undefined);
  return { vocab, merges };
}

/** Special tokens and model_max_length: special_tokens_map.json overrides tokenizer_config.json (as transformers). */
function readConfig(dir: string): Pick<CLIPTokenizerData, 'specialTokens' | 'modelMaxLength'> {
  const config = readOptionalJson(joinPath(dir, 'tokenizer_config.json'));
  const merged = { ...config, ...readOptionalJson(joinPath(dir, 'special_tokens_map.json')) };
  const pick = (key: string, fallback: string): string => tokenContent(merged[key]) ?? fallback;
  const specialTokens: SpecialTokens = {
    bos: pick('bos_token', DEFAULT_SPECIALS.bos),
    eos: pick('eos_token', DEFAULT_SPECIALS.eos),
    unk: pick('unk_token', DEFAULT_SPECIALS.unk),
    pad: pick('pad_token', DEFAULT_SPECIALS.pad),
  };
  const max = config.model_max_length;
  const modelMaxLength = Number.isSafeInteger(max) && (max as number) > 0 ? (max as number) : DEFAULT_MAX_LENGTH;
  return { specialTokens, modelMaxLength };
}

/** CLIP tokenizer matching transformers' slow `CLIPTokenizer` (without ftfy) exactly (transformers `tokenization_clip.py`). */
export class CLIPTokenizer {
  readonly bosTokenId: number;
  readonly eosTokenId: number;
  readonly padTokenId: number;
  readonly unkTokenId: number;
  readonly modelMaxLength: number;
  private readonly vocab: Map<string, number>;
  private readonly idToToken: Map<number, string>;
  /** `"first second"` → merge rank (lower merges first); symbols never contain spaces. */
  private readonly mergeRanks = new Map<string, number>();
  private readonly byteEncoder = bytesToUnicode();
  private readonly byteDecoder = new Map(this.byteEncoder.map((ch, b) => [ch, b] as [string, number]));
  /** Per-word BPE cache, pre-seeded with the literal specials like the slow tokenizer. */
  private readonly bpeCache = new Map<string, string[]>([
    [START_OF_TEXT, [START_OF_TEXT]],
    [END_OF_TEXT, [END_OF_TEXT]],
  ]);
  /** Special-token strings split off the raw text before cleaning (transformers' added-tokens trie). */
  private readonly specialSplitter: RegExp;
  private readonly specialIds = new Map<string, number>();

  constructor(data: CLIPTokenizerData) {
    this.vocab = data.vocab;
    this.idToToken = new Map([...data.vocab].map(([token, id]) => [id, token] as [number, string]));
    data.merges.slice(0, MAX_MERGES).forEach(([a, b], rank) => {
      const key = `${a} ${b}`;
      if (!this.mergeRanks.has(key)) this.mergeRanks.set(key, rank);
    });
    const { bos, eos, unk, pad } = data.specialTokens;
    this.bosTokenId = this.specialId(bos);
    this.eosTokenId = this.specialId(eos);
    this.unkTokenId = this.specialId(unk);
    this.padTokenId = this.specialId(pad);
    this.modelMaxLength = data.modelMaxLength;
    const literals = [...this.specialIds.keys()].sort((x, y) => y.length - x.length).map(escapeRegExp);
    this.specialSplitter = new RegExp(`(${literals.join('|')})`, 'u');
  }

  /** Loads vocab.json + merges.txt (or tokenizer.json), tokenizer_config.json and special_tokens_map.json. */
  static fromPretrained(dir: string): CLIPTokenizer {
    if (fileStore(dir).kind(dir) !== 'folder') {
      throw new Error(`CLIPTokenizer: tokenizer folder ${dir} does not exist (expected vocab.json + merges.txt)`);
    }
    return new CLIPTokenizer({ ...readVocabAndMerges(dir), ...readConfig(dir) });
  }

  /** Vocabulary size (49408 for the CLIP files). */
  get vocabSize(): number {
    return this.vocab.size;
  }

  /** BasicTokenizer-normalised text, as the slow tokenizer feeds it to the CLIP regex. */
  normalize(text: string): string {
    return normalizeText(text);
  }

  /** BPE tokens of `text`, without BOS/EOS. */
  tokenize(text: string): string[] {
    return text.split(this.specialSplitter).flatMap((chunk, i) => (i % 2 === 1 ? [chunk] : this.tokenizeChunk(chunk)));
  }

  /** Token ids of `text`, without BOS/EOS and untruncated; unknown tokens map to the unk id. */
  encode(text: string): number[] {
    return this.tokenize(text).map((token) => this.vocab.get(token) ?? this.unkTokenId);
  }

  /** `tokenizer(texts, padding, max_length, truncation)`: BOS + ids + EOS, right-padded, with the mask (transformers `tokenization_clip.py`). */
  call(texts: string | string[], options: CLIPTokenizerCallOptions = {}): CLIPTokenizerOutput {
    const maxLength = options.maxLength ?? this.modelMaxLength;
    const truncation = options.truncation ?? true;
    if (truncation && maxLength < 2)
      throw new Error(`CLIPTokenizer: maxLength ${maxLength} leaves no room for BOS/EOS`);
    const rows = (Array.isArray(texts) ? texts : [texts]).map((text) => {
      const ids = this.encode(text);
      return [this.bosTokenId, ...(truncation ? ids.slice(0, maxLength - 2) : ids), this.eosTokenId];
    });
    const width = options.padding === 'longest' ? Math.max(0, ...rows.map((r) => r.length)) : maxLength;
    const padId = options.padTokenId ?? this.padTokenId;
    return {
      inputIds: rows.map((r) => r.concat(new Array<number>(Math.max(0, width - r.length)).fill(padId))),
      attentionMask: rows.map((r) => new Array<number>(Math.max(width, r.length)).fill(0).fill(1, 0, r.length)),
    };
  }

  /** Text of `ids`: byte-level decoding with `</w>` → space, trimmed (no transformers clean-up of spaces). */
  decode(ids: number[], options: { skipSpecialTokens?: boolean } = {}): string {
    const specials = new Set([this.bosTokenId, this.eosTokenId, this.padTokenId, this.unkTokenId]);
    const kept = options.skipSpecialTokens ? ids.filter((id) => !specials.has(id)) : ids;
    const bytes = [...kept.map((id) => this.idToTokenOrThrow(id)).join('')].map((ch) => this.byteOf(ch));
    return new TextDecoder().decode(Uint8Array.from(bytes)).replaceAll(END_OF_WORD, ' ').trim();
  }

  /** Inverse bytes_to_unicode of one symbol character. */
  private byteOf(ch: string): number {
    const b = this.byteDecoder.get(ch);
    if (b === undefined) throw new RangeError(`CLIPTokenizer: ${JSON.stringify(ch)} is not a byte-level character`);
    return b;
  }

  /** Id of a special token, which must be in the vocabulary. */
  private specialId(token: string): number {
    const id = this.vocab.get(token);
    if (id === undefined)
      throw new Error(`CLIPTokenizer: special token ${JSON.stringify(token)} is not in the vocabulary`);
    this.specialIds.set(token, id);
    return id;
  }

  /** Token string of an id. */
  private idToTokenOrThrow(id: number): string {
    const token = this.idToToken.get(id);
    if (token === undefined) throw new RangeError(`CLIPTokenizer: unknown token id ${id}`);
    return token;
  }

  /** Slow `_tokenize`: normalise, regex-split, byte-encode each piece, BPE it. */
  private tokenizeChunk(chunk: string): string[] {
    const pieces = normalizeText(chunk).replace(UNMATCHED_BY_PYTHON, ' ').match(CLIP_PATTERN) ?? [];
    return pieces.flatMap((piece) => this.bpe(this.byteEncode(piece)));
  }

  /** UTF-8 bytes of `piece` mapped through bytes_to_unicode. */
  private byteEncode(piece: string): string {
    let out = '';
    for (const b of UTF8.encode(piece)) out += this.byteEncoder[b];
    return out;
  }

  /** BPE of one byte-encoded word: `</w>` on the last symbol, then merge the lowest-ranked pair until none applies. */
  private bpe(word: string): string[] {
    const cached = this.bpeCache.get(word);
    if (cached) return cached;
    let symbols = [...word];
    symbols[symbols.length - 1] += END_OF_WORD;
    while (symbols.length > 1) {
      const best = this.lowestRankedPair(symbols);
      if (best === undefined) break;
      symbols = mergePair(symbols, symbols[best], symbols[best + 1]);
    }
    this.bpeCache.set(word, symbols);
    return symbols;
  }

  /** Index of the adjacent pair with the lowest merge rank, or undefined if no pair is a merge. */
  private lowestRankedPair(symbols: string[]): number | undefined {
    let bestRank = Infinity;
    let best: number | undefined;
    for (let i = 0; i + 1 < symbols.length; i++) {
      const rank = this.mergeRanks.get(`${symbols[i]} ${symbols[i + 1]}`);
      if (rank !== undefined && rank < bestRank) {
        bestRank = rank;
        best = i;
      }
    }
    return best;
  }
}

/** Replaces every non-overlapping occurrence of (first, second), left to right, by the merged symbol. */
function mergePair(symbols: string[], first: string, second: string): string[] {
  const merged: string[] = [];
  for (let i = 0; i < symbols.length; i++) {
    if (i + 1 < symbols.length && symbols[i] === first && symbols[i + 1] === second) {
      merged.push(first + second);
      i++;
    } else {
      merged.push(symbols[i]);
    }
  }
  return merged;
}
