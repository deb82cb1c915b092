/**
 * Writing image files (Node only): atomic writes, and removal of unfinished temporary files when the
 * process is interrupted. Also re-exports the image conversions of images.ts.
 */
import * as fs from 'fs';
import * as path from 'path';

export * from './images';

/** Temporary files being written now; an interrupted process removes them with {@link removeTempFiles}. */
const liveTempFiles = new Set<string>();

/** Registers a temporary file for removal on interruption; call the returned function once it is gone or renamed. */
export function registerTempFile(file: string): () => void {
  liveTempFiles.add(file);
  return () => liveTempFiles.delete(file);
}

/** Removes every registered temporary file (from SIGINT / SIGTERM handlers). */
export function removeTempFiles(): void {
  for (const file of liveTempFiles) fs.rmSync(file, { force: true });
  liveTempFiles.clear();
}

/**
 * Writes a file atomically: the bytes go to a temporary file in the same folder, are fsynced,
 * and the temporary file is renamed over `file`; a reader never sees a partial file.
 */
export function writeFileAtomic(file: string, data: Uint8Array): void {
  const dir = path.dirname(path.resolve(file));
  const temp = path.join(dir, `.${path.basename(file)}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 10)}`);
  let fd: number | undefined = fs.openSync(temp, 'wx');
  const unregister = registerTempFile(temp);
  try {
    for (let done = 0; done < data.length;) done += fs.writeSync(fd, data, done, data.length - done);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(temp, file);
  } catch (e) {
    if (fd !== undefined) fs.closeSync(fd);
    fs.rmSync(temp, { force: true });
    throw e;
  } finally {
    unregister();
  }
}
