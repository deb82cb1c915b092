/** Writing LoRA files (Node only; the layout is described in lora.ts). */
import * as fs from 'fs';
import * as path from 'path';
import { HostTensor, LoraNetwork, writeSafetensors } from '@wuerstchen/core';
import { LORA_ADAPTER_METADATA_KEY, LoraComponent, loraConfigOf } from './lora';

/**
 * Write `net` (adapters on the `component` network) as diffusers' `save_lora_weights(unet_lora_layers=…)`
 * does for the prior.
 */
export function saveLoraFile(file: string, net: LoraNetwork, component: LoraComponent): void {
  const tensors = new Map<string, HostTensor>([...net.stateDict()].map(([k, t]) => [`${component}.${k}`, t]));
  const config = Object.fromEntries(Object.entries(loraConfigOf(net)).map(([k, v]) => [`${component}.${k}`, v]));
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  writeSafetensors(file, tensors, { format: 'pt', [LORA_ADAPTER_METADATA_KEY]: sortedJson(config) });
}

function sortedJson(v: Record<string, unknown>): string {
  return JSON.stringify(
    Object.fromEntries(
      Object.keys(v)
        .sort()
        .map((k) => [k, v[k]]),
    ),
    null,
    2,
  );
}
