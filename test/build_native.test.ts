/**
 * @wuerstchen/core's install step never fails an install: without the build tools (here: an empty
 * PATH, so neither make nor a compiler is found) it says why on stderr and exits 0.
 */
import { spawnSync } from 'child_process';
import * as path from 'path';

const SCRIPT = path.resolve(__dirname, '..', 'packages', 'core', 'scripts', 'build-native.js');

test('without build tools the addon build warns and exits 0', () => {
  const r = spawnSync(process.execPath, [SCRIPT], { encoding: 'utf8', env: { PATH: '/nonexistent' } });
  expect(r.status).toBe(0);
  expect(r.stdout).toBe('');
  expect(r.stderr).toMatch(
    /^@wuerstchen\/core: native backend not built: .+; the wasm and cpu backends are unaffected\n$/,
  );
});
