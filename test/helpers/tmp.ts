import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

/**
 * Gives each test a fresh directory under os.tmpdir(), removed after the test.
 * Call at file or describe level; the returned function is valid inside tests only.
 */
export function useTempDir(prefix = 'wuerstchen-test-'): () => string {
  let dir: string | undefined;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  });
  afterEach(() => {
    if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });
  return () => {
    if (dir === undefined) throw new Error('useTempDir: the directory exists only while a test runs');
    return dir;
  };
}
