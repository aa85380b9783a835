// NodeRpc over real TLS on 127.0.0.1: two validators built with NodeNetwork.layer, one serving.
import { assert, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { NodeNetwork, NodeRpc } from "../src/index.js"
import { reservePorts } from "../src/internal/ports.js"
import { configFor, connectedPeers, drain, startNode } from "./fixtures/cluster.js"
import { clientOf, serve } from "./fixtures/rpc.js"
import { waitLive } from "./fixtures/wait.js"

it.scopedLive(
  "two validators over TLS: a request and its answer, the asking peer named, nothing on messages",
  () =>
    Effect.gen(function* () {
      const addresses = (yield* reservePorts(2)).map((p) => `127.0.0.1:${p}`)
      const [a, b] = yield* Effect.forEach([0, 1], (n) =>
        startNode(n, NodeNetwork.layer(configFor(n, addresses)))
      )
      yield* Effect.addFinalizer(() => Effect.zipRight(a!.stop, b!.stop))
      yield* waitLive(
        "a connected to b",
        Effect.map(connectedPeers(a!), (ps) => ps.includes(b!.net.self))
      )
      const server = yield* serve(b!.net, "b")
      yield* Effect.addFinalizer(() => server.close)
      const client = yield* clientOf(a!.net, b!.net.self, { timeout: "20 seconds" })
      const chain = yield* client.GetChain({ tip: "h", max: 3 })
      assert.deepStrictEqual(chain, [
        { height: 100, hash: "h-0" },
        { height: 99, hash: "h-1" },
        { height: 98, hash: "h-2" }
      ])
      assert.strictEqual(yield* client.Who(), a!.net.self)
      assert.strictEqual(NodeRpc.PEER_HEADER, "x-hotstuff2-peer")
      assert.deepStrictEqual(yield* drain(b!), [], "the request never reached b's messages")
      assert.deepStrictEqual(yield* drain(a!), [], "the answer never reached a's messages")
    }),
  60_000
)
