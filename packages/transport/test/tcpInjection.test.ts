// What plain TCP does not protect, shown rather than claimed: its signed handshake proves who
// dialled, but the bytes after it have no integrity, so a relay on the path injects a frame that the
// listener delivers as the authenticated peer's. (TLS protects every byte; see the README.)
import * as net from "node:net"
import { assert, it } from "@effect/vitest"
import { Frame } from "@hotstuff2/wire"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { TcpTransport, TransportConfig } from "../src/index.js"
import { accept, receiver } from "./fixtures/conformance.js"
import { buildTransport, type Harness } from "./fixtures/harness.js"
import { identity } from "./fixtures/identities.js"

const tcp: Harness = {
  name: "TCP",
  clock: "live",
  layer: (id, c) => TcpTransport.layer({ identity: id, config: c, allowUnencrypted: true }),
  listenAddress: () => "127.0.0.1:0",
  provide: (e) => e
}

/** A relay on 127.0.0.1 to `target`, forwarding both ways; `inject` writes bytes towards the target. */
const relay = (target: string) =>
  Effect.acquireRelease(
    Effect.async<{
      readonly address: string
      readonly inject: (bytes: Uint8Array) => void
      readonly server: net.Server
    }>((resume) => {
      const upstreams: Array<net.Socket> = []
      const server = net.createServer((client) => {
        const [host, port] = [target.slice(0, target.lastIndexOf(":")), Number(target.split(":").pop())]
        const upstream = net.connect({ host, port })
        upstreams.push(upstream)
        client.pipe(upstream)
        upstream.pipe(client)
        client.on("error", () => upstream.destroy())
        upstream.on("error", () => client.destroy())
      })
      server.listen({ host: "127.0.0.1", port: 0 }, () =>
        resume(
          Effect.succeed({
            address: `127.0.0.1:${(server.address() as net.AddressInfo).port}`,
            inject: (bytes: Uint8Array) => upstreams[0]!.write(bytes),
            server
          })
        )
      )
    }),
    ({ server }) =>
      Effect.async<void>((resume) => {
        server.close(() => resume(Effect.void))
      })
  )

it.scopedLive("plain TCP: a frame injected on the path after the handshake is delivered as the peer's", () =>
  Effect.gen(function* () {
    const listening = yield* buildTransport(tcp, identity(1))
    const listener = yield* listening.listen("127.0.0.1:0")
    const onPath = yield* relay(listener.address)
    const dialer = yield* buildTransport(tcp, identity(2))
    const connection = yield* dialer.dial(onPath.address, identity(1).peerId)
    const atListener = yield* accept(listener)
    assert.strictEqual(atListener.remotePeer, identity(2).peerId, "the handshake proved the dialer")
    const inbox = yield* receiver(atListener)

    yield* connection.send(TransportConfig.Channel.consensus, [Uint8Array.of(1)])
    const forged = Either.getOrThrow(
      Frame.encode({ channel: TransportConfig.Channel.consensus, messages: [Uint8Array.of(0xee)] })
    )
    // Written between two of the dialer's frames: each leaves in one write, so no frame is cut.
    yield* Effect.sync(() => onPath.inject(forged))
    const frames = yield* inbox.messages(2)
    yield* connection.send(TransportConfig.Channel.consensus, [Uint8Array.of(2)])
    const rest = yield* inbox.messages(1)
    const bytes = [...frames, ...rest].flatMap((f) => f.messages.map((m) => m[0]))
    assert.includeMembers(bytes, [1, 0xee, 2], "the injected message arrived among the peer's")
    assert.strictEqual(atListener.remotePeer, identity(2).peerId, "and is taken as the authenticated peer's")
  })
)
