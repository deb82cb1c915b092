/** Runner for the `CLIPTextModel` cases (`clip_text_tiny_gelu`, `clip_text_tiny_quick_gelu`; golden README "CLIP text model"). */
import * as tf from '@tensorflow/tfjs';
import { CLIPTextModel, parseCLIPTextConfig } from 'wuerstchen';
import { Check, registerRunner } from '../harness';

registerRunner('CLIPTextModel', (ctx) => {
  const model = new CLIPTextModel(parseCLIPTextConfig(ctx.spec.config ?? {}, `${ctx.name}/case.json config`));
  try {
    const checks: Check[] = [];
    const numTensors = ctx.spec.num_tensors as number | undefined;
    const numParameters = ctx.spec.num_parameters as number | undefined;
    if (numTensors !== undefined) {
      const n = model.namedParameters().length;
      checks.push({ name: 'num_tensors', ok: n === numTensors, detail: `model has ${n}, case says ${numTensors}` });
    }
    if (numParameters !== undefined) {
      const n = model.numParameters();
      checks.push({
        name: 'num_parameters',
        ok: n === numParameters,
        detail: `model has ${n}, case says ${numParameters}`,
      });
    }
    if (ctx.spec.weights) model.loadStateDict(ctx.weights(), { source: ctx.file(ctx.spec.weights) });
    model.eval();
    const tensors = tf.tidy(() => {
      const ids = ctx.tensor('input_ids') as tf.Tensor2D;
      const mask = ctx.tensor('attention_mask') as tf.Tensor2D;
      const masked = model.forward(ids, mask, { outputHiddenStates: true });
      const unmasked = model.forward(ids);
      const hs = masked.hiddenStates!;
      return {
        last_hidden_state: masked.lastHiddenState,
        pooler_output: masked.poolerOutput,
        last_hidden_state_nomask: unmasked.lastHiddenState,
        pooler_output_nomask: unmasked.poolerOutput,
        hidden_states_penultimate: hs[hs.length - 2],
        embeddings: hs[0],
      };
    });
    return { tensors, checks };
  } finally {
    model.dispose();
  }
});
