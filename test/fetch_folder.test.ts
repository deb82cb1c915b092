/**
 * Model folders read from a URL (what the browser build does), here in Node against the demo page's server
 * (examples/web/serve.js): the same loader checks and messages as on disk, failed requests naming the URL, the
 * server's roots closed to path traversal, and the path helpers that replace Node's `path` for paths and URLs.
 */
import * as http from 'http';
import * as path from 'path';
import { FetchedFolder, addFileStore, openSafetensors } from '@wuerstchen/core';
import { joinPath, memoryFile, parentPath } from '@wuerstchen/core/internal';
import { TINY_MODEL_DIR, WuerstchenCombinedPipeline } from 'wuerstchen';
import { fetchPipelineFolder, pipelineFolders } from 'wuerstchen/internal';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { startServer } = require('../examples/web/serve') as {
  startServer(port: number): Promise<{ server: http.Server; url: string }>;
};

let server: http.Server;
let base: string;

beforeAll(async () => {
  ({ server, url: base } = await startServer(0));
});

afterAll(() => server.close());

test('joinPath and parentPath behave as path.posix for paths and keep a URL origin', () => {
  for (const [a, b] of [
    ['/x/y', '../z'],
    ['x', './y//z'],
    ['/x', '../../y'],
    ['x/..', '..'],
    ['.', 'a'],
  ]) {
    expect(joinPath(a, b)).toBe(path.posix.join(a, b));
  }
  expect(parentPath('/a/b/config.json')).toBe('/a/b');
  expect(joinPath('http://h:1/m/', 'a/../b')).toBe('http://h:1/m/b');
  expect(joinPath('http://h:1/m', '../../..')).toBe('http://h:1');
});

test('fromUrl loads the bundled model with the checks fromPretrained makes on disk', async () => {
  const pipe = await WuerstchenCombinedPipeline.fromUrl(`${base}models/wuerstchen-tiny/`);
  const local = WuerstchenCombinedPipeline.fromPretrained(TINY_MODEL_DIR);
  expect(pipe.decoderPipe.geometry).toEqual(local.decoderPipe.geometry);
  expect(pipe.priorPipe.config).toEqual(local.priorPipe.config);
  expect(pipe.priorPipe.tokenizer.call(['a red circle']).inputIds).toEqual(
    local.priorPipe.tokenizer.call(['a red circle']).inputIds,
  );
});

test('a missing folder or file is an error naming the URL', async () => {
  await expect(fetchPipelineFolder(`${base}models/nothing-here`, 'WuerstchenPriorPipeline')).rejects.toThrow(
    `${base}models/nothing-here/model_index.json: HTTP 404 Not Found (expected the model_index.json of a WuerstchenPriorPipeline folder)`,
  );
  // a pipeline folder of the wrong class is refused by the loader's own check, naming the URL of its index
  const decoder = pipelineFolders(`${base}models/wuerstchen-tiny`).decoder;
  await expect(fetchPipelineFolder(decoder, 'WuerstchenPriorPipeline')).rejects.toThrow(
    `${decoder}/model_index.json: this folder holds a WuerstchenDecoderPipeline; expected WuerstchenPriorPipeline`,
  );
  expect(() => openSafetensors(`${base}models/other/diffusion_pytorch_model.safetensors`)).toThrow(
    /this URL was not fetched/,
  );
});

test('fetched safetensors get the same hostile-input checks as files on disk', async () => {
  const folder = new FetchedFolder(`${base}models/wuerstchen-tiny/wuerstchen/vqgan`);
  try {
    await folder.fetch([{ rel: 'diffusion_pytorch_model.safetensors' }]);
    const url = folder.url('diffusion_pytorch_model.safetensors');
    const onDisk = openSafetensors(path.join(pipelineFolders().decoder, 'vqgan/diffusion_pytorch_model.safetensors'));
    const fetched = openSafetensors(url);
    expect(fetched.keys()).toEqual(onDisk.keys());
    const key = onDisk.keys()[0];
    expect(fetched.get(key)).toEqual(onDisk.get(key));
    onDisk.close();
    fetched.close();
    // the same bytes cut short, in a store of our own: the header's offsets now run past the end of the data
    const short = folder.read(url).subarray(0, -1);
    const name = 'mem://short/x.safetensors';
    const remove = addFileStore({
      covers: (n) => n === name,
      kind: () => 'file',
      list: () => [],
      read: () => short,
      open: () => memoryFile(name, short),
    });
    expect(() => openSafetensors(name)).toThrow(
      new RegExp(`^${name}: tensor "[^"]+": data_offsets end \\d+ is beyond the data section`),
    );
    remove();
  } finally {
    folder.release();
  }
});

test('the server refuses paths outside its roots', async () => {
  const status = async (p: string) => (await fetch(`${base.replace(/\/$/, '')}${p}`)).status;
  expect(await status('/models/wuerstchen-tiny/wuerstchen/model_index.json')).toBe(200);
  for (const p of [
    '/package.json',
    '/serve.js',
    '/models/wuerstchen-tiny/%2e%2e/%2e%2e/package.json',
    '/models/wuerstchen-tiny/a%2F..%2F..%2Fx',
    '/tfjs-wasm/index.js',
  ]) {
    expect(await status(p)).toBe(404);
  }
});
