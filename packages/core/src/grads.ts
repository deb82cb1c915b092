/**
 * `tf.variableGrads` with the memory profile of PyTorch's autograd. tfjs keeps every tape node's saved tensors
 * and every intermediate gradient until the whole backward pass ends, so a training step peaks at the forward
 * activations plus all the gradients ever computed. This walks the same tape in the same order, with the same
 * gradient functions and the same accumulation (results are identical), but frees a node's saved tensors and the
 * gradients of its outputs as soon as the node has been differentiated.
 */
import * as tf from '@tensorflow/tfjs';

/** A node of tfjs's gradient tape (tfjs-core tape.ts), as the engine records it. */
interface TapeNode {
  id: number;
  kernelName: string;
  inputs: Record<string, tf.Tensor>;
  outputs: tf.Tensor[];
  saved?: tf.Tensor[];
  gradient?: (dys: (tf.Tensor | null)[]) => Record<string, () => tf.Tensor>;
}

/** The parts of tfjs's Engine this needs (public fields of its class, not of its typings). */
interface EngineInternals {
  state: { activeTape: TapeNode[] | null; gradientDepth: number };
  startTape(): void;
  endTape(): void;
  scopedRun<T>(start: () => void, end: () => void, f: () => T): T;
  tidy<T extends tf.TensorContainer>(name: string | (() => T), f?: () => T): T;
}

/** The nodes on a path from `xs` to `y`, each with only its inputs that depend on `xs` (tfjs's getFilteredNodesXToY). */
function nodesFromXsToY(tape: TapeNode[], xs: tf.Tensor[], y: tf.Tensor): TapeNode[] {
  const fromX = new Set(xs.map((x) => x.id));
  const nodesFromX = new Set<number>();
  for (const node of tape) {
    if (Object.values(node.inputs).some((t) => fromX.has(t.id))) {
      node.outputs.forEach((o) => fromX.add(o.id));
      nodesFromX.add(node.id);
    }
  }
  const toY = new Set([y.id]);
  const nodesToY = new Set<number>();
  for (let i = tape.length - 1; i >= 0; i--) {
    const node = tape[i];
    if (node.outputs.some((o) => toY.has(o.id))) {
      Object.values(node.inputs).forEach((t) => toY.add(t.id));
      nodesToY.add(node.id);
    }
  }
  return tape
    .filter((node) => nodesFromX.has(node.id) && nodesToY.has(node.id))
    .map((node) => ({
      ...node,
      inputs: Object.fromEntries(Object.entries(node.inputs).filter(([, t]) => fromX.has(t.id))),
    }));
}

/**
 * Gradients of the scalar `f()` with respect to the trainable `vars`, keyed by variable name, like
 * `tf.variableGrads(f, vars)`. Inside another gradient computation (a higher-order gradient) it is
 * `tf.variableGrads` itself.
 */
export function variableGrads(f: () => tf.Scalar, vars: tf.Variable[]): { value: tf.Scalar; grads: tf.NamedTensorMap } {
  const engine = tf.engine() as unknown as EngineInternals;
  if (engine.state.gradientDepth > 0) return tf.variableGrads(f, vars);
  const xs = vars.filter((v) => v.trainable);
  if (xs.length === 0) throw new Error(`variableGrads: none of the ${vars.length} variables is trainable`);
  const y = engine.scopedRun(
    () => engine.startTape(),
    () => engine.endTape(),
    () => engine.tidy('forward', f),
  );
  if (!(y instanceof tf.Tensor) || y.rank !== 0) {
    tf.dispose(y);
    throw new Error(
      `variableGrads: f must return a scalar tensor, not ${y instanceof tf.Tensor ? `rank ${y.rank}` : typeof y}`,
    );
  }
  const tape = engine.state.activeTape ?? [];
  try {
    const grads = engine.tidy('backward', () => backpropagate(nodesFromXsToY(tape, xs, y), xs, y));
    if (grads.every((g) => g === undefined)) {
      y.dispose();
      throw new Error('variableGrads: no variable leads to the value of f (are their ops inside f?)');
    }
    const named: tf.NamedTensorMap = {};
    xs.forEach((v, i) => {
      if (grads[i]) named[v.name] = grads[i];
    });
    return { value: y as tf.Scalar, grads: named };
  } finally {
    for (const node of tape) node.saved?.forEach((t) => t.dispose());
    engine.state.activeTape = null;
  }
}

/** tfjs's backpropagateGradients, plus the frees: returns the gradient of each of `xs` (undefined if none). */
function backpropagate(nodes: TapeNode[], xs: tf.Tensor[], y: tf.Tensor): (tf.Tensor | undefined)[] {
  const engine = tf.engine() as unknown as EngineInternals;
  const wanted = new Set(xs.map((x) => x.id));
  const grad = new Map<number, tf.Tensor>([[y.id, tf.onesLike(y)]]);
  for (let i = nodes.length - 1; i >= 0; i--) {
    const node = nodes[i];
    if (!node.gradient) throw new Error(`variableGrads: no gradient is registered for the kernel ${node.kernelName}`);
    const inputGrads = node.gradient(node.outputs.map((o) => grad.get(o.id) ?? null));
    for (const [name, x] of Object.entries(node.inputs)) {
      if (!(name in inputGrads))
        throw new Error(`variableGrads: the gradient of ${node.kernelName} has no input ${name}`);
      const dx = engine.tidy(() => inputGrads[name]());
      if (dx.dtype !== 'float32' || !tf.util.arraysEqual(dx.shape, x.shape)) {
        throw new Error(
          `variableGrads: the gradient of ${node.kernelName} for ${name} is ${dx.dtype} [${dx.shape}], expected float32 [${x.shape}]`,
        );
      }
      const sum = grad.get(x.id);
      if (sum === undefined) {
        grad.set(x.id, dx);
      } else {
        grad.set(x.id, tf.add(sum, dx));
        sum.dispose();
      }
    }
    // This node was the only producer of its outputs, so their gradients are complete and now used, unless a
    // gradient function handed one through unchanged as an input's gradient.
    const handedOn = new Set(Object.values(node.inputs).map((x) => grad.get(x.id)));
    for (const o of node.outputs) {
      const g = grad.get(o.id);
      if (g === undefined || wanted.has(o.id)) continue;
      if (!handedOn.has(g)) g.dispose();
      grad.delete(o.id);
    }
    node.saved?.forEach((t) => t.dispose());
  }
  return xs.map((x) => grad.get(x.id));
}
