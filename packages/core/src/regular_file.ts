/**
 * Opening files named by users and by model folders. Symbolic links are followed (the Hugging Face cache links
 * every file of a snapshot folder to a shared blob store), but only regular files are opened: opening a FIFO blocks
 * until a writer appears, and reading a device may never end.
 */
import * as fs from 'fs';
import { NotRegularFileError } from './files';

export { NotRegularFileError };

function kindOf(stat: fs.Stats): string {
  if (stat.isDirectory()) return 'a folder';
  if (stat.isFIFO()) return 'a FIFO';
  if (stat.isSocket()) return 'a socket';
  if (stat.isCharacterDevice() || stat.isBlockDevice()) return 'a device';
  return 'an unknown kind of file';
}

/** Opens `file` read-only after checking that it (or what its link points to) is a regular file; returns the fd. */
export function openRegularFile(file: string): number {
  const stat = fs.statSync(file, { throwIfNoEntry: false });
  if (stat === undefined) throw new NotRegularFileError(file, 'no such file');
  if (!stat.isFile()) throw new NotRegularFileError(file, `is ${kindOf(stat)}, not a regular file`);
  // O_NONBLOCK: should the path be swapped for a FIFO after the stat, the open still returns at once.
  const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const opened = fs.fstatSync(fd);
  if (!opened.isFile()) {
    fs.closeSync(fd);
    throw new NotRegularFileError(file, `is ${kindOf(opened)}, not a regular file`);
  }
  return fd;
}

/** The whole content of a regular file. */
export function readRegularFile(file: string): Buffer {
  const fd = openRegularFile(file);
  try {
    return fs.readFileSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** The whole content of a regular file as UTF-8 text. */
export function readRegularTextFile(file: string): string {
  return readRegularFile(file).toString('utf8');
}
