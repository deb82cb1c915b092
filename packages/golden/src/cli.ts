/** `npm run golden -- <folder> [--filter <substring>] [--backend <name>]`: run a golden folder, exit 1 on any failure. */
import { useBackend } from '@wuerstchen/core';
import { runGolden } from './index';

async function main(argv: string[]): Promise<number> {
  const args = [...argv];
  let filter: string | undefined;
  let backend: string | undefined;
  const positional: string[] = [];
  while (args.length) {
    const a = args.shift()!;
    if (a === '--filter') filter = args.shift();
    else if (a === '--backend') backend = args.shift();
    else positional.push(a);
  }
  if (positional.length !== 1) {
    process.stderr.write(
      'usage: npm run golden -- <golden folder> [--filter <substring>] [--backend auto|native|wasm|cpu]\n',
    );
    return 2;
  }
  await useBackend(backend);
  const reports = await runGolden(positional[0], { filter });
  return reports.every((r) => r.passed) ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`golden: ${(e as Error).message}\n`);
    process.exit(2);
  },
);
