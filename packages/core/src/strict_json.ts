/**
 * JSON for files we do not trust. Two differences from a bare `JSON.parse`:
 * - a key given twice in one object is an error (JSON.parse keeps the last one silently, so two readers of the same
 *   file could disagree on a value);
 * - errors never quote the text: V8's messages include a snippet, which would echo the bytes of whatever file was
 *   passed in place of a JSON file.
 */

/** Malformed JSON text; the message gives a position, never the text itself. */
export class JsonTextError extends Error {
  constructor(detail: string) {
    super(detail);
    this.name = 'JsonTextError';
  }
}

/** Parses `text`, rejecting duplicate keys; errors are JsonTextErrors. */
export function parseStrictJson(text: string): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new JsonTextError(syntaxDetail(err));
  }
  const duplicate = findDuplicateKey(text);
  if (duplicate !== undefined) throw new JsonTextError(duplicate);
  return value;
}

/** A short JSON rendering of a value read from a file, cut to `max` characters. */
export function quoteValue(value: unknown, max = 60): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > max ? `${text.slice(0, max)}…` : text;
}

function syntaxDetail(err: unknown): string {
  const message = err instanceof Error ? err.message : '';
  const at = /at position (\d+)/.exec(message);
  if (at) return `syntax error at character ${at[1]}`;
  return /end of JSON input/.test(message) ? 'unexpected end of the text' : 'syntax error';
}

interface Frame {
  /** keys seen so far, for an object; null for an array. */
  keys: Set<string> | null;
  /** the key this container is the value of ('' at the top). */
  name: string;
}

/**
 * Scans valid JSON text for an object holding the same key twice; returns a description or undefined. Keys are
 * compared after unescaping, so `"a"` and `"\u0061"` are the same key.
 */
function findDuplicateKey(text: string): string | undefined {
  const stack: Frame[] = [];
  let expectKey = false;
  let lastKey = '';
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let j = i + 1;
      while (text.charCodeAt(j) !== 0x22) j += text.charCodeAt(j) === 0x5c /* \ */ ? 2 : 1;
      const top = stack[stack.length - 1];
      if (expectKey && top?.keys) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (top.keys.has(key)) {
          return stack.length > 1
            ? `duplicate key ${quoteValue(key)} in ${quoteValue(top.name)}`
            : `duplicate key ${quoteValue(key)}`;
        }
        top.keys.add(key);
        lastKey = key;
        expectKey = false;
      }
      i = j;
    } else if (c === 0x7b /* { */) {
      stack.push({ keys: new Set(), name: lastKey });
      expectKey = true;
    } else if (c === 0x5b /* [ */) {
      stack.push({ keys: null, name: lastKey });
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      stack.pop();
    } else if (c === 0x2c /* , */) {
      expectKey = (stack[stack.length - 1]?.keys ?? null) !== null;
    }
  }
  return undefined;
}
