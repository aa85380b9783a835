// Slowloris from 100 source addresses against a validator over real TLS on 127.0.0.0/8: hundreds of
// TCP connections that never start their handshake fill every handshake slot they may use, and a
// validator, from the host its config names, still connects: the manager reserves the transport's
// last handshake slots for validators' hosts.
import * as net from "node:net"
import { assert, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { identity } from "./fixtures/cluster.js"
import { reservePorts, tlsAddress, tlsNode, waitUntil } from "./fixtures/tls.js"

const ATTACKERS = 100
const PER_ATTACKER = 3

/** Opens `count` connections from 127.0.0.`2 + i % ATTACKERS` that send nothing; closed with the scope. */
const slowloris = (port: number, count: number) =>
  Effect.acquireRelease(
    Effect.sync(() =>
      Array.from({ length: count }, (_, i) => {
        const socket = net.connect({
          host: "127.0.0.1",
          port,
          localAddress: `127.0.0.${2 + (i % ATTACKERS)}`
        })
        socket.on("error", () => {})
        return socket
      })
    ),
    (sockets) =>
      Effect.sync(() => {
        for (const socket of sockets) socket.destroy()
      })
  )

it.scopedLive(
  "a validator connects while slowloris from 100 addresses holds every other handshake slot",
  () =>
    Effect.gen(function* () {
      const [victimPort, validatorPort, deadPort] = yield* reservePorts(3)
      const handshakes = { maxConcurrentHandshakes: 256, reservedHandshakes: 64, maxConnectionsPerIp: 16 }
      // The victim knows the validator at a dead port, so the only way in is the validator's own dial.
      const victim = yield* tlsNode({
        n: 1,
        port: victimPort!,
        validators: [
          { id: identity(1).peerId, addresses: [tlsAddress(victimPort!)] },
          { id: identity(2).peerId, addresses: [tlsAddress(deadPort!)] }
        ],
        // Unfinished handshakes hold their slot for as long as the test runs.
        transport: { ...handshakes, handshakeTimeout: 60_000 }
      })
      yield* slowloris(victimPort!, ATTACKERS * PER_ATTACKER)
      const overLimit = Effect.map(victim.manager.refused, (r) => r["over-limit"] ?? 0)
      // 300 attempts, 192 slots for hosts other than validators': the rest are refused.
      yield* waitUntil(
        "the slowloris to fill the unreserved slots",
        Effect.map(overLimit, (n) => n >= ATTACKERS * PER_ATTACKER - 192)
      )
      const refusedByAttack = yield* overLimit

      const validator = yield* tlsNode({
        n: 2,
        port: validatorPort!,
        validators: [
          { id: identity(1).peerId, addresses: [tlsAddress(victimPort!)] },
          { id: identity(2).peerId, addresses: [tlsAddress(validatorPort!)] }
        ],
        config: { dialGrace: 0 }
      })
      yield* waitUntil(
        "the validator's connection",
        Effect.map(victim.manager.connected, (peers) => peers.includes(identity(2).peerId))
      )
      yield* waitUntil(
        "the validator to hold it too",
        Effect.map(validator.manager.connected, (peers) => peers.includes(identity(1).peerId))
      )
      assert.strictEqual(yield* overLimit, refusedByAttack, "the validator was never refused")
    }),
  60_000
)
