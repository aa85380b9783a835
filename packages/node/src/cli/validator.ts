// One devnet validator: a process forked by `devnet` with an IPC channel. It waits for its setup,
// runs NodeNetwork and the consensus traffic driver, reports counters every `statsIntervalMillis`,
// and on "stop", on SIGINT/SIGTERM or when the parent goes away closes the network cleanly and exits.
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Cause from "effect/Cause"
import * as Console from "effect/Console"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as NodeConfig from "../NodeConfig.js"
import { NodeNetwork } from "../NodeNetwork.js"
import * as Driver from "./driver.js"
import { identityOf } from "./keys.js"
import { answerRequests, tell } from "./parent.js"
import type { ToValidator, ValidatorSetup } from "./protocol.js"
import { snapshot } from "./status.js"

const setup = Effect.async<ValidatorSetup>((resume) => {
  const onMessage = (m: ToValidator) => {
    if (m.type !== "start") return
    process.off("message", onMessage)
    resume(Effect.succeed(m.setup))
  }
  process.on("message", onMessage)
  return Effect.sync(() => process.off("message", onMessage))
})

/** Completes on "stop" or when the IPC channel closes. */
const stopRequested = Effect.gen(function* () {
  const stop = yield* Deferred.make<void>()
  const onMessage = (m: ToValidator) => {
    if (m.type === "stop") Deferred.unsafeDone(stop, Effect.void)
  }
  const onDisconnect = () => Deferred.unsafeDone(stop, Effect.void)
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
  const s = yield* setup
  const config = yield* NodeConfig.decode(s.config)
  const identity = yield* identityOf(config.identity)
  const stopped = yield* stopRequested
  yield* Effect.scoped(
    Effect.gen(function* () {
      const context = yield* Layer.build(NodeNetwork.layer(config))
      const net = Context.get(context, NodeNetwork)
      const driver = yield* Driver.start(net, {
        validators: config.validators.map((v) => v.id),
        identity,
        payloadBytes: s.payloadBytes,
        viewTimeout: Duration.millis(s.viewTimeoutMillis),
        minViewTime: Duration.millis(s.minViewTimeMillis),
        startTimeout: Duration.seconds(10)
      })
      const report = Effect.flatMap(snapshot(net, driver), (snap) => tell({ type: "stats", snapshot: snap }))
      yield* answerRequests(snapshot(net, driver))
      yield* tell({ type: "ready", peerId: net.self, address: net.address })
      yield* Effect.forkScoped(Effect.repeat(report, Schedule.spaced(Duration.millis(s.statsIntervalMillis))))
      // The last counters go out before the network closes (finalizers run in reverse order).
      yield* Effect.addFinalizer(() => report)
      yield* stopped
    })
  )
})

validator.pipe(
  Effect.scoped,
  Effect.tapErrorCause((cause) =>
    Cause.isInterruptedOnly(cause)
      ? Effect.void
      : Effect.zipRight(
          Console.error(Cause.pretty(cause)),
          tell({
            type: "failed",
            message:
              Cause.squash(cause) instanceof Error
                ? (Cause.squash(cause) as Error).message
                : Cause.pretty(cause)
          })
        )
  ),
  Effect.ensuring(Effect.sync(() => process.connected && process.disconnect())),
  NodeRuntime.runMain({ disableErrorReporting: true })
)
