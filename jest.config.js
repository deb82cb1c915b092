/**
 * Jest runs the TypeScript sources directly (ts-jest); workspace imports map to src/. Two projects:
 * `fast` (unit and golden tests, `npm run test:fast`) and `slow` (the tests listed in SLOW, which
 * train, generate images, install packages or drive a browser). `npm test` runs both.
 */

/** test/<name>.test.ts files that belong to the slow project; any other test is fast. */
const SLOW = [
  'cli',
  'export',
  'lora',
  'pack_install',
  'pipeline',
  'tiny_model',
  'train_resume',
  'train_stage_a',
  'train_stage_b',
  'train_stage_c',
  'variation',
  'web',
];

const base = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: '<rootDir>/tsconfig.json', isolatedModules: true }] },
  moduleNameMapper: {
    '^@wuerstchen/core$': '<rootDir>/packages/core/src/index.ts',
    '^@wuerstchen/core/cli$': '<rootDir>/packages/core/src/cli/index.ts',
    '^@wuerstchen/core/internal$': '<rootDir>/packages/core/src/internal.ts',
    '^wuerstchen$': '<rootDir>/packages/wuerstchen/src/index.ts',
    '^wuerstchen/internal$': '<rootDir>/packages/wuerstchen/src/internal.ts',
    '^@wuerstchen/train$': '<rootDir>/packages/train/src/index.ts',
    '^@wuerstchen/train/internal$': '<rootDir>/packages/train/src/internal.ts',
  },
};

const slowFiles = SLOW.map((name) => `<rootDir>/test/${name}.test.ts`);

module.exports = {
  testTimeout: 300000,
  projects: [
    {
      ...base,
      displayName: 'fast',
      testMatch: ['**/*.test.ts'],
      testPathIgnorePatterns: ['/node_modules/', ...slowFiles],
    },
    { ...base, displayName: 'slow', testMatch: slowFiles },
  ],
};
