/** The harness with every runner registered. */
import './runners/blocks';
import './runners/models';
import './runners/clip';
import './runners/tokenizer';
import './runners/vqgan';
import './runners/effnet';
import './runners/scheduler';
import './runners/checkpoints';
import './runners/pipeline';
export * from './harness';
