/** Jest runs the TypeScript sources directly (ts-jest); workspace imports map to src/. */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: '<rootDir>/tsconfig.json', isolatedModules: true }] },
  moduleNameMapper: {
    '^@wuerstchen/core$': '<rootDir>/packages/core/src/index.ts',
    '^wuerstchen$': '<rootDir>/packages/wuerstchen/src/index.ts',
    '^@wuerstchen/train$': '<rootDir>/packages/train/src/index.ts',
  },
  testTimeout: 300000,
};
