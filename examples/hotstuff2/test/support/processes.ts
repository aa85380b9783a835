// Devnet validators as real processes for tests: keys, data directories and TLS configs from the
// devnet's `prepare`, each validator forked through `ValidatorProcess` (tsx on `src`), killed with
// SIGKILL and started again with its key and data, and every ledger read back at the end.
import * as fs from "node:fs"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Scope from "effect/Scope"
import { type Agreement, agreement, readChain } from "../../src/devnet/chain.js"
import { prepare, STOP_TIMEOUT } from "../../src/devnet/Devnet.js"
import type { ValidatorSetup } from "../../src/devnet/protocol.js"
import { spawn, type ValidatorProcess } from "../../src/devnet/ValidatorProcess.js"
import type { Status } from "../../src/Validator.js"

export interface ProcessCluster {
  readonly size: number
  readonly setups: ReadonlyArray<ValidatorSetup>
  /** The current process of validator i (the latest one after a restart). */
  readonly process: (index: number) => ValidatorProcess
  /** Its newest status report; undefined before the first. */
  readonly status: (index: number) => Status | undefined
  /** Its newest reported committed height (0 before the first report). */
  readonly height: (index: number) => bigint
  /** Starts validator i (again, with its key and data directory) and waits until it runs. */
  readonly start: (index: number) => Effect.Effect<void, Error>
  /** SIGKILL, and waits for the exit. */
  readonly kill: (index: number) => Effect.Effect<void>
  /** Asks every running validator to stop; fails when one did not exit cleanly. */
  readonly stopAll: Effect.Effect<void, Error>
  /**
   * Polls every 100 ms until `condition` holds, for at most `within` of real time; fails at once when a
   * validator fails (with its last output).
   */
  readonly waitFor: (
    what: string,
    condition: () => boolean,
    within?: Duration.DurationInput
  ) => Effect.Effect<void, Error>
  /** Every validator's ledger read back and compared (stop them first). */
  readonly ledgers: Effect.Effect<Agreement, Error>
}

export const startCluster = (options: {
  readonly validators: number
  readonly baseTimeout?: number
  readonly statusInterval?: number
}): Effect.Effect<ProcessCluster, Error, Scope.Scope> =>
  Effect.gen(function* () {
    const prepared = yield* prepare({
      validators: options.validators,
      baseTimeout: options.baseTimeout,
      statusInterval: options.statusInterval ?? 250
    }).pipe(Effect.mapError((e) => new Error(e.message)))
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => fs.rmSync(prepared.root, { recursive: true, force: true }))
    )
    const processes: Array<ValidatorProcess> = []
    const outer = yield* Effect.scope

    const describe = () =>
      processes
        .map((p) => {
          const s = p.latest()?.status
          return `v${p.index} ${p.state()} height ${s?.committedHeight ?? "-"} view ${s?.view ?? "-"}`
        })
        .join("; ")

    const began = Date.now()
    // What happened when, on stderr: a slow run on a busy machine shows where its time went.
    const progress = (text: string) =>
      void process.stderr.write(`[processes +${((Date.now() - began) / 1000).toFixed(1)} s] ${text}\n`)

    const failed = () => processes.find((p) => p.failure() !== undefined)
    const failureOf = (p: ValidatorProcess) =>
      new Error(`validator ${p.index} failed: ${p.failure()}\n${p.output().join("\n")}`)

    const start = (index: number) =>
      Effect.gen(function* () {
        const p = yield* Effect.acquireRelease(spawn(prepared.setups[index]!), (p) => p.stop(STOP_TIMEOUT))
        processes[index] = p
        yield* Deferred.await(p.ready).pipe(
          Effect.timeoutFail({
            duration: Duration.seconds(150),
            onTimeout: () => `not up within 150 s`
          }),
          Effect.mapError((reason) => new Error(`validator ${index}: ${reason}\n${p.output().join("\n")}`))
        )
      }).pipe(Scope.extend(outer))

    // Each start's release stops that process at the scope's end; a kill leaves it exited.
    yield* Effect.forEach(prepared.setups, (_, i) => start(i), { concurrency: "unbounded", discard: true })
    progress(`${options.validators} validators up`)
    // Runs before the releases of the starts (finalizers run in reverse): stop all at once, not one by one.
    yield* Effect.addFinalizer(() =>
      Effect.forEach(processes, (p) => p.stop(STOP_TIMEOUT), { concurrency: "unbounded", discard: true })
    )

    const status = (index: number) => processes[index]?.latest()?.status
    const waitFor = (what: string, condition: () => boolean, within: Duration.DurationInput = "60 seconds") =>
      Effect.gen(function* () {
        const deadline = Date.now() + Duration.toMillis(Duration.decode(within))
        while (!condition()) {
          const bad = failed()
          if (bad !== undefined) return yield* Effect.fail(failureOf(bad))
          if (Date.now() > deadline) {
            return yield* Effect.fail(new Error(`timed out waiting for ${what}: ${describe()}`))
          }
          yield* Effect.sleep(Duration.millis(100))
        }
        progress(`${what}: ${describe()}`)
      })

    const stopAll = Effect.gen(function* () {
      yield* Effect.forEach(processes, (p) => p.stop(STOP_TIMEOUT), {
        concurrency: "unbounded",
        discard: true
      })
      const bad = failed()
      if (bad !== undefined) return yield* Effect.fail(failureOf(bad))
    })

    const ledgers = Effect.forEach(prepared.setups, (s) => readChain(s.index, s.dataDirectory)).pipe(
      Effect.map(agreement),
      Effect.mapError((e) => new Error(`reading the ledgers: ${e.message}`))
    )

    return {
      size: options.validators,
      setups: prepared.setups,
      process: (index) => processes[index]!,
      status,
      height: (index) => status(index)?.committedHeight ?? 0n,
      start,
      kill: (index) => Effect.asVoid(processes[index]!.kill),
      stopAll,
      waitFor,
      ledgers
    } satisfies ProcessCluster
  })
