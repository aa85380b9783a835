// Compression bombs from an authenticated validator, over real TLS on 127.0.0.1, while two other
// validators keep sending to the same node: compressed frames on a channel that takes none, and
// frames past `maxInflationRatio`, are protocol errors that cost the bomber; large frames within the
// ratio are paid from its byte budget before they are inflated (then dropped uninflated), and are
// inflated off the event loop. The honest peers' messages keep arriving throughout. The event loop's
// delay is recorded, not asserted (figures belong in bench/).
import { monitorEventLoopDelay } from "node:perf_hooks"
import { assert, it } from "@effect/vitest"
import { TlsTransport, Transport, TransportConfig } from "@hotstuff2/transport"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import { identity } from "./fixtures/cluster.js"
import {
  NETWORK,
  reservePorts,
  tlsAddress,
  tlsNode,
  tlsValidators,
  transportDefaults,
  waitUntil
} from "./fixtures/tls.js"

const { consensus, sync } = TransportConfig.Channel

/** The bomber's transport: deflates every channel, at any ratio, so it can send what the victim refuses. */
const bomberTransport = Effect.map(
  Layer.build(
    TlsTransport.layer({
      identity: identity(4),
      config: {
        networkId: NETWORK,
        ...transportDefaults,
        compressionThreshold: 1024,
        maxInflationRatio: 1_000_000,
        channels: TransportConfig.defaultChannels.map((c) => ({ ...c, compression: "deflate" as const }))
      }
    })
  ),
  (context) => Context.get(context, Transport.Transport)
)

/** `n` bytes that deflate about 40 times: zeros with a pseudo-random byte every 64. */
const sparse = (n: number): Uint8Array => {
  const out = new Uint8Array(n)
  let x = 7
  for (let i = 0; i < n; i += 64) {
    x = (x * 1103515245 + 12345) >>> 0
    out[i] = x >>> 24
  }
  return out
}

it.scopedLive(
  "compression bombs from a validator cost it and stall nobody: two honest peers keep delivering",
  () =>
    Effect.gen(function* () {
      const ports = yield* reservePorts(4)
      const validators = tlsValidators([1, 2, 3, 4], ports)
      // The victim's sync budget: 32 MiB/s, one second deep (the default is 256 MiB/s).
      const victim = yield* tlsNode({
        n: 1,
        port: ports[0]!,
        validators,
        config: {
          rateLimits: [
            { channel: sync, messagesPerSecond: 10_000, bytesPerSecond: 32 * 1024 * 1024, burstSeconds: 1 }
          ]
        }
      })
      const honest = [
        yield* tlsNode({ n: 2, port: ports[1]!, validators }),
        yield* tlsNode({ n: 3, port: ports[2]!, validators })
      ]
      const delivered = new Map<string, number>()
      yield* Effect.forkScoped(
        Stream.runForEach(victim.manager.inbound, (frame) =>
          Effect.sync(() =>
            delivered.set(frame.peer, (delivered.get(frame.peer) ?? 0) + frame.messages.length)
          )
        )
      )
      const fromHonest = () =>
        (delivered.get(identity(2).peerId) ?? 0) + (delivered.get(identity(3).peerId) ?? 0)
      yield* waitUntil(
        "the honest peers connected to the victim",
        Effect.map(
          victim.manager.connected,
          (ps) => ps.includes(identity(2).peerId) && ps.includes(identity(3).peerId)
        )
      )
      // The honest peers send a vote-sized message every few milliseconds for the whole test.
      for (const node of honest) {
        yield* Effect.forkScoped(
          Effect.forever(
            Effect.zipRight(
              Effect.ignore(node.manager.send(identity(1).peerId, consensus, [new Uint8Array(200).fill(5)])),
              Effect.sleep("2 millis")
            )
          )
        )
      }

      const loop = monitorEventLoopDelay({ resolution: 5 })
      loop.enable()
      const bomber = yield* bomberTransport
      const violations = () =>
        Effect.map(victim.registry.get(identity(4).peerId), (p) => Option.getOrUndefined(p)?.score ?? 0)

      // 1. A compressed frame on the consensus channel, which takes no compression.
      const first = yield* bomber.dial(tlsAddress(ports[0]!), identity(1).peerId)
      yield* first.send(consensus, [sparse(512 * 1024)])
      const why1 = yield* first.closed
      assert.strictEqual(why1.reason, "protocol-error")
      assert.match(why1.detail, /takes no compression/)

      // 2. A sync frame past the inflation ratio: 15 MiB of zeros in about 15 KiB.
      const second = yield* bomber.dial(tlsAddress(ports[0]!), identity(1).peerId)
      yield* second.send(sync, [new Uint8Array(15 * 1024 * 1024)])
      const why2 = yield* second.closed
      assert.strictEqual(why2.reason, "protocol-error")
      assert.match(why2.detail, /DecompressedTooLarge/)
      assert.isBelow(yield* violations(), 0, "the bombs cost the bomber reputation")

      // 3. Large sync frames within the ratio, 8 MiB each once inflated: paid from the bomber's sync
      //    byte budget before inflating; past it dropped uninflated, and reported.
      const honestBefore = fromHonest()
      const third = yield* bomber.dial(tlsAddress(ports[0]!), identity(1).peerId)
      const bomb = sparse(8 * 1024 * 1024)
      let sent = 0
      for (let i = 0; i < 200; i++) {
        const result = yield* Effect.either(third.send(sync, [bomb]))
        if (Either.isLeft(result)) {
          if (result.left._tag === "ConnectionClosed") break
          yield* Effect.sleep("5 millis")
          continue
        }
        sent++
        yield* Effect.sleep("1 millis")
      }
      yield* waitUntil(
        "the bomber to be reported over its rate limit",
        Effect.map(
          Effect.flatMap(victim.registry.get(identity(4).peerId), (p) =>
            Effect.succeed(Option.isSome(p) && (p.value.score < -60 || Option.isSome(p.value.ban)))
          ),
          (b) => b
        )
      )
      yield* waitUntil(
        "the honest peers to keep delivering",
        Effect.sync(() => fromHonest() > honestBefore + 100)
      )
      loop.disable()
      const bomberDelivered = delivered.get(identity(4).peerId) ?? 0
      assert.isBelow(bomberDelivered, sent, "frames past the budget were dropped uninflated")
      // Recorded for the closing note and bench, not asserted: a timed assertion would flake.
      console.log(
        JSON.stringify({
          eventLoopDelayMs: {
            p50: loop.percentile(50) / 1e6,
            p99: loop.percentile(99) / 1e6,
            max: loop.max / 1e6
          },
          bombsSent: sent,
          bombsDelivered: bomberDelivered,
          honestDelivered: fromHonest()
        })
      )
      assert.isTrue(Option.isSome(yield* victim.registry.get(identity(2).peerId)))
    }),
  120_000
)
