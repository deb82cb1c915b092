/** The harness with every runner registered. */
import './runners/blocks';
import './runners/models';
import './runners/clip';
import './runners/scheduler';
import './runners/checkpoints';
export * from './harness';
