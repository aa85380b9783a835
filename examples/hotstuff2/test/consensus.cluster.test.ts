// HotStuff-2 on NodeNetwork under TestClock (TestCluster: the real layer over the simulated network).
// Every scenario checks safety over every ledger at its end: no two different blocks at one height.
// The fault scenarios run over HOTSTUFF2_SEEDS seeds (default 20); the seed is in each test's name.
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as TestClock from "effect/TestClock"
import { validatorOrder } from "../src/Validator.js"
import * as ConsensusCluster from "./support/cluster.js"

const SEEDS = Array.from({ length: Number(process.env.HOTSTUFF2_SEEDS ?? 20) }, (_, i) => i + 1)
const link = { latency: 5, jitter: 2 }
const validator = { baseTimeout: 400, maxTimeout: 4_000, payloadBytes: 64 }

/** The cluster index of the leader of `view`. */
const leaderOf = (c: ConsensusCluster.ConsensusCluster, view: bigint): number => {
  const ids = c.cluster.validators.map((v) => v.identity.peerId)
  const order = validatorOrder(ids)
  return ids.indexOf(order[Number(view % BigInt(order.length))]!)
}

const higherBy = (c: ConsensusCluster.ConsensusCluster, among: ReadonlyArray<number>, by: bigint) =>
  Effect.map(c.minHeight(among), (start) => c.minHeight(among).pipe(Effect.map((h) => h >= start + by)))

const all = (n: number) => Array.from({ length: n }, (_, i) => i)

describe("HotStuff-2 on TestCluster", () => {
  for (const size of [4, 7]) {
    it.scoped(`${size} validators commit`, () =>
      Effect.gen(function* () {
        const c = yield* ConsensusCluster.make({ size, seed: 1, link, validator })
        // The first view may time out while the connections form; after that, no view does.
        yield* c.until(
          "5 blocks committed everywhere",
          Effect.map(c.minHeight(), (h) => h >= 5n),
          20_000
        )
        const early = yield* Effect.forEach(all(size), (i) => Effect.map(c.status(i), (s) => s.timeouts))
        yield* c.until(
          "20 blocks committed everywhere",
          Effect.map(c.minHeight(), (h) => h >= 20n),
          20_000
        )
        const { common } = yield* c.checkSafety
        expect(common).toBeGreaterThanOrEqual(20n)
        for (const i of all(size)) expect((yield* c.status(i)).timeouts).toBe(early[i])
      })
    )
  }

  it.scoped(
    "100 validators commit at least 10 blocks",
    () =>
      Effect.gen(function* () {
        // Links without jitter: deliveries share instants, which keeps 100 nodes under TestClock quick.
        const c = yield* ConsensusCluster.make({
          size: 100,
          seed: 1,
          link: { latency: 5 },
          validator: { ...validator, baseTimeout: 2_000 }
        })
        yield* c.until(
          "10 blocks committed everywhere",
          Effect.map(c.minHeight(), (h) => h >= 10n),
          60_000
        )
        expect((yield* c.checkSafety).common).toBeGreaterThanOrEqual(10n)
      }),
    240_000
  )

  it.scoped(
    "a validator restarted after missing 50 blocks catches up through block sync",
    () =>
      Effect.gen(function* () {
        // Answers of at most 16 blocks: catching up takes several, each continuing the one before.
        const c = yield* ConsensusCluster.make({
          size: 4,
          seed: 3,
          link,
          // Each time the stopped validator would lead, two views time out (its own, and the one
          // before, whose votes go to it): a short view timer keeps the 50 blocks quick.
          validator: { ...validator, baseTimeout: 100, sync: { maxBlocks: 16 } }
        })
        yield* c.until(
          "5 blocks",
          Effect.map(c.minHeight(), (h) => h >= 5n),
          20_000
        )
        yield* c.stop(3)
        const before = yield* c.minHeight([0, 1, 2])
        yield* c.until(
          "50 blocks more without it",
          Effect.map(c.minHeight([0, 1, 2]), (h) => h >= before + 50n),
          60_000
        )
        yield* c.start(3)
        const target = yield* c.minHeight([0, 1, 2])
        yield* c.until(
          "the restarted validator catches up",
          Effect.map(c.minHeight([3]), (h) => h >= target),
          60_000
        )
        const status = yield* c.status(3)
        expect(status.synced).toBeGreaterThanOrEqual(45)
        yield* c.until(
          "and commits again",
          Effect.map(c.minHeight([3]), (h) => h >= target + 5n),
          20_000
        )
        yield* c.checkSafety
      }),
    120_000
  )

  describe("faults, over seeds", () => {
    for (const seed of SEEDS) {
      it.scoped(`seed ${seed}: the leader crashes and progress resumes after a timeout`, () =>
        Effect.gen(function* () {
          const c = yield* ConsensusCluster.make({ size: 4, seed, link, validator })
          yield* c.until(
            "3 blocks",
            Effect.map(c.minHeight(), (h) => h >= 3n),
            20_000
          )
          const leader = leaderOf(c, (yield* c.status(0)).view)
          const rest = all(4).filter((i) => i !== leader)
          const timeouts = Effect.map(
            Effect.forEach(rest, (i) => c.status(i)),
            (all) => all.reduce((n, s) => n + s.timeouts, 0)
          )
          const before = yield* timeouts
          yield* c.stop(leader)
          // A view the crashed validator leads times out; after it, the others commit again.
          yield* c.until(
            "a view timed out",
            Effect.map(timeouts, (n) => n > before),
            30_000
          )
          yield* c.until("progress after the timeout", yield* higherBy(c, rest, 3n), 30_000)
          yield* c.checkSafety
        })
      )

      it.scoped(`seed ${seed}: a 2|2 partition stops progress; healed, it resumes with no fork`, () =>
        Effect.gen(function* () {
          const c = yield* ConsensusCluster.make({ size: 4, seed, link, validator })
          yield* c.until(
            "3 blocks",
            Effect.map(c.minHeight(), (h) => h >= 3n),
            20_000
          )
          const hosts = c.cluster.validators.map((v) => v.host)
          yield* c.cluster.network.partition([hosts.slice(0, 2), hosts.slice(2)])
          // What was in flight lands; then nothing commits for 3 simulated seconds.
          yield* TestClock.adjust(500)
          const stalled = (yield* c.checkSafety).heights
          yield* TestClock.adjust(3_000)
          expect((yield* c.checkSafety).heights).toEqual(stalled)
          yield* c.cluster.network.heal
          yield* c.until("progress after healing", yield* higherBy(c, all(4), 3n), 60_000)
          yield* c.checkSafety
        })
      )

      it.scoped(`seed ${seed}: 5% loss with jitter still commits`, () =>
        Effect.gen(function* () {
          const c = yield* ConsensusCluster.make({
            size: 4,
            seed,
            link: { latency: 5, jitter: 5, loss: 0.05 },
            validator
          })
          yield* c.until(
            "10 blocks under loss",
            Effect.map(c.minHeight(), (h) => h >= 10n),
            120_000
          )
          yield* c.checkSafety
        })
      )

      it.scoped(`seed ${seed}: an equivocating leader causes no conflicting commits`, () =>
        Effect.gen(function* () {
          const c = yield* ConsensusCluster.make({
            size: 4,
            seed,
            link,
            validator,
            validatorOf: (i) => (i === 0 ? { byzantine: { equivocate: true } } : {})
          })
          yield* c.until(
            "10 blocks despite the equivocator",
            Effect.map(c.minHeight([1, 2, 3]), (h) => h >= 10n),
            60_000
          )
          yield* c.checkSafety
          let refused = 0
          for (const i of [1, 2, 3]) refused += (yield* c.status(i)).refused
          expect(refused).toBeGreaterThan(0)
        })
      )
    }
  })
})
