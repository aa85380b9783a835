import { defineConfig } from "vitest/config"

// Tests run on `src` through the `@hotstuff2/source` export condition: no build needed first.
export const shared = defineConfig({
  resolve: { conditions: ["@hotstuff2/source"] },
  ssr: { resolve: { conditions: ["@hotstuff2/source"] } },
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: "forks",
    sequence: { concurrent: false }
  }
})
