#!/usr/bin/env node
// The hotstuff2-net CLI; run `npm run build` (or `npx tsc -b` in packages/node) first.
import "../dist/src/cli/main.js"
