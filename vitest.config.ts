import { defineConfig } from 'vitest/config';

export default defineConfig({
  resolve: { conditions: ['@rjob/source'] },
  ssr: { resolve: { conditions: ['@rjob/source'] } },
  test: {
    include: [
      'packages/*/src/**/*.test.ts',
      'apps/*/src/**/*.test.ts',
      'examples/*/**/*.test.ts',
      'e2e/**/*.test.ts',
    ],
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default'],
  },
});
