import * as fs from 'fs';
import * as path from 'path';

/** The `version` of the package in `packageDir` (its package.json sits next to dist/ and src/ alike). */
export function packageVersion(packageDir: string): string {
  return (JSON.parse(fs.readFileSync(path.join(packageDir, 'package.json'), 'utf8')) as { version: string }).version;
}
