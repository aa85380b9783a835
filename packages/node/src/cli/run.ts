// `run`: one validator from a config file until SIGINT/SIGTERM; peer events and a periodic status
// in the log; with `drive`, the consensus traffic driver too (for docker compose and demos). Started
// with an IPC channel, it answers the parent's "sample" and "status" requests (the footprint bench).
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import * as NodeConfig from "../NodeConfig.js"
import { NodeNetwork, type PeerEvent } from "../NodeNetwork.js"
import * as Driver from "./driver.js"
import { identityOf } from "./keys.js"
import { answerRequests } from "./parent.js"
import { snapshot } from "./status.js"

export interface RunOptions {
  readonly config: string
  readonly statusInterval: Duration.Duration
  /** Run the consensus traffic driver with these settings. */
  readonly drive: Option.Option<{
    readonly payloadBytes: number
    readonly viewTimeout: Duration.Duration
    readonly minViewTime: Duration.Duration
  }>
}

const short = (peer: string) => peer.slice(0, 8)

const logEvent = (e: PeerEvent): Effect.Effect<void> => {
  switch (e._tag) {
    case "Connected":
      return Effect.logInfo(`peer ${short(e.peer)} connected (${e.direction}, ${e.address})`)
    case "Disconnected":
      return Effect.logInfo(`peer ${short(e.peer)} disconnected: ${e.reason}`)
    case "Discovered":
      return Effect.logDebug(`peer ${short(e.peer)} discovered at ${e.address} (${e.source})`)
    case "Banned":
      return Effect.logWarning(`peer ${short(e.peer)} banned (${e.reason}), ban ${e.count}`)
    case "Unbanned":
      return Effect.logInfo(`peer ${short(e.peer)} unbanned`)
    case "ScoreChanged":
      return Effect.logDebug(
        `peer ${short(e.peer)} score ${e.score.toFixed(1)} (${e.event}${e.detail === undefined ? "" : `: ${e.detail}`})`
      )
    case "Refused":
      return Effect.logWarning(
        `peer ${short(e.peer)}: ${e.count} inbound connection${e.count === 1 ? "" : "s"} refused (${e.reason}: ${e.detail})`
      )
    case "ValidatorJoined":
      return Effect.logInfo(`peer ${short(e.peer)} joined the validator set (epoch ${e.epoch})`)
    case "ValidatorLeft":
      return Effect.logInfo(`peer ${short(e.peer)} left every tracked validator set (epoch ${e.epoch})`)
  }
}

export const run = (options: RunOptions) =>
  Effect.gen(function* () {
    const config = yield* NodeConfig.load(options.config)
    // Checked before the network starts, so a bad key file fails as fast as a bad field.
    const identity = yield* identityOf(config.identity)
    yield* Effect.scoped(
      Effect.gen(function* () {
        const context = yield* Layer.build(NodeNetwork.layer(config))
        const net = Context.get(context, NodeNetwork)
        yield* Effect.logInfo(
          `node ${net.self} listening on ${net.address} (${config.transport}, network ${config.networkId}, ` +
            `${config.validators.length} validators)`
        )
        if (net.metricsAddress !== undefined)
          yield* Effect.logInfo(`metrics on http://${net.metricsAddress}/metrics`)
        if (net.healthAddress !== undefined)
          yield* Effect.logInfo(`probes on http://${net.healthAddress}/healthz and /readyz`)
        yield* Effect.forkScoped(Stream.runForEach(net.peerEvents, logEvent))
        const driver = Option.isSome(options.drive)
          ? yield* Driver.start(net, {
              validators: config.validators.map((v) => v.id),
              identity,
              payloadBytes: options.drive.value.payloadBytes,
              viewTimeout: options.drive.value.viewTimeout,
              minViewTime: options.drive.value.minViewTime,
              startTimeout: Duration.seconds(30)
            })
          : undefined
        yield* answerRequests(snapshot(net, driver))
        // Without the driver nobody else reads `messages`: count them, so that peers never stall on us.
        let received = 0
        if (driver === undefined) {
          yield* Effect.forkScoped(
            Stream.runForEach(net.messages, () =>
              Effect.sync(() => {
                received++
              })
            )
          )
        }
        const status = Effect.gen(function* () {
          const s = yield* snapshot(net, driver)
          const rtt = s.meanRtt === null ? "-" : `${s.meanRtt.toFixed(2)} ms`
          const consensus =
            driver === undefined
              ? `, ${received} messages received`
              : `, view ${s.view}, proposals ${s.proposalsSent + s.proposalsReceived}, votes ${s.votesSent + s.votesReceived}, timeouts ${s.timeouts}`
          yield* Effect.logInfo(
            `status: ${s.peersConnected}/${config.validators.filter((v) => v.id !== net.self).length} peers connected, mean rtt ${rtt}${consensus}`
          )
        })
        yield* Effect.forkScoped(
          Effect.repeat(status, Schedule.spaced(options.statusInterval)).pipe(
            Effect.delay(options.statusInterval)
          )
        )
        yield* Effect.addFinalizer(() => Effect.logInfo("closing the network"))
        return yield* Effect.never
      })
    )
  })
