/**
 * `--help` and `--version` on both CLIs and on every subcommand: exit 0, text on stdout, nothing on
 * stderr. A `--help` that is another option's value is not a request for help.
 */
import { main as trainMain } from '../packages/train/src/cli';
import { CliIO, main as generateMain } from '../packages/wuerstchen/src/cli';

const VERSION = /^\d+\.\d+\.\d+\n$/;

/** Runs the train CLI with stdout and stderr captured (it writes to the process streams). */
async function runTrain(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const stdout = jest.spyOn(process.stdout, 'write').mockImplementation((s) => ((out += String(s)), true));
  const stderr = jest.spyOn(process.stderr, 'write').mockImplementation((s) => ((err += String(s)), true));
  try {
    return { code: await trainMain(argv), out, err };
  } finally {
    stdout.mockRestore();
    stderr.mockRestore();
  }
}

async function runGenerate(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const io: CliIO = { stdout: { write: (s: string) => (out += s) }, stderr: { write: (s: string) => (err += s) } };
  return { code: await generateMain(argv, io), out, err };
}

describe('wuerstchen', () => {
  test.each([
    ['--version'],
    ['-v'],
    ['generate', '--version'],
    ['generate', '--prompt', 'x', '--version'],
    ['vary', '--version'],
    ['vary', '--image', 'x.png', '--version'],
  ])('%s prints the version', async (...argv) => {
    expect(await runGenerate(argv)).toEqual({ code: 0, out: expect.stringMatching(VERSION), err: '' });
  });

  test.each([
    [['--help'], /^usage: wuerstchen generate/],
    [['generate', '--help'], /^usage: wuerstchen generate/],
    [['generate', '-h'], /^usage: wuerstchen generate/],
    [['generate', '--out', 'x.png', '--help'], /^usage: wuerstchen generate/],
    [['vary', '--help'], /^usage: wuerstchen vary/],
    [['vary', '-h'], /^usage: wuerstchen vary/],
    // help wins over a problem elsewhere on the line
    [['generate', '--bogus', '--help'], /^usage: wuerstchen generate/],
  ])('%j prints the usage', async (argv, usage) => {
    expect(await runGenerate(argv)).toEqual({ code: 0, out: expect.stringMatching(usage), err: '' });
  });

  test('a --help that is the value of --prompt is not a help request', async () => {
    const r = await runGenerate(['generate', '--prompt', '--help']);
    expect(r.out).toBe('');
  });
});

describe('wuerstchen-train', () => {
  test.each([
    ['--version'],
    ['-v'],
    ['stage-a', '--version'],
    ['stage-b', '--resume', '--version'],
    ['stage-c', '--version'],
    ['make-shapes', '--version'],
    ['export', '--version'],
    ['lora', '--version'],
  ])('%s prints the version', async (...argv) => {
    expect(await runTrain(argv)).toEqual({ code: 0, out: expect.stringMatching(VERSION), err: '' });
  });

  test.each([
    [['--help'], /wuerstchen-train stage-a\|stage-b\|stage-c[\s\S]*make-shapes[\s\S]*export/],
    [['stage-a', '--help'], /^usage: wuerstchen-train stage-a\|stage-b\|stage-c/],
    [['stage-b', '-h'], /^usage: wuerstchen-train stage-a\|stage-b\|stage-c/],
    [['stage-c', '--config', 'c.json', '--help'], /^usage: wuerstchen-train stage-a\|stage-b\|stage-c/],
    [['make-shapes', '--help'], /^usage: wuerstchen-train make-shapes/],
    [['export', '-h'], /^usage: wuerstchen-train export/],
    [['lora', '--help'], /^usage: wuerstchen-train lora/],
    [['lora', '--rank', '0', '-h'], /^usage: wuerstchen-train lora/],
  ])('%j prints the usage', async (argv, usage) => {
    expect(await runTrain(argv)).toEqual({ code: 0, out: expect.stringMatching(usage), err: '' });
  });

  test('a --help that is the value of --out is not a help request', async () => {
    const r = await runTrain(['make-shapes', '--out', '--help']);
    expect(r.out).toBe('');
    expect(r.code).toBe(2);
    expect(r.err).toBe(
      'wuerstchen-train make-shapes: --out needs a value, but the next argument is the option --help ' +
        '(write --out=--help if that is the value)\nRun "wuerstchen-train make-shapes --help" for the options.\n',
    );
  });

  test('every subcommand reads its options with the same parser and the same messages', async () => {
    const cases: [string[], string][] = [
      [
        ['stage-c', '--config', 'c', '--data', 'd', '--out', 'o', '--max-steps', '1e3'],
        '--max-steps must be a positive integer, got "1e3" (decimal digits only)',
      ],
      [
        ['stage-a', '--config', 'c', '--data', 'd', '--out', 'o', '--progress', 'bar'],
        '--progress must be one of auto, plain, none, got "bar"',
      ],
      [
        ['stage-b', '--config', 'c', '--data', 'd', '--out', 'o', '--backend', 'cuda'],
        '--backend must be one of auto, tensorflow, native, wasm, cpu, got "cuda"',
      ],
      [['stage-b', '--config', 'c'], '--data, --out are required'],
      // a malformed value is reported before what is missing
      [['stage-c', '--max-steps', 'x'], '--max-steps must be a positive integer, got "x" (decimal digits only)'],
      [['make-shapes', '--n', '-3'], '--n must be a positive integer, got "-3" (decimal digits only)'],
      [
        ['make-shapes', '--out', 'o', '--n', '0x10'],
        '--n must be a positive integer, got "0x10" (decimal digits only)',
      ],
      [
        ['make-shapes', '--out', 'o', '--n', '3', '--held-out', 'some'],
        '--held-out must be one of exclude, only, any, got "some"',
      ],
      [
        ['export', '--prior', 'c', '--decoder', 'b', '--out', 'o', '--dtype', 'bf16'],
        '--dtype must be one of fp32, fp16, got "bf16"',
      ],
      [
        ['lora', '--base', 'b', '--data', 'd', '--out', 'o', '--lr', '0x1'],
        '--lr must be a number > 0, got "0x1" (decimal notation, like 0.0001 or 1e-4)',
      ],
      [['lora', '--base', 'b', '--data', 'd', '--out', 'o', '--stage', 'a'], '--stage must be one of c, b, got "a"'],
      [['export', '--prior', 'c', 'stray'], 'unexpected argument "stray" (options take the form --name value)'],
    ];
    for (const [argv, message] of cases) {
      const r = await runTrain(argv);
      expect({ argv, code: r.code, out: r.out, err: r.err }).toEqual({
        argv,
        code: 2,
        out: '',
        err: `wuerstchen-train ${argv[0]}: ${message}\nRun "wuerstchen-train ${argv[0]} --help" for the options.\n`,
      });
    }
  });
});
