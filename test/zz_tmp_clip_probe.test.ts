import * as path from 'path';
import { runGolden } from '../packages/wuerstchen/src/golden/harness';
import '../packages/wuerstchen/src/golden/runners/clip';
test('x', async () => { const t=Date.now(); await runGolden('/work/shared/golden', { filter: 'clip_text', log: (l) => process.stdout.write(l + '\n') }); process.stdout.write(`${Date.now()-t}ms\n`); });
