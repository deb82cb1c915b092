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
  ])('%s prints the version', async (...argv) => {
    expect(await runGenerate(argv)).toEqual({ code: 0, out: expect.stringMatching(VERSION), err: '' });
  });

  test.each([
    [['--help'], /^usage: wuerstchen generate/],
    [['generate', '--help'], /^usage: wuerstchen generate/],
    [['generate', '-h'], /^usage: wuerstchen generate/],
    [['generate', '--out', 'x.png', '--help'], /^usage: wuerstchen generate/],
    [['vary', '--help'], /^usage: wuerstchen vary/],
  ])('%j prints the usage', async (argv, usage) => {
    expect(await runGenerate(argv)).toEqual({ code: 0, out: expect.stringMatching(usage), err: '' });
  });

  test('a --help that is the value of --prompt is not a help request', async () => {
    const r = await runGenerate(['generate', '--prompt', '--help']);
    expect(r.out).toBe('');
  });
});

describe('wuerstchen-train', () => {
  test.each([['--version'], ['-v'], ['stage-c', '--version'], ['make-shapes', '--version'], ['export', '--version']])(
    '%s prints the version',
    async (...argv) => {
      expect(await runTrain(argv)).toEqual({ code: 0, out: expect.stringMatching(VERSION), err: '' });
    },
  );

  test.each([
    [['--help'], /wuerstchen-train stage-a\|stage-b\|stage-c[\s\S]*make-shapes[\s\S]*export/],
    [['stage-a', '--help'], /^usage: wuerstchen-train stage-a\|stage-b\|stage-c/],
    [['stage-b', '-h'], /^usage: wuerstchen-train stage-a\|stage-b\|stage-c/],
    [['stage-c', '--config', 'c.json', '--help'], /^usage: wuerstchen-train stage-a\|stage-b\|stage-c/],
    [['make-shapes', '--help'], /^usage: wuerstchen-train make-shapes/],
    [['export', '-h'], /^usage: wuerstchen-train export/],
    [['lora', '--help'], /^usage: wuerstchen-train lora/],
  ])('%j prints the usage', async (argv, usage) => {
    expect(await runTrain(argv)).toEqual({ code: 0, out: expect.stringMatching(usage), err: '' });
  });

  test('a --help that is the value of --out is not a help request', async () => {
    const r = await runTrain(['make-shapes', '--out', '--help']);
    expect(r.out).toBe('');
    expect(r.code).toBe(2);
  });
});
