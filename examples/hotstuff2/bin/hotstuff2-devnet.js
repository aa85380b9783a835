#!/usr/bin/env node
// The reference app's devnet (src/devnet/main.ts); `npm run build` (or `npx tsc -b` in
// examples/hotstuff2) first. `npm start` at the root builds and runs it.
import "../dist/src/devnet/main.js"
