/**
 * `@wuerstchen/core/cli`: what the two command lines share (argument parser, progress display, version). Node
 * only, and kept off the package's main entry so that browser builds never reach it.
 */
export type { CommandLine, OptionSpec, OptionSpecs } from './args';
export {
  ParsedOptions,
  UsageError,
  looksLikeOption,
  parseCommandLine,
  parseDecimal,
  readChoice,
  readInteger,
  readNumber,
} from './args';
export type { ProgressMode, ProgressOptions, ProgressStream } from './progress';
export { PROGRESS_MODES, ProgressBar, formatDuration, formatRate } from './progress';
export { packageVersion } from './version';
export type { CommandIO, CommandSpec } from './command';
export { runCommand } from './command';
