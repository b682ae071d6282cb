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
    // The bins' code cache goes to a temporary cache home, not ~/.cache (scripts/test-cache-home.ts).
    globalSetup: ['scripts/test-cache-home.ts'],
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default'],
  },
});
