/**
 * Where model files are read from, in Node and in a browser alike. A file is named by a path (Node: read from disk)
 * or by a URL under a folder fetched beforehand with {@link fetchFiles} (browser and Node: held in memory). The
 * loaders call {@link fileStore} and never touch `fs` or `fetch` themselves, so the same loading code runs in both.
 */

/** Random access to the bytes of one file, so a large checkpoint is read tensor by tensor. */
export interface RandomAccessFile {
  readonly size: number;
  /** Fills `target` with the bytes at `position`; a short file is an error naming it. */
  read(target: Uint8Array, position: number): void;
  /** Idempotent. */
  close(): void;
}

/** Read access to the files under some root (a disk, or one fetched URL folder). Names are full paths or URLs. */
export interface FileStore {
  /** true for the names this store answers for. */
  covers(name: string): boolean;
  /** 'file', 'folder', or undefined when there is nothing at `name`. */
  kind(name: string): 'file' | 'folder' | undefined;
  /** Entry names (not paths) of a folder. */
  list(dir: string): string[];
  /** The whole file; an error names it and says what it is when it is missing or not a regular file. */
  read(file: string): Uint8Array;
  open(file: string): RandomAccessFile;
  /** Writes a whole file, creating its folder; only the disk writes. */
  write?(file: string, data: Uint8Array): void;
}

/** A file that is missing, or is not a regular file; names it and says what it is. */
export class NotRegularFileError extends Error {
  constructor(
    readonly file: string,
    readonly detail: string,
  ) {
    super(`${file}: ${detail}`);
    this.name = 'NotRegularFileError';
  }
}

const stores: FileStore[] = [];

/** Makes `store` answer for the names it covers; the newest store wins. Returns a function that removes it again. */
export function addFileStore(store: FileStore): () => void {
  stores.unshift(store);
  return () => {
    const i = stores.indexOf(store);
    if (i >= 0) stores.splice(i, 1);
  };
}

/** The store holding `name`; an error names it when nothing covers it (a URL not fetched, a path in a browser). */
export function fileStore(name: string): FileStore {
  const store = stores.find((s) => s.covers(name));
  if (store !== undefined) return store;
  const why = isUrl(name)
    ? 'this URL was not fetched (load a URL folder with fromUrl / fetchFiles first)'
    : 'files on disk can only be read in Node.js (in a browser, load the folder from a URL with fromUrl)';
  throw new NotRegularFileError(name, why);
}

/** The whole content of `file` as UTF-8 text. */
export function readTextFile(file: string): string {
  return new TextDecoder().decode(fileStore(file).read(file));
}

/** Writes `text` as UTF-8 to `file`, creating its folder (Node: on disk; a URL cannot be written). */
export function writeTextFile(file: string, text: string): void {
  const store = fileStore(file);
  if (store.write === undefined) throw new NotRegularFileError(file, 'cannot be written (only files on disk can)');
  store.write(file, new TextEncoder().encode(text));
}

export function isUrl(name: string): boolean {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(name);
}

/**
 * `base/part/...` with `.` and `..` resolved and duplicate slashes removed, like Node's `path.posix.join` but without
 * a trailing slash; for a URL only the part after the origin is normalised, and `..` never climbs above it.
 */
export function joinPath(base: string, ...parts: string[]): string {
  const origin = isUrl(base) ? /^[a-z][a-z0-9+.-]*:\/\/[^/]*/i.exec(base)![0] : '';
  const rest = [base.slice(origin.length), ...parts].filter((p) => p !== '').join('/');
  const absolute = origin !== '' || rest.startsWith('/');
  const out: string[] = [];
  for (const part of rest.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..' && out.length > 0 && out[out.length - 1] !== '..') out.pop();
    else if (part !== '..' || !absolute) out.push(part);
  }
  const joined = (absolute ? '/' : '') + out.join('/');
  return origin + (joined === '' ? '.' : joined === '/' && origin !== '' ? '' : joined);
}

/** The folder holding `name` (`path.dirname` for paths and URLs). */
export function parentPath(name: string): string {
  return joinPath(name, '..');
}

/** The last part of `name` (`path.basename`). */
export function baseName(name: string): string {
  const parts = name.split('/').filter((p) => p !== '');
  return parts[parts.length - 1] ?? '';
}

// ---------------------------------------------------------------------------------------------------------------
// Files fetched from a URL folder

/** A file of a URL folder to fetch: its path relative to the folder; `optional` files may be missing (HTTP 404). */
export interface FetchRequest {
  rel: string;
  optional?: boolean;
  /** what the file should be, for the error when it is missing. */
  what?: string;
}

/** The bytes of files fetched from one URL folder, kept in memory (the pipelines read weights again after freeing them). */
export class FetchedFolder implements FileStore {
  private readonly files = new Map<string, Uint8Array>();
  private readonly missing = new Set<string>();
  private readonly remove: () => void;

  /** `baseUrl` may be relative to the page (in a browser). */
  constructor(readonly baseUrl: string) {
    this.baseUrl = joinPath(new URL(baseUrl, (globalThis as { location?: { href: string } }).location?.href).href);
    this.remove = addFileStore(this);
  }

  /** Fetches the files (in parallel) that are not held yet; a failed request names the URL and what was expected. */
  async fetch(requests: FetchRequest[]): Promise<void> {
    const todo = requests.filter(({ rel }) => !this.files.has(this.url(rel)) && !this.missing.has(this.url(rel)));
    await Promise.all(todo.map((request) => this.fetchOne(request)));
  }

  /** Forgets the fetched bytes; names under the folder are no longer covered. */
  release(): void {
    this.files.clear();
    this.remove();
  }

  url(rel: string): string {
    return joinPath(this.baseUrl, rel);
  }

  covers(name: string): boolean {
    const url = joinPath(name);
    return url === this.baseUrl || url.startsWith(`${this.baseUrl}/`);
  }

  kind(name: string): 'file' | 'folder' | undefined {
    const url = joinPath(name);
    if (this.files.has(url)) return 'file';
    if (url === this.baseUrl) return 'folder';
    return [...this.files.keys()].some((f) => f.startsWith(`${url}/`)) ? 'folder' : undefined;
  }

  list(dir: string): string[] {
    const prefix = `${joinPath(dir)}/`;
    const names = [...this.files.keys()]
      .filter((f) => f.startsWith(prefix))
      .map((f) => f.slice(prefix.length).split('/')[0]);
    return [...new Set(names)];
  }

  read(file: string): Uint8Array {
    const bytes = this.files.get(joinPath(file));
    if (bytes === undefined)
      throw new NotRegularFileError(
        file,
        this.kind(file) === 'folder' ? 'is a folder, not a file' : 'no such file (not fetched)',
      );
    return bytes;
  }

  open(file: string): RandomAccessFile {
    return memoryFile(file, this.read(file));
  }

  private async fetchOne({ rel, optional, what }: FetchRequest): Promise<void> {
    const url = this.url(rel);
    let response: Response;
    try {
      response = await fetch(url);
    } catch (err) {
      throw new NotRegularFileError(
        url,
        `could not be fetched (${(err as Error).message})${what ? `; expected ${what}` : ''}`,
      );
    }
    if (response.status === 404 && optional) {
      this.missing.add(url);
      return;
    }
    if (!response.ok)
      throw new NotRegularFileError(
        url,
        `HTTP ${response.status} ${response.statusText}${what ? ` (expected ${what})` : ''}`.trimEnd(),
      );
    this.files.set(url, new Uint8Array(await response.arrayBuffer()));
  }
}

/** Random access to bytes already in memory. */
export function memoryFile(name: string, bytes: Uint8Array): RandomAccessFile {
  return {
    size: bytes.length,
    read(target, position) {
      if (position + target.length > bytes.length)
        throw new NotRegularFileError(name, `unexpected end of file at byte ${bytes.length}`);
      target.set(bytes.subarray(position, position + target.length));
    },
    close() {},
  };
}
