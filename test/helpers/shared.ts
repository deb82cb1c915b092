import * as path from 'path';

/** The read-only shared folder beside the clone (override with WUERSTCHEN_SHARED). */
export const SHARED = process.env.WUERSTCHEN_SHARED ?? path.resolve(__dirname, '../../../shared');
export const GOLDEN = path.join(SHARED, 'golden');
