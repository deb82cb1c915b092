import { OptionSpecs, ParsedOptions, UsageError, parseCommandLine } from './args';

export interface CommandIO {
  stdout: { write(s: string): unknown };
  stderr: { write(s: string): unknown; isTTY?: boolean };
}

export interface CommandSpec<A> {
  /** `wuerstchen` or `wuerstchen-train`. */
  program: string;
  /** the subcommand, e.g. `generate`. */
  command: string;
  usage: string;
  version: () => string;
  options: OptionSpecs;
  /** checks the parsed options; a problem is a UsageError. */
  read: (options: ParsedOptions) => A;
  /** runs the command; returns the exit code. */
  run: (args: A) => Promise<number> | number;
}

/**
 * Runs one subcommand of a CLI the way both CLIs do: `--help` or `--version` print on stdout and exit 0; a problem
 * with the options prints `<program> <command>: <problem>` and where to find the options, and exits 2.
 */
export async function runCommand<A>(spec: CommandSpec<A>, argv: string[], io: CommandIO): Promise<number> {
  let args: A;
  try {
    const line = parseCommandLine(argv, spec.options);
    if (line.request !== 'run') {
      io.stdout.write(line.request === 'help' ? withNewline(spec.usage) : `${spec.version()}\n`);
      return 0;
    }
    args = spec.read(line.options);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    io.stderr.write(
      `${spec.program} ${spec.command}: ${e.message}\nRun "${spec.program} ${spec.command} --help" for the options.\n`,
    );
    return 2;
  }
  return spec.run(args);
}

const withNewline = (text: string): string => (text.endsWith('\n') ? text : `${text}\n`);
