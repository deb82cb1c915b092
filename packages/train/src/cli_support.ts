/** What the training subcommands share: common options, stopping at a signal with a checkpoint, one-line errors. */
import { BACKENDS, BackendUnavailableError, UnknownBackendError } from '@wuerstchen/core';
import { CommandIO, PROGRESS_MODES, ParsedOptions, ProgressMode, readChoice, readInteger } from '@wuerstchen/core/cli';
import { removeTempFiles } from './checkpoint';

/** `--progress` (default auto). */
export function readProgressMode(o: ParsedOptions): ProgressMode {
  return o.has('progress') ? readChoice('--progress', o.string('progress')!, PROGRESS_MODES) : 'auto';
}

/** `--backend`, if given. */
export function readBackend(o: ParsedOptions): string | undefined {
  return o.has('backend') ? readChoice('--backend', o.string('backend')!, BACKENDS) : undefined;
}

/** `--max-steps`, if given. */
export function readMaxSteps(o: ParsedOptions): number | undefined {
  return o.has('max-steps') ? readInteger('--max-steps', o.string('max-steps')!, 1) : undefined;
}

type StopSignal = 'SIGINT' | 'SIGTERM';

/** The shell's convention: 128 + the signal number. */
const exitCodeFor = (sig: StopSignal): number => (sig === 'SIGINT' ? 130 : 143);

/**
 * SIGINT / SIGTERM during training: the first asks the trainer to finish its step and write a checkpoint; a second
 * gives up at once, leaving the last complete checkpoint. The handlers are ours only between watch() and release().
 */
export class SignalStopper {
  private signal: StopSignal | undefined;
  private readonly handlers: [StopSignal, () => void][] = [];

  constructor(
    private readonly program: string,
    private readonly out: string,
    private readonly io: CommandIO,
  ) {}

  watch(trainer: { requestStop(): void }): void {
    for (const sig of ['SIGINT', 'SIGTERM'] as const) {
      const handler = () => {
        if (this.signal) {
          removeTempFiles(this.out);
          process.exit(exitCodeFor(sig));
        }
        this.signal = sig;
        this.io.stderr.write(
          `\n${this.program}: ${sig}: finishing the current step and writing a checkpoint (again to abort)\n`,
        );
        trainer.requestStop();
      };
      process.on(sig, handler);
      this.handlers.push([sig, handler]);
    }
  }

  /** 0, or 130 / 143 after SIGINT / SIGTERM. */
  exitCode(): number {
    return this.signal ? exitCodeFor(this.signal) : 0;
  }

  release(): void {
    for (const [sig, handler] of this.handlers.splice(0)) process.off(sig, handler);
  }
}

/** One line for the user; the stack only with WUERSTCHEN_DEBUG set (as the `wuerstchen` CLI does). */
export function errorLine(e: unknown): string {
  const err = e instanceof Error ? e : new Error(String(e));
  if (process.env.WUERSTCHEN_DEBUG) return err.stack ?? err.message;
  return err.message.split('\n')[0];
}

/** A backend that is unknown or cannot start here: an argument problem (exit code 2), not a failure. */
export function isBackendError(e: unknown): boolean {
  return e instanceof UnknownBackendError || e instanceof BackendUnavailableError;
}
