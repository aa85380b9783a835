// kill -9 on real processes: four validators over TLS on 127.0.0.1, each with its own key and data
// directory. One is killed with SIGKILL; the other three keep committing; it is started again with
// its key and data, syncs what it missed and commits with them; at the end every ledger holds the
// same block at every height. Every wait is for an event, with a generous deadline.
import { assert, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { startCluster } from "./support/processes.js"

const VICTIM = 2
const OTHERS = [0, 1, 3]

it.scopedLive(
  "a validator killed with SIGKILL and restarted with its data syncs and commits again; every ledger agrees",
  () =>
    Effect.gen(function* () {
      const cluster = yield* startCluster({ validators: 4 })
      const min = (among: ReadonlyArray<number>) =>
        among.map(cluster.height).reduce((a, b) => (a < b ? a : b))
      const max = (among: ReadonlyArray<number>) =>
        among.map(cluster.height).reduce((a, b) => (a > b ? a : b))

      yield* cluster.waitFor("every validator to commit", () => min([0, 1, 2, 3]) > 0n)
      yield* cluster.kill(VICTIM)
      const atKill = max(OTHERS)
      yield* cluster.waitFor(
        `the other three to commit 5 more blocks after the kill (from ${atKill})`,
        () => min(OTHERS) >= atKill + 5n
      )

      const atRestart = max(OTHERS)
      yield* cluster.start(VICTIM)
      yield* cluster.waitFor(
        `the restarted validator to reach height ${atRestart}`,
        () => cluster.height(VICTIM) >= atRestart
      )
      yield* cluster.waitFor(
        `the restarted validator to commit past ${atRestart + 5n}`,
        () => cluster.height(VICTIM) >= atRestart + 5n
      )
      const restarted = cluster.status(VICTIM)!
      assert.isAbove(restarted.synced, 0, "it fetched the blocks it missed")
      assert.isAbove(restarted.commits, 0)

      yield* cluster.stopAll
      const ledgers = yield* cluster.ledgers
      assert.strictEqual(ledgers._tag, "Agree", JSON.stringify(ledgers))
      assert.isTrue(ledgers.height >= Number(atRestart) + 5, `common prefix ${ledgers.height}`)
      for (const h of ledgers.heights) assert.isAtLeast(h, ledgers.height)
    }),
  300_000
)
