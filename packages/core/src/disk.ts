/**
 * The {@link FileStore} of the local disk (Node only): every name that is not a URL is a path. Importing this module
 * installs it; the Node entry points do, browser bundles do not.
 */
import * as fs from 'fs';
import * as path from 'path';
import { FileStore, NotRegularFileError, RandomAccessFile, addFileStore, isUrl } from './files';
import { openRegularFile, readRegularFile } from './regular_file';

/** Largest single read handed to fs (keeps well below the 2 GiB per-call limit). */
const IO_CHUNK_BYTES = 64 * 1024 * 1024;

export const diskStore: FileStore = {
  covers: (name) => !isUrl(name),
  kind(name) {
    const stat = fs.statSync(name, { throwIfNoEntry: false });
    if (stat === undefined) return undefined;
    return stat.isDirectory() ? 'folder' : 'file';
  },
  list: (dir) => fs.readdirSync(dir),
  read: (file) => readRegularFile(file),
  open: openDiskFile,
  write(file, data) {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, data);
  },
};

/** A regular file opened for reads by offset; a file that ends early is an error, not a hang. */
export function openDiskFile(file: string): RandomAccessFile {
  let fd: number | undefined = openRegularFile(file);
  const size = fs.fstatSync(fd).size;
  return {
    size,
    read(target, position) {
      if (fd === undefined) throw new NotRegularFileError(file, 'file is closed');
      for (let done = 0; done < target.length;) {
        const n = fs.readSync(fd, target, done, Math.min(target.length - done, IO_CHUNK_BYTES), position + done);
        if (n === 0) throw new NotRegularFileError(file, `unexpected end of file at byte ${position + done}`);
        done += n;
      }
    },
    close() {
      if (fd !== undefined) fs.closeSync(fd);
      fd = undefined;
    },
  };
}

addFileStore(diskStore);
