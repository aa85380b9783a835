/**
 * The conformance suite every Transport layer must pass, ours (TLS, TCP, QUIC, the simulated
 * network) and any built on `TransportBackend`: `conformance(harness)` registers its tests with
 * vitest (`@effect/vitest`, an optional peer dependency). Import it from
 * `@hotstuff2/transport/conformance` in a test file; it is not part of the package's main entry.
 */
import { assert, describe, it } from "@effect/vitest"
import { Identity } from "@hotstuff2/wire"
import * as Chunk from "effect/Chunk"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Transport from "./Transport.js"
import * as TransportConfig from "./TransportConfig.js"

export type ConfigOverrides = Partial<TransportConfig.TransportConfigInput>

/** What the suite needs from a transport under test. */
export interface Harness<R = never> {
  readonly name: string
  /** Real sockets run under the live clock; a simulated network under TestClock. */
  readonly clock: "live" | "test"
  /** The layer of a transport for `identity`. */
  readonly layer: (
    identity: Identity.Identity,
    config: TransportConfig.TransportConfigInput
  ) => Layer.Layer<Transport.Transport, unknown, R>
  /** Where node `n` listens (port 0: any free port). */
  readonly listenAddress: (n: number) => string
  /** Provides what the layers need (a simulated network for the memory transport). */
  readonly provide: <A, E>(effect: Effect.Effect<A, E, R | Scope.Scope>) => Effect.Effect<A, E, Scope.Scope>
}

/** The network id the suite's transports share. */
export const NETWORK = "hotstuff2-conformance"

const identities = new Map<number, Identity.Identity>()

/** Deterministic identities: `identity(n)` is the same key in every run (seed: n + 1, big-endian). */
export const identity = (n: number): Identity.Identity => {
  let id = identities.get(n)
  if (id === undefined) {
    const seed = new Uint8Array(32)
    new DataView(seed.buffer).setUint32(0, n + 1)
    id = Either.getOrThrow(Identity.fromSeed(seed))
    identities.set(n, id)
  }
  return id
}

/** Builds a transport living in the current scope. */
export const buildTransport = <R>(
  harness: Harness<R>,
  identity: Identity.Identity,
  config: ConfigOverrides = {}
): Effect.Effect<Transport.TransportShape, never, Scope.Scope | R> =>
  Layer.build(harness.layer(identity, { networkId: NETWORK, ...config })).pipe(
    Effect.map((context) => Context.get(context, Transport.Transport)),
    Effect.orDie
  )

const { consensus, sync } = TransportConfig.Channel

/** The next connection a listener accepts. */
export const accept = (listener: Transport.Listener) =>
  Stream.runHead(listener.connections).pipe(
    Effect.flatMap((o) =>
      o._tag === "Some" ? Effect.succeed(o.value) : Effect.dieMessage("listener closed")
    )
  )

/** Collects a connection's frames into a queue, so tests can take exactly as many as they need. */
export const receiver = (connection: Transport.Connection) =>
  Effect.gen(function* () {
    const queue = yield* Queue.unbounded<Transport.InboundFrame>()
    yield* connection.frames.pipe(
      Stream.runForEach((frame) => Queue.offer(queue, frame)),
      Effect.ensuring(Queue.offer(queue, { channel: -1, messages: [] })),
      Effect.forkScoped
    )
    const take = (n: number) => Effect.map(Queue.takeN(queue, n), Chunk.toArray)
    return {
      take,
      /**
       * Takes frames until `n` messages have come (sends queued in one turn arrive joined in one
       * frame); returns the frames.
       */
      messages: (n: number) =>
        Effect.gen(function* () {
          const out: Array<Transport.InboundFrame> = []
          for (let got = 0; got < n; ) {
            const [frame] = yield* take(1)
            out.push(frame!)
            got += frame!.messages.length
          }
          return out
        }),
      /** Takes until the stream ends (marked by channel -1). */
      rest: Effect.gen(function* () {
        const out: Array<Transport.InboundFrame> = []
        for (;;) {
          const frame = yield* Queue.take(queue)
          if (frame.channel === -1) return out
          out.push(frame)
        }
      })
    }
  })

/** One turn of the event loop, so sockets can read and write. */
const nextTurn = Effect.async<void>((resume) => {
  setImmediate(() => resume(Effect.void))
})

/** Stats read synchronously (no Effect step between a send and the read). */
const core = (connection: Transport.Connection) => Effect.runSync(connection.stats)

/** `size` bytes starting with `n` as a u32. */
const numbered = (n: number, size: number) => {
  const b = new Uint8Array(size)
  new DataView(b.buffer).setUint32(0, n)
  return b
}
const u32 = (n: number) => numbered(n, 4)
const readU32 = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, 4).getUint32(0)
/** The u32 of every message of `frames`, in order. */
const numbers = (frames: ReadonlyArray<Transport.InboundFrame>) =>
  frames.flatMap((f) => f.messages.map(readU32))

/** Registers the suite for the transport of `h`. */
export const conformance = <R>(h: Harness<R>) =>
  describe(`${h.name}: transport conformance`, () => {
    const test = (name: string, body: () => Effect.Effect<void, unknown, Scope.Scope | R>) =>
      (h.clock === "live" ? it.scopedLive : it.scoped)(name, () => h.provide(body()))

    /** Node a listens, node b dials it. */
    const pair = (a: number, b: number, configA: ConfigOverrides = {}, configB: ConfigOverrides = {}) =>
      Effect.gen(function* () {
        const ta = yield* buildTransport(h, identity(a), configA)
        const tb = yield* buildTransport(h, identity(b), configB)
        const listener = yield* ta.listen(h.listenAddress(a))
        const client = yield* tb.dial(listener.address, identity(a).peerId)
        const server = yield* accept(listener)
        return { ta, tb, listener, client, server }
      })

    test("connects both ways, each side knowing the other's authenticated identity", () =>
      Effect.gen(function* () {
        const ta = yield* buildTransport(h, identity(1))
        const tb = yield* buildTransport(h, identity(2))
        const la = yield* ta.listen(h.listenAddress(1))
        const lb = yield* tb.listen(h.listenAddress(2))
        const ab = yield* ta.dial(lb.address, identity(2).peerId)
        const ba = yield* tb.dial(la.address, identity(1).peerId)
        const atB = yield* accept(lb)
        const atA = yield* accept(la)
        assert.strictEqual(ab.remotePeer, identity(2).peerId)
        assert.strictEqual(ab.direction, "outbound")
        assert.strictEqual(atB.remotePeer, identity(1).peerId)
        assert.strictEqual(atB.direction, "inbound")
        assert.strictEqual(ba.remotePeer, identity(1).peerId)
        assert.strictEqual(atA.remotePeer, identity(2).peerId)
        const rb = yield* receiver(atB)
        const ra = yield* receiver(ab)
        yield* ab.send(consensus, [Uint8Array.of(1)])
        yield* atB.send(consensus, [Uint8Array.of(2)])
        assert.deepStrictEqual([...(yield* rb.take(1))[0]!.messages[0]!], [1])
        assert.deepStrictEqual([...(yield* ra.take(1))[0]!.messages[0]!], [2])
      }))

    test("refuses a remote whose key is not the expected one, on the dialer", () =>
      Effect.gen(function* () {
        const ta = yield* buildTransport(h, identity(1))
        const tb = yield* buildTransport(h, identity(2))
        const listener = yield* ta.listen(h.listenAddress(1))
        const error = yield* Effect.flip(tb.dial(listener.address, identity(9).peerId))
        assert.strictEqual(error._tag, "DialError")
        assert.strictEqual(error.reason, "identity-mismatch")
      }))

    test("dials a key it does not know in advance: a predicate accepts the proven key, or refuses it", () =>
      Effect.gen(function* () {
        const ta = yield* buildTransport(h, identity(1))
        const tb = yield* buildTransport(h, identity(2))
        const listener = yield* ta.listen(h.listenAddress(1))
        const asked: Array<string> = []
        const client = yield* tb.dial(listener.address, (peer) => {
          asked.push(peer)
          return true
        })
        const server = yield* accept(listener)
        // The key the remote proved, whatever the dialer knew of it.
        assert.strictEqual(client.remotePeer, identity(1).peerId)
        assert.isTrue(asked.length > 0 && asked.every((peer) => peer === identity(1).peerId))
        const inbox = yield* receiver(server)
        yield* client.send(consensus, [Uint8Array.of(7)])
        assert.deepStrictEqual([...(yield* inbox.take(1))[0]!.messages[0]!], [7])
        const error = yield* Effect.flip(tb.dial(listener.address, (peer) => peer === identity(9).peerId))
        assert.strictEqual(error.reason, "identity-mismatch")
        assert.strictEqual(error.expectedPeer, "any")
      }))

    test("refuses a client the listener does not admit, telling it why", () =>
      Effect.gen(function* () {
        const ta = yield* buildTransport(h, identity(1))
        const admitted = yield* buildTransport(h, identity(2))
        const stranger = yield* buildTransport(h, identity(3))
        const listener = yield* ta.listen(h.listenAddress(1), {
          authorize: (peer) => Effect.succeed(peer === identity(2).peerId)
        })
        const error = yield* Effect.flip(stranger.dial(listener.address, identity(1).peerId))
        assert.strictEqual(error.reason, "refused-by-remote")
        assert.match(error.detail, /not-admitted/)
        const refusal = yield* Stream.runHead(listener.refusals)
        assert.isTrue(refusal._tag === "Some" && refusal.value.reason === "not-admitted")
        assert.strictEqual(refusal._tag === "Some" && refusal.value.peer, identity(3).peerId)
        const ok = yield* admitted.dial(listener.address, identity(1).peerId)
        assert.strictEqual((yield* accept(listener)).remotePeer, identity(2).peerId)
        assert.strictEqual(ok.remotePeer, identity(1).peerId)
      }))

    test("refuses a peer of another network, telling it why, and goes on serving its own", () =>
      Effect.gen(function* () {
        const ta = yield* buildTransport(h, identity(1))
        const own = yield* buildTransport(h, identity(2))
        const other = yield* buildTransport(h, identity(3), { networkId: "another-network" })
        const listener = yield* ta.listen(h.listenAddress(1))
        // Both sides check: whichever reads the other's hello first refuses and tells the other.
        const error = yield* Effect.flip(other.dial(listener.address, identity(1).peerId))
        assert.match(`${error.reason} ${error.detail}`, /wrong-network/)
        const refusal = yield* Stream.runHead(listener.refusals)
        assert.isTrue(
          refusal._tag === "Some" && /wrong-network/.test(`${refusal.value.reason} ${refusal.value.detail}`)
        )
        const ok = yield* own.dial(listener.address, identity(1).peerId)
        assert.strictEqual((yield* accept(listener)).remotePeer, identity(2).peerId)
        assert.strictEqual(ok.remotePeer, identity(1).peerId)
      }))

    test("a listener that speaks first, after a slow admission: the dialer gets the frame on a live connection", () =>
      Effect.gen(function* () {
        const ta = yield* buildTransport(h, identity(1))
        const tb = yield* buildTransport(h, identity(2))
        // Admission takes a while (no clock involved), then the listener greets at once on accept.
        const listener = yield* ta.listen(h.listenAddress(1), {
          authorize: () => Effect.as(Effect.repeatN(Effect.yieldNow(), 50), true)
        })
        yield* listener.connections.pipe(
          Stream.runForEach((c) => c.send(consensus, [Uint8Array.of(0x61)])),
          Effect.forkScoped
        )
        const client = yield* tb.dial(listener.address, identity(1).peerId)
        const frames = yield* client.receive
        assert.strictEqual(frames[0]!.messages[0]![0], 0x61)
        assert.isUndefined(client.unsafeSend(consensus, [Uint8Array.of(1)]), "the connection is open")
      }))

    test("delivers the frames of a channel in order", () =>
      Effect.gen(function* () {
        const { client, server } = yield* pair(1, 2)
        const r = yield* receiver(server)
        const n = 2000
        yield* Effect.forEach(
          Array.from({ length: n }, (_, i) => i),
          (i) => client.send(consensus, [u32(i)]),
          {
            discard: true
          }
        )
        const frames = yield* r.messages(n)
        assert.deepStrictEqual(
          numbers(frames),
          Array.from({ length: n }, (_, i) => i)
        )
        // Sends queued in one turn leave joined, a few frames for the lot.
        assert.isBelow(frames.length, n / 10, `${frames.length} frames for ${n} sends`)
      }))

    test("unsafeReceive takes frames in the data callback; one it refuses, and every frame after it, go to receive in order", () =>
      Effect.gen(function* () {
        const { client, server } = yield* pair(1, 2)
        const taken = yield* Queue.unbounded<number>()
        server.unsafeReceive((frame) => {
          const i = readU32(frame.messages[0]!)
          if (i === 5) return false
          if (i === 15) throw new Error("receiver bug")
          Queue.unsafeOffer(taken, i)
          return true
        })
        /** Frames through `receive` until `n` have come. */
        const received = (n: number) =>
          Effect.gen(function* () {
            const out: Array<number> = []
            while (out.length < n) for (const f of yield* server.receive) out.push(readU32(f.messages[0]!))
            return out
          })
        // Messages too large to be joined: each send is a frame of its own.
        const send = (from: number, to: number) =>
          Effect.forEach(
            Array.from({ length: to - from }, (_, k) => from + k),
            (i) => client.send(consensus, [numbered(i, 40 * 1024)]),
            { discard: true }
          )
        yield* send(0, 10)
        while ((yield* server.stats).framesReceived < 10) yield* nextTurn
        // 6..9 would be accepted, but 5 waits in the queue: they wait behind it.
        assert.deepStrictEqual(yield* received(5), [5, 6, 7, 8, 9])
        assert.deepStrictEqual(Chunk.toArray(yield* Queue.takeAll(taken)), [0, 1, 2, 3, 4])
        // Until receive asks again (its consumer may still be handling 9), frames keep queueing.
        const arrived = (yield* server.stats).framesReceived + 1
        yield* send(10, 11)
        while ((yield* server.stats).framesReceived < arrived) yield* nextTurn
        assert.deepStrictEqual(yield* received(1), [10])
        assert.strictEqual(yield* Queue.size(taken), 0)
        // A receive waiting with nothing queued: the consumer is done, the receiver takes frames again.
        const waiting = yield* Effect.fork(server.receive)
        yield* Effect.yieldNow()
        yield* send(11, 15)
        assert.deepStrictEqual(Chunk.toArray(yield* Queue.takeN(taken, 4)), [11, 12, 13, 14])
        yield* Fiber.interrupt(waiting)
        // A receiver that throws is removed; receive dies with the error once (before or after the
        // frames, as it was waiting or not), and the frames come through receive.
        yield* send(15, 17)
        const after: Array<number> = []
        const deaths: Array<string> = []
        while (after.length < 2 || deaths.length === 0) {
          const exit = yield* Effect.exit(server.receive)
          if (Exit.isSuccess(exit)) for (const f of exit.value) after.push(readU32(f.messages[0]!))
          else deaths.push(String(exit.cause))
        }
        assert.deepStrictEqual(after, [15, 16])
        assert.strictEqual(deaths.length, 1)
        assert.include(deaths[0], "receiver bug")
        yield* send(17, 18)
        assert.deepStrictEqual(yield* received(1), [17])
        assert.strictEqual(yield* Queue.size(taken), 0)
      }))

    test("sends a vote ahead of sync frames queued before it: it waits behind one frame at most", () =>
      Effect.gen(function* () {
        // One 60 KiB frame per write, so the order on the wire is the writer's choice, frame by frame.
        const { client, server } = yield* pair(1, 2, {}, { maxWriteBytes: 64 * 1024 })
        const r = yield* receiver(server)
        const block = new Uint8Array(60 * 1024)
        yield* Effect.forEach(Array.from({ length: 20 }), () => client.send(sync, [block]), { discard: true })
        yield* client.send(consensus, [Uint8Array.of(0xf0)])
        const frames = yield* r.take(21)
        const voteAt = frames.findIndex((f) => f.channel === consensus)
        assert.isAtLeast(voteAt, 0)
        assert.isAtMost(voteAt, 1, `the vote came after ${voteAt} sync frames`)
      }))

    test("coalesces frames queued together into one write", () =>
      Effect.gen(function* () {
        const { client, server } = yield* pair(1, 2)
        const r = yield* receiver(server)
        yield* Effect.forEach(
          Array.from({ length: 100 }, (_, i) => i),
          (i) => client.send(consensus, [u32(i)]),
          {
            discard: true
          }
        )
        assert.deepStrictEqual(
          numbers(yield* r.messages(100)),
          Array.from({ length: 100 }, (_, i) => i)
        )
        const stats = yield* client.stats
        // The first send is written at once; the rest of the turn's leave joined in one frame.
        assert.isAtMost(
          stats.framesSent - 2,
          4,
          `${stats.framesSent - 2} frames for 100 sends (and the handshake's 2)`
        )
        assert.isAtMost(stats.writes, 4, `${stats.writes} writes for 100 sends`)
        // After a burst, the next turn's first frame waits for the turn's end too (one write per
        // turn while a sender is in full flow)...
        const afterBurst = core(client).writes
        assert.isUndefined(client.unsafeSend(consensus, [u32(100)]))
        assert.strictEqual(core(client).writes, afterBurst, "after a burst, not written during the send")
        yield* r.take(1)
        // ...and once a turn had a lone frame, a lone frame (a reply, a vote) is written during the
        // send; what follows it in the same turn leaves at the turn's end.
        const before = core(client).writes
        assert.isUndefined(client.unsafeSend(consensus, [u32(101)]))
        assert.isUndefined(client.unsafeSend(consensus, [u32(102)]))
        assert.strictEqual(core(client).writes - before, 1, "the first frame is written at once")
        yield* r.take(2)
        assert.strictEqual(core(client).writes - before, 2, "the second at the end of the turn")
      }))

    test("passes a frame at exactly the size limit and refuses one byte over, on both sides", () =>
      Effect.gen(function* () {
        const limit = 64 * 1024
        // The receiver has the limit; the sender a larger one, so it sends what the receiver refuses.
        const { client, server } = yield* pair(1, 2, { maxFrameBytes: limit }, { maxFrameBytes: 4 * limit })
        const r = yield* receiver(server)
        // Body = message count (1 byte) + message length varint (3 bytes) + message.
        const atLimit = new Uint8Array(limit - 4)
        yield* client.send(consensus, [atLimit])
        assert.strictEqual((yield* r.take(1))[0]!.messages[0]!.length, limit - 4)
        yield* client.send(consensus, [new Uint8Array(limit - 3)])
        const why = yield* server.closed
        assert.strictEqual(why.reason, "protocol-error")
        assert.match(why.detail, /FrameTooLarge/)
        assert.strictEqual((yield* client.closed).initiator, "remote")
        // The sender refuses to build what is over its own limit, at once and typed.
        const { client: limited } = yield* pair(3, 4, {}, { maxFrameBytes: limit })
        const error = yield* Effect.flip(limited.send(consensus, [new Uint8Array(limit - 3)]))
        assert.strictEqual(error._tag, "FrameTooLarge")
      }))

    test("a stalled peer fills only its own queue: sends to it fail with Backpressure, others flow", () =>
      Effect.gen(function* () {
        const channels = TransportConfig.defaultChannels.map((c) =>
          c.id === consensus ? { ...c, maxQueuedFrames: 64, maxQueuedBytes: 1024 * 1024 } : c
        )
        const ta = yield* buildTransport(h, identity(1), { channels })
        const tb = yield* buildTransport(h, identity(2))
        const tc = yield* buildTransport(h, identity(3), { maxInboundFrames: 4 })
        const lb = yield* tb.listen(h.listenAddress(2))
        const lc = yield* tc.listen(h.listenAddress(3))
        const toB = yield* ta.dial(lb.address, identity(2).peerId)
        const toC = yield* ta.dial(lc.address, identity(3).peerId)
        const atB = yield* accept(lb)
        const atC = yield* accept(lc) // and never read from it: C is stalled
        const rb = yield* receiver(atB)
        // Send until the stall is established: sends keep failing across event-loop turns, after
        // the kernel's and the simulated link's buffers are full. Bounded in count.
        const frame = new Uint8Array(16 * 1024)
        let sent = 0
        let refusedInARow = 0
        let refused: Transport.SendError | undefined
        for (let i = 0; i < 20_000 && refusedInARow < 50; i++) {
          const result = yield* Effect.either(toC.send(consensus, [frame]))
          if (result._tag === "Left") {
            refused = result.left
            refusedInARow++
            yield* nextTurn
          } else {
            sent++
            refusedInARow = 0
            if (sent % 16 === 0) yield* nextTurn
          }
        }
        assert.strictEqual(
          refusedInARow,
          50,
          `sent ${sent} frames to a stalled peer without lasting backpressure`
        )
        assert.strictEqual(refused?._tag, "Backpressure")
        if (process.env.CONFORMANCE_REPORT) console.log(`${h.name}: stalled after ${sent} frames of 16 KiB`)
        const stats = yield* toC.stats
        const queued = stats.queued[consensus]!
        assert.isTrue(
          queued.frames === 64 || queued.bytes + frame.length > 1024 * 1024,
          JSON.stringify(queued)
        )
        assert.isTrue((yield* atC.stats).readPaused, "the stalled reader stopped reading")
        // B's own queue holds 64 frames: send in bursts the writer can drain between.
        for (let i = 0; i < 200; i++) {
          yield* toB.send(consensus, [u32(i)])
          if (i % 32 === 31) yield* Effect.yieldNow()
        }
        assert.deepStrictEqual(
          numbers(yield* rb.messages(200)),
          Array.from({ length: 200 }, (_, i) => i)
        )
      }))

    test("closes cleanly: queued frames are flushed, the peer learns why, later sends fail typed", () =>
      Effect.gen(function* () {
        const { client, server } = yield* pair(1, 2)
        const r = yield* receiver(server)
        for (let i = 0; i < 100; i++) yield* client.send(consensus, [u32(i)])
        yield* client.close({ reason: "bye", detail: "test over" })
        assert.deepStrictEqual(
          numbers(yield* r.rest),
          Array.from({ length: 100 }, (_, i) => i)
        )
        const why = yield* server.closed
        assert.deepStrictEqual(why, { initiator: "remote", reason: "bye", detail: "test over" })
        assert.strictEqual((yield* client.closed).initiator, "local")
        const error = yield* Effect.flip(client.send(consensus, [Uint8Array.of(1)]))
        assert.strictEqual(error._tag, "ConnectionClosed")
      }))

    test("receive takes frames in batches, then fails with ConnectionClosed after the last one", () =>
      Effect.gen(function* () {
        const { client, server } = yield* pair(1, 2)
        for (let i = 0; i < 50; i++) {
          const error = i % 2 === 0 ? client.unsafeSend(consensus, [u32(i)]) : undefined
          if (i % 2 === 1) yield* client.send(consensus, [u32(i)])
          assert.isUndefined(error)
        }
        yield* client.close({ reason: "bye" })
        const got: Array<number> = []
        let batches = 0
        for (;;) {
          const result = yield* Effect.either(server.receive)
          if (result._tag === "Left") {
            assert.strictEqual(result.left._tag, "ConnectionClosed")
            assert.strictEqual(result.left.reason, "bye")
            break
          }
          batches++
          got.push(...numbers(result.right))
        }
        assert.deepStrictEqual(
          got,
          Array.from({ length: 50 }, (_, i) => i),
          "in order, unsafeSend and send mixed"
        )
        assert.isAtMost(batches, 50)
        assert.strictEqual(client.unsafeSend(consensus, [u32(0)])?._tag, "ConnectionClosed")
      }))

    test("redials after the remote restarts on the same address", () =>
      Effect.gen(function* () {
        const tb = yield* buildTransport(h, identity(2))
        const first = yield* Scope.make()
        const ta = yield* buildTransport(h, identity(1)).pipe(Scope.extend(first))
        const listener = yield* ta.listen(h.listenAddress(1)).pipe(Scope.extend(first))
        const address = listener.address
        const before = yield* tb.dial(address, identity(1).peerId)
        yield* Scope.close(first, Exit.void)
        const why = yield* before.closed
        assert.strictEqual(why.initiator, "remote")
        const again = yield* buildTransport(h, identity(1))
        const relistened = yield* again.listen(address)
        assert.strictEqual(relistened.address, address)
        const after = yield* tb.dial(address, identity(1).peerId)
        const server = yield* accept(relistened)
        const r = yield* receiver(server)
        yield* after.send(consensus, [Uint8Array.of(7)])
        assert.strictEqual((yield* r.take(1))[0]!.messages[0]![0], 7)
      }))
  })
