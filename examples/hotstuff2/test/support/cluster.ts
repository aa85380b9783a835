// A HotStuff-2 validator set on TestCluster under TestClock: one Consensus per NodeNetwork, each with
// its own data directory, any of them crashed (network and consensus scopes closed) and started again
// with its ledger and safety state; time moved in small steps until a condition holds; safety checked
// over every ledger.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { NodeNetwork, TestCluster } from "@hotstuff2/node"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import * as TestClock from "effect/TestClock"
import * as Ledger from "../../src/Ledger.js"
import * as SafetyStore from "../../src/SafetyStore.js"
import {
  Consensus,
  type ConsensusShape,
  make as makeValidator,
  type Status,
  type ValidatorOptions
} from "../../src/Validator.js"

export interface ConsensusClusterOptions extends TestCluster.TestClusterOptions {
  readonly validator?: Partial<Omit<ValidatorOptions, "identity" | "networkId" | "dataDirectory">>
  /** Options of one validator, over `validator` (a Byzantine one, for example). */
  readonly validatorOf?: (
    index: number
  ) => Partial<Omit<ValidatorOptions, "identity" | "networkId" | "dataDirectory">>
  /** Validators that run no consensus (their network only: a silent or scripted peer). */
  readonly without?: ReadonlyArray<number>
}

export interface ConsensusCluster {
  readonly cluster: TestCluster.TestCluster
  readonly size: number
  readonly consensus: (index: number) => ConsensusShape
  readonly running: (index: number) => boolean
  readonly stop: (index: number) => Effect.Effect<void>
  readonly start: (index: number) => Effect.Effect<void>
  readonly status: (index: number) => Effect.Effect<Status>
  /** Moves the TestClock in `step` ms steps (default 50) until `done` holds, at most `limit` ms; fails when it never does. */
  readonly until: (
    what: string,
    done: Effect.Effect<boolean>,
    limit: number,
    step?: number
  ) => Effect.Effect<void, Error>
  /** Lowest committed height among the running validators (or the given ones). */
  readonly minHeight: (among?: ReadonlyArray<number>) => Effect.Effect<bigint>
  /**
   * Safety over every validator's ledger, running or not: no two different blocks at one height.
   * Returns the highest height every ledger holds and its block's hash.
   */
  readonly checkSafety: Effect.Effect<
    { readonly common: bigint; readonly heights: ReadonlyArray<bigint> },
    Error
  >
}

export const make = (options: ConsensusClusterOptions) =>
  Effect.gen(function* () {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), "hotstuff2-consensus-"))
    yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(root, { recursive: true, force: true })))
    const cluster = yield* TestCluster.make(options)
    const networkId = options.networkId ?? "hotstuff2-test-cluster"
    const outer = yield* Effect.scope
    const running = new Map<number, { consensus: ConsensusShape; scope: Scope.CloseableScope }>()
    const dataOf = (index: number) => path.join(root, `v${index}`)
    // In memory, outliving a crash of their validator: deterministic under TestClock (no real I/O for
    // the clock to run ahead of). The ledger's own tests and the process tests use the disk.
    const storage = yield* Effect.forEach(Array.from({ length: options.size }), () =>
      Effect.all({
        ledger: Ledger.makeMemory(),
        safety: Effect.map(
          Layer.build(SafetyStore.SafetyStore.layerMemory()),
          Context.get(SafetyStore.SafetyStore)
        )
      })
    )

    const startConsensus = (index: number) =>
      Effect.gen(function* () {
        const scope = yield* Scope.fork(outer, ExecutionStrategy.sequential)
        const net = cluster.node(index)
        const context = yield* Layer.buildWithScope(
          Layer.scoped(
            Consensus,
            makeValidator({
              ...options.validator,
              ...options.validatorOf?.(index),
              identity: cluster.validators[index]!.identity,
              networkId,
              dataDirectory: dataOf(index),
              storage: storage[index]!
            })
          ).pipe(Layer.provide(Layer.succeed(NodeNetwork, net))),
          scope
        ).pipe(Effect.orDie)
        running.set(index, { consensus: Context.get(context, Consensus), scope })
      })

    for (let i = 0; i < options.size; i++) if (!options.without?.includes(i)) yield* startConsensus(i)

    const stop = (index: number) =>
      Effect.gen(function* () {
        const entry = running.get(index)
        if (entry === undefined) return
        running.delete(index)
        yield* Scope.close(entry.scope, Exit.void)
        yield* cluster.stop(index)
      })

    const start = (index: number) =>
      Effect.gen(function* () {
        if (running.has(index)) return
        yield* cluster.start(index).pipe(Effect.orDie)
        if (!options.without?.includes(index)) yield* startConsensus(index)
      })

    const consensus = (index: number) => {
      const entry = running.get(index)
      if (entry === undefined) throw new Error(`validator ${index} is not running`)
      return entry.consensus
    }

    const minHeight = (among?: ReadonlyArray<number>) =>
      Effect.gen(function* () {
        let min: bigint | undefined
        for (const i of among ?? [...running.keys()]) {
          const h = (yield* consensus(i).status).committedHeight
          if (min === undefined || h < min) min = h
        }
        return min ?? 0n
      })

    const until = (what: string, done: Effect.Effect<boolean>, limit: number, step = 50) =>
      Effect.gen(function* () {
        for (let t = 0; t <= limit; t += step) {
          if (yield* done) return
          yield* TestClock.adjust(step)
        }
        if (yield* done) return
        return yield* Effect.fail(new Error(`${what}: not within ${limit} simulated ms`))
      })

    const checkSafety = Effect.gen(function* () {
      const byHeight = new Map<bigint, string>()
      const heights: Array<bigint> = []
      for (let i = 0; i < options.size; i++) {
        if (options.without?.includes(i)) continue
        const chain = yield* Effect.scoped(
          Effect.gen(function* () {
            const ledger = storage[i]!.ledger
            const height = yield* ledger.height
            const out: Array<[bigint, string]> = []
            for (let h = 1n; h <= height; h++) {
              const b = yield* ledger.read(h)
              out.push([h, Buffer.from(b!.block.hash).toString("hex")])
            }
            return { height, out }
          })
        ).pipe(Effect.mapError((e) => new Error(`ledger of validator ${i}: ${String(e)}`)))
        heights.push(chain.height)
        for (const [h, hash] of chain.out) {
          const seen = byHeight.get(h)
          if (seen !== undefined && seen !== hash) {
            return yield* Effect.fail(
              new Error(`safety violated at height ${h}: ${seen} and ${hash} (validator ${i})`)
            )
          }
          byHeight.set(h, hash)
        }
      }
      return { common: heights.reduce((a, b) => (a < b ? a : b)), heights }
    })

    return {
      cluster,
      size: options.size,
      consensus,
      running: (index: number) => running.has(index),
      stop,
      start,
      status: (index: number) => consensus(index).status,
      until,
      minHeight,
      checkSafety
    } satisfies ConsensusCluster
  })
