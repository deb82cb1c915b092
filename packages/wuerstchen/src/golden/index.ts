/** The harness with every runner registered. */
import './runners/blocks';
import './runners/models';
export * from './harness';
