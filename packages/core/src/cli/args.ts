/**
 * The argument parser of both command lines (`wuerstchen`, `wuerstchen-train`), on node's `util.parseArgs`:
 * long options as `--name value` or `--name=value`, `-h`/`--help` and `--version` wherever an option name may
 * stand, and a UsageError naming the argument for every problem. The readers below check values strictly:
 * plain decimals (`Number()` would also take `0x10`, `1e3`, `Infinity` and blanks), listed choices.
 */
import { parseArgs } from 'util';

/** Bad command-line arguments: the CLIs print the message and exit with code 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export interface OptionSpec {
  /** `flag` takes no value, `string` one value, `list` one value per use and may be repeated. */
  kind: 'flag' | 'string' | 'list';
  /** accept an empty value (default: `--name ""` is an error). */
  allowEmpty?: boolean;
}

/** Options by long name, without the dashes (`'prior-steps'`). */
export type OptionSpecs = Record<string, OptionSpec>;

/** The options given on a command line, each checked against its spec. */
export class ParsedOptions {
  constructor(private readonly values: ReadonlyMap<string, string[]>) {}

  has(name: string): boolean {
    return this.values.has(name);
  }

  /** The value of a `string` option, if given. */
  string(name: string): string | undefined {
    return this.values.get(name)?.[0];
  }

  /** Every value of a `list` option, in order. */
  list(name: string): string[] {
    return this.values.get(name) ?? [];
  }

  flag(name: string): boolean {
    return this.values.has(name);
  }

  /** Throws a UsageError naming the options of `names` that were not given. */
  require(names: string[]): void {
    const missing = names.filter((n) => !this.values.has(n)).map((n) => `--${n}`);
    if (missing.length === 1) throw new UsageError(`${missing[0]} is required`);
    if (missing.length > 1) throw new UsageError(`${missing.join(', ')} are required`);
  }
}

/** What a command line asks for: its options, or the help or version text. */
export type CommandLine = { request: 'run'; options: ParsedOptions } | { request: 'help' | 'version' };

/**
 * A value taken from the next argument that is itself an option (`--prompt --help` must not swallow `--help`
 * unnoticed). Negative numbers are not options: the number readers reject them with a better message.
 */
export function looksLikeOption(value: string): boolean {
  return value.startsWith('--') || /^-[A-Za-z]$/.test(value);
}

/** Parses `argv` (the arguments after the command) against `specs`; every problem is a UsageError. */
export function parseCommandLine(argv: string[], specs: OptionSpecs): CommandLine {
  const nodeOptions: NonNullable<Parameters<typeof parseArgs>[0]>['options'] = {
    help: { type: 'boolean', short: 'h' },
    version: { type: 'boolean' },
  };
  for (const [name, spec] of Object.entries(specs)) {
    nodeOptions[name] = { type: spec.kind === 'flag' ? 'boolean' : 'string', multiple: spec.kind === 'list' };
  }
  // Not strict: the tokens are checked below, so that each message names the argument in our words.
  const { tokens } = parseArgs({
    args: argv,
    options: nodeOptions,
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  if (tokens.some((t) => t.kind === 'option' && t.name === 'help')) return { request: 'help' };
  if (tokens.some((t) => t.kind === 'option' && t.name === 'version')) return { request: 'version' };
  const values = new Map<string, string[]>();
  for (const token of tokens) {
    if (token.kind === 'positional') {
      throw new UsageError(`unexpected argument ${JSON.stringify(token.value)} (options take the form --name value)`);
    }
    if (token.kind === 'option-terminator') throw new UsageError('unexpected argument "--"');
    const { name, rawName, value, inlineValue } = token;
    const spec = Object.hasOwn(specs, name) ? specs[name] : undefined;
    if (!spec) throw new UsageError(`unknown option ${rawName}`);
    if (spec.kind !== 'list' && values.has(name)) throw new UsageError(`${rawName} given twice`);
    if (spec.kind === 'flag') {
      if (value !== undefined) throw new UsageError(`${rawName} takes no value`);
      values.set(name, []);
      continue;
    }
    if (value === undefined) throw new UsageError(`${rawName} needs a value`);
    if (!inlineValue && looksLikeOption(value)) {
      throw new UsageError(
        `${rawName} needs a value, but the next argument is the option ${value} (write ${rawName}=${value} if that is the value)`,
      );
    }
    if (value === '' && !spec.allowEmpty) throw new UsageError(`${rawName} needs a non-empty value`);
    values.set(name, [...(values.get(name) ?? []), value]);
  }
  return { request: 'run', options: new ParsedOptions(values) };
}

/**
 * A number written in plain decimal: digits, optionally a fraction, and with `exponent` an exponent (`1e-4`,
 * as learning rates are written). Undefined for anything else, and for integers beyond 2^53.
 */
export function parseDecimal(value: string, integer: boolean, exponent = false): number | undefined {
  const pattern = integer ? /^\d+$/ : exponent ? /^(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$/ : /^(\d+(\.\d*)?|\.\d+)$/;
  if (!pattern.test(value)) return undefined;
  const v = Number(value);
  return Number.isFinite(v) && (!integer || Number.isSafeInteger(v)) ? v : undefined;
}

/** `--name`'s value as an integer of at least `min` (0 or 1), in decimal digits. */
export function readInteger(option: string, value: string, min: 0 | 1): number {
  const v = parseDecimal(value, true);
  if (v === undefined || v < min) {
    const what = min === 1 ? 'a positive integer' : 'a non-negative integer';
    const limit = /^\d+$/.test(value) && min <= Number(value) ? ' below 2^53' : '';
    throw new UsageError(`${option} must be ${what}${limit}, got ${JSON.stringify(value)} (decimal digits only)`);
  }
  return v;
}

/**
 * `--name`'s value as a number at least `min` (above it when `above`), in decimal notation (with `exponent`,
 * also `1e-4`).
 */
export function readNumber(
  option: string,
  value: string,
  opts: { min: number; above?: boolean; exponent?: boolean },
): number {
  const v = parseDecimal(value, false, opts.exponent);
  if (v === undefined || v < opts.min || (opts.above && v === opts.min)) {
    const notation = opts.exponent ? 'decimal notation, like 0.0001 or 1e-4' : 'decimal notation only, like 4 or 7.5';
    throw new UsageError(
      `${option} must be a number ${opts.above ? '>' : '>='} ${opts.min}, got ${JSON.stringify(value)} (${notation})`,
    );
  }
  return v;
}

/** `--name`'s value, which must be one of `choices`. */
export function readChoice<T extends string>(option: string, value: string, choices: readonly T[]): T {
  if (!(choices as readonly string[]).includes(value)) {
    throw new UsageError(`${option} must be one of ${choices.join(', ')}, got ${JSON.stringify(value)}`);
  }
  return value as T;
}
