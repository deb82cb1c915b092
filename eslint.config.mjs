// ESLint for the TypeScript sources, tests and the plain-JS scripts (bins, bench, scripts).
// Formatting is prettier's job, so eslint-config-prettier switches off the stylistic rules.
import js from '@eslint/js';
import prettier from 'eslint-config-prettier';
import { defineConfig } from 'eslint/config';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default defineConfig(
  {
    ignores: [
      '**/dist/',
      '**/node_modules/',
      '**/native/build/',
      'runs/',
      'tmp/',
      'bench/results/',
      'packages/wuerstchen/models/',
    ],
  },
  js.configs.recommended,
  tseslint.configs.recommended,
  {
    languageOptions: { globals: globals.node },
    rules: {
      // `_name` marks a parameter a signature needs but the body does not use.
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' },
      ],
      '@typescript-eslint/no-require-imports': ['error', { allowAsImport: true }],
      // Matching control characters is the point where it happens (tar names, terminal escapes).
      'no-control-regex': 'off',
    },
  },
  {
    // A pipeline is a callable object: a class merged with an interface that carries its call signature.
    files: ['packages/wuerstchen/src/pipelines/*.ts'],
    rules: { '@typescript-eslint/no-unsafe-declaration-merging': 'off' },
  },
  {
    files: ['**/*.js'],
    // The scripts and bins are CommonJS and load the built packages with require().
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  {
    files: ['test/**/*.ts'],
    languageOptions: { globals: globals.jest },
    // Tests read raw JSON headers and fixtures whose shape is the thing under test.
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
  prettier,
);
