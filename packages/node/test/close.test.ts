// Closing a node finishes within `shutdownTimeout` however its layer was built: normally, or inside
// an uninterruptible region (the acquire step of `Effect.acquireRelease`, a common pattern), where
// every fiber forked while building inherits the region's uninterruptibility unless the layer says
// otherwise.
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import * as TestClock from "effect/TestClock"
import { NodeNetwork, TestCluster } from "../src/index.js"
import { reservePorts } from "../src/internal/ports.js"
import { configFor, connectedPeers, startNode } from "./fixtures/cluster.js"
import { waitLive, waitSimulated } from "./fixtures/wait.js"

const SHUTDOWN_MILLIS = 1000

const builds = {
  normally: <A, E>(effect: Effect.Effect<A, E>) => effect,
  "in an uninterruptible region": <A, E>(effect: Effect.Effect<A, E>) => Effect.uninterruptible(effect)
} as const

describe("closing a node", () => {
  for (const [how, build] of Object.entries(builds)) {
    it.live(`over TLS, built ${how}, with a peer connected and a data directory, closes`, () =>
      Effect.gen(function* () {
        const ports = yield* reservePorts(2)
        const addresses = ports.map((p) => `127.0.0.1:${p}`)
        const directory = yield* Effect.promise(() => fs.mkdtemp(path.join(os.tmpdir(), "hotstuff2-close-")))
        const peer = yield* startNode(1, NodeNetwork.layer(configFor(1, addresses)))
        const scope = yield* Scope.make()
        const context = yield* build(
          Layer.buildWithScope(
            NodeNetwork.layer(
              configFor(0, addresses, { shutdownTimeout: SHUTDOWN_MILLIS, dataDirectory: directory })
            ),
            scope
          )
        )
        const net = Context.get(context, NodeNetwork)
        yield* waitLive(
          "a connection to the peer",
          Effect.map(net.peers, (ps) => ps.some((p) => p.state === "connected"))
        )
        // The outer deadline only guards against a hang (before the fix, closing never ends); how
        // long a close takes is not asserted here.
        const closed = yield* Scope.close(scope, Exit.void).pipe(Effect.timeout("20 seconds"), Effect.either)
        assert.isTrue(closed._tag === "Right", `closing a node built ${how} did not finish`)
        yield* waitLive(
          "the peer to see the close",
          Effect.map(connectedPeers(peer), (ids) => ids.length === 0)
        )
        yield* peer.stop
        yield* Effect.promise(() => fs.rm(directory, { recursive: true, force: true }))
      })
    )

    it.scoped(`on the simulated network, built ${how}, closes within shutdownTimeout of clock time`, () =>
      Effect.gen(function* () {
        const cluster = yield* TestCluster.make({
          size: 3,
          seed: 5,
          config: { shutdownTimeout: SHUTDOWN_MILLIS, telemetry: { metricsInterval: 100 } }
        })
        yield* waitSimulated(
          "a full mesh",
          Effect.map(cluster.node(0).peers, (ps) => ps.every((p) => p.state === "connected"))
        )
        yield* cluster.stop(2)
        const restarted = yield* Effect.fork(build(cluster.start(2)))
        yield* waitSimulated(
          "the restarted node",
          Effect.map(Fiber.poll(restarted), (p) => p._tag === "Some")
        )
        yield* waitSimulated(
          "its mesh",
          Effect.map(cluster.node(2).peers, (ps) => ps.every((p) => p.state === "connected"))
        )
        const closing = yield* Effect.fork(cluster.stop(2))
        yield* TestClock.adjust(SHUTDOWN_MILLIS)
        const outcome = yield* Fiber.poll(closing)
        assert.isTrue(
          outcome._tag === "Some" && Exit.isSuccess(outcome.value),
          `closing a node built ${how} did not finish within shutdownTimeout`
        )
      })
    )
  }
})
