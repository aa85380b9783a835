// One devnet validator: a process forked by the devnet with an IPC channel. It waits for its setup,
// runs `NodeNetwork.layer` (TLS) and `Consensus.layer` over it, reports its `Status` every
// `statusInterval`, and on "stop", on SIGINT/SIGTERM or when the parent goes away closes both layers
// (consensus first) and exits. Logs go to stderr.
import { NodeNetwork } from "@hotstuff2/node"
import { Identity } from "@hotstuff2/wire"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Schedule from "effect/Schedule"
import { Consensus, layer as consensusLayer } from "../Validator.js"
import type { FromValidator, ToValidator, ValidatorSetup } from "./protocol.js"

/** Sends to the parent; a closed channel (the parent is gone) is not an error. */
const tell = (message: FromValidator): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    if (process.send === undefined || !process.connected) return resume(Effect.void)
    try {
      process.send(message, undefined, {}, () => resume(Effect.void))
    } catch {
      resume(Effect.void)
    }
  })

const receiveSetup = Effect.async<ValidatorSetup>((resume) => {
  const onMessage = (m: ToValidator) => {
    if (m.type !== "start") return
    process.off("message", onMessage)
    resume(Effect.succeed(m.setup))
  }
  process.on("message", onMessage)
  return Effect.sync(() => process.off("message", onMessage))
})

/** Completes on "stop" or when the IPC channel closes (the parent is gone). */
const stopRequested = Effect.gen(function* () {
  const stop = yield* Deferred.make<void>()
  const onMessage = (m: ToValidator) => {
    if (m.type === "stop") Deferred.unsafeDone(stop, Exit.void)
  }
  const onDisconnect = () => Deferred.unsafeDone(stop, Exit.void)
  yield* Effect.acquireRelease(
    Effect.sync(() => {
      process.on("message", onMessage)
      process.on("disconnect", onDisconnect)
      if (!process.connected) onDisconnect()
    }),
    () =>
      Effect.sync(() => {
        process.off("message", onMessage)
        process.off("disconnect", onDisconnect)
      })
  )
  return Deferred.await(stop)
})

const validator = Effect.gen(function* () {
  const setup = yield* receiveSetup
  const identity = yield* Identity.load(setup.keyFile)
  const stopped = yield* stopRequested
  const layer = consensusLayer({
    identity,
    networkId: setup.networkId,
    dataDirectory: setup.dataDirectory,
    payloadBytes: setup.payloadBytes,
    baseTimeout: setup.baseTimeout
  }).pipe(Layer.provideMerge(NodeNetwork.layer(setup.config)))
  const context = yield* Layer.build(layer)
  const net = Context.get(context, NodeNetwork)
  const consensus = Context.get(context, Consensus)
  const report = Effect.flatMap(consensus.status, (status) =>
    tell({ type: "status", report: { at: Date.now(), status } })
  )
  yield* tell({ type: "ready", peerId: net.self, address: net.address })
  yield* report
  yield* Effect.forkScoped(Effect.repeat(report, Schedule.spaced(setup.statusInterval)))
  // The last status goes out before the consensus and the network close (finalizers run in reverse).
  yield* Effect.addFinalizer(() => report)
  yield* stopped
})

const program = validator.pipe(
  Effect.scoped,
  Effect.tapErrorCause((cause) =>
    Cause.isInterruptedOnly(cause)
      ? Effect.void
      : Effect.zipRight(
          Effect.logError("validator stopped on an error", cause),
          tell({ type: "failed", message: Cause.pretty(cause).split("\n")[0] ?? "failed" })
        )
  ),
  Effect.provide(Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.logfmtLogger)))
)

const fiber = Effect.runFork(program)
// Ctrl-C reaches every process of the devnet's group: close cleanly, as on "stop".
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => Effect.runFork(Fiber.interrupt(fiber)))
}
fiber.addObserver((exit) => {
  const code = Exit.isSuccess(exit) || Exit.isInterrupted(exit) ? 0 : 1
  if (process.connected) process.disconnect()
  // Pipes are synchronous on Linux: everything written has left. Exit now rather than wait for a
  // handle some library left open.
  process.exit(code)
})
