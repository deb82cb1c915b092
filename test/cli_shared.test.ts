/**
 * What both CLIs share (@wuerstchen/core/cli): the argument parser, the strict value readers, the progress display
 * and the command runner; and the typed backend errors the CLIs tell apart without reading messages.
 */
import { BackendUnavailableError, UnknownBackendError, useBackend } from '@wuerstchen/core';
import {
  CommandIO,
  OptionSpecs,
  ProgressBar,
  UsageError,
  parseCommandLine,
  readChoice,
  readInteger,
  readNumber,
  runCommand,
} from '@wuerstchen/core/cli';

const SPECS: OptionSpecs = {
  out: { kind: 'string' },
  note: { kind: 'string', allowEmpty: true },
  tag: { kind: 'list' },
  resume: { kind: 'flag' },
};

function options(argv: string[]) {
  const line = parseCommandLine(argv, SPECS);
  if (line.request !== 'run') throw new Error(`expected options, got ${line.request}`);
  return line.options;
}

const usageError = (f: () => unknown): string => {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(UsageError);
    return (e as Error).message;
  }
  throw new Error('no UsageError');
};

describe('parseCommandLine', () => {
  test('--name value, --name=value, repeated lists, flags', () => {
    const o = options(['--out', 'a.png', '--tag=x', '--tag', 'y', '--resume', '--note=']);
    expect(o.string('out')).toBe('a.png');
    expect(o.list('tag')).toEqual(['x', 'y']);
    expect(o.flag('resume')).toBe(true);
    expect(o.string('note')).toBe('');
    expect(o.has('missing')).toBe(false);
    expect(o.list('missing')).toEqual([]);
  });

  test('--help, -h and --version where an option name stands; not as a value', () => {
    expect(parseCommandLine(['--out', 'x', '--help'], SPECS)).toEqual({ request: 'help' });
    expect(parseCommandLine(['-h', '--bogus'], SPECS)).toEqual({ request: 'help' });
    expect(parseCommandLine(['--version'], SPECS)).toEqual({ request: 'version' });
    expect(options(['--out=--help']).string('out')).toBe('--help');
    expect(usageError(() => parseCommandLine(['--out', '--help'], SPECS))).toBe(
      '--out needs a value, but the next argument is the option --help (write --out=--help if that is the value)',
    );
  });

  test.each([
    [['--bogus'], 'unknown option --bogus'],
    [['-x'], 'unknown option -x'],
    [['stray'], 'unexpected argument "stray" (options take the form --name value)'],
    [['--', '--out'], 'unexpected argument "--"'],
    [['--out', 'a', '--out', 'b'], '--out given twice'],
    [['--resume=yes'], '--resume takes no value'],
    [['--out'], '--out needs a value'],
    [['--out='], '--out needs a non-empty value'],
    [
      ['--out', '-h'],
      '--out needs a value, but the next argument is the option -h (write --out=-h if that is the value)',
    ],
  ])('%j: %s', (argv, message) => {
    expect(usageError(() => parseCommandLine(argv, SPECS))).toBe(message);
  });

  test('a negative number is a value, not an option', () => {
    expect(options(['--out', '-1']).string('out')).toBe('-1');
  });

  test('require names every missing option', () => {
    expect(usageError(() => options([]).require(['out']))).toBe('--out is required');
    expect(usageError(() => options([]).require(['out', 'note']))).toBe('--out, --note are required');
    expect(() => options(['--out', 'x']).require(['out'])).not.toThrow();
  });
});

describe('strict value readers', () => {
  test('integers: decimal digits only, within 2^53', () => {
    expect(readInteger('--n', '12', 1)).toBe(12);
    expect(readInteger('--seed', '0', 0)).toBe(0);
    for (const bad of ['0x10', '1e3', ' 3', '3.0', '-1', 'Infinity', ''])
      expect(usageError(() => readInteger('--n', bad, 0))).toBe(
        `--n must be a non-negative integer, got ${JSON.stringify(bad)} (decimal digits only)`,
      );
    expect(usageError(() => readInteger('--n', '0', 1))).toBe(
      '--n must be a positive integer, got "0" (decimal digits only)',
    );
    expect(usageError(() => readInteger('--n', '99999999999999999999', 1))).toBe(
      '--n must be a positive integer below 2^53, got "99999999999999999999" (decimal digits only)',
    );
  });

  test('numbers: decimal notation; an exponent only where asked for', () => {
    expect(readNumber('--w', '7.5', { min: 0 })).toBe(7.5);
    expect(readNumber('--w', '.5', { min: 0 })).toBe(0.5);
    expect(usageError(() => readNumber('--w', '1e3', { min: 0 }))).toBe(
      '--w must be a number >= 0, got "1e3" (decimal notation only, like 4 or 7.5)',
    );
    expect(readNumber('--lr', '1e-4', { min: 0, above: true, exponent: true })).toBe(1e-4);
    expect(usageError(() => readNumber('--lr', '0', { min: 0, above: true, exponent: true }))).toBe(
      '--lr must be a number > 0, got "0" (decimal notation, like 0.0001 or 1e-4)',
    );
    expect(usageError(() => readNumber('--lr', '0x1', { min: 0, exponent: true }))).toMatch(
      /^--lr must be a number >= 0/,
    );
  });

  test('choices', () => {
    expect(readChoice('--mode', 'b', ['a', 'b'])).toBe('b');
    expect(usageError(() => readChoice('--mode', 'c', ['a', 'b']))).toBe('--mode must be one of a, b, got "c"');
  });
});

describe('ProgressBar', () => {
  /** A stream that records writes, and a clock the test moves. */
  function setup(isTTY: boolean) {
    let text = '';
    let now = 100;
    const stream = { isTTY, write: (s: string) => (text += s) };
    return { stream, text: () => text, tick: (s: number) => (now += s), clock: () => now };
  }

  test('on a terminal: one line redrawn with the step, it/s and ETA, ended by a summary line', () => {
    const t = setup(true);
    const bar = new ProgressBar(t.stream, { clock: t.clock });
    bar.start('prior', 4);
    t.tick(0.5);
    bar.update(1, 'loss 0.5000');
    expect(t.text()).toBe('\r\x1b[2Kprior    [######------------------] 1/4  2.00 it/s  ETA 0:02  loss 0.5000');
    bar.log('a message');
    expect(t.text()).toMatch(/\r\x1b\[2Ka message\n$/);
    t.tick(1.5);
    bar.update(4);
    bar.finish();
    const end = `\r\x1b[2Kprior    [${'#'.repeat(24)}] 4/4  2.00 it/s  ETA 0:00\r\x1b[2Kprior: 4 steps in 2.00 s (2.00 it/s)\n`;
    expect(t.text().slice(-end.length)).toBe(end);
  });

  test('in a log: a plain line every `every` steps and at the end, no carriage returns; a resumed task counts its own steps', () => {
    const t = setup(false);
    const bar = new ProgressBar(t.stream, { every: 2, clock: t.clock });
    bar.start('B1', 10, 4);
    for (let step = 5; step <= 10; step++) {
      t.tick(2);
      bar.update(step, 'loss 1.0000');
    }
    bar.finish();
    expect(t.text()).toBe(
      [
        'B1: step  6/10  2.00 s/it  ETA 0:08  loss 1.0000',
        'B1: step  8/10  2.00 s/it  ETA 0:04  loss 1.0000',
        'B1: 6 steps in 12.00 s (2.00 s/it)',
        '',
      ].join('\n'),
    );
  });

  test('mode none writes only log lines', () => {
    const t = setup(true);
    const bar = new ProgressBar(t.stream, { mode: 'none', every: 1, clock: t.clock });
    bar.start('x', 2);
    bar.update(1);
    bar.log('kept');
    bar.finish();
    expect(t.text()).toBe('kept\n');
  });
});

describe('runCommand', () => {
  function io(): CommandIO & { out: string; err: string } {
    const r = { out: '', err: '' } as CommandIO & { out: string; err: string };
    r.stdout = { write: (s: string) => (r.out += s) };
    r.stderr = { write: (s: string) => (r.err += s) };
    return r;
  }
  const spec = {
    program: 'prog',
    command: 'cmd',
    usage: 'usage: prog cmd --out <x>',
    version: () => '1.2.3',
    options: SPECS,
    read: (o: ReturnType<typeof options>) => {
      o.require(['out']);
      return o.string('out')!;
    },
    run: (out: string) => (out === 'fail' ? 1 : 0),
  };

  test('help and version on stdout (exit 0); usage errors on stderr (exit 2); else the command runs', async () => {
    let r = io();
    expect(await runCommand(spec, ['--help'], r)).toBe(0);
    expect([r.out, r.err]).toEqual(['usage: prog cmd --out <x>\n', '']);
    r = io();
    expect(await runCommand(spec, ['--version'], r)).toBe(0);
    expect([r.out, r.err]).toEqual(['1.2.3\n', '']);
    r = io();
    expect(await runCommand(spec, [], r)).toBe(2);
    expect([r.out, r.err]).toEqual(['', 'prog cmd: --out is required\nRun "prog cmd --help" for the options.\n']);
    expect(await runCommand(spec, ['--out', 'fail'], io())).toBe(1);
    expect(await runCommand(spec, ['--out', 'ok'], io())).toBe(0);
  });
});

describe('typed backend errors', () => {
  const saved = process.env.WUERSTCHEN_BACKEND;
  afterEach(() => {
    if (saved === undefined) delete process.env.WUERSTCHEN_BACKEND;
    else process.env.WUERSTCHEN_BACKEND = saved;
  });

  test('an unknown name is an UnknownBackendError, saying where the name came from', async () => {
    const e = await useBackend('cuda').catch((x: unknown) => x);
    expect(e).toBeInstanceOf(UnknownBackendError);
    expect((e as UnknownBackendError).requested).toBe('cuda');
    process.env.WUERSTCHEN_BACKEND = 'gpu';
    await expect(useBackend()).rejects.toThrow(
      'unknown backend "gpu" (from $WUERSTCHEN_BACKEND); expected one of auto, tensorflow, native, wasm, cpu',
    );
  });

  test('a backend that is not installed is a BackendUnavailableError listing why', async () => {
    // tfjs-node is not a dependency of this repository
    const e = await useBackend('tensorflow', { quiet: true }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(BackendUnavailableError);
    expect((e as BackendUnavailableError).skipped).toEqual(['tensorflow (not installed)']);
  });
});
