// The Broadcaster under TestClock on the simulated network: what it delivers, and what it refuses
// from a validator ("mallory") that writes crafted frames on a raw authenticated connection.
import { assert, describe, it } from "@effect/vitest"
import { PeerManager, PeerRegistry } from "@hotstuff2/peers"
import { MemoryTransport, SimulatedNetwork, Transport, TransportConfig } from "@hotstuff2/transport"
import { Codec, Envelope, Identity, Message } from "@hotstuff2/wire"
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import { Broadcaster } from "../src/index.js"
import * as Payload from "../src/internal/payload.js"

/** A point-to-point slot as the broadcaster sends it: the kind byte, then the message bytes. */
const bareSlot = (bytes: Uint8Array): Uint8Array => {
  const prefix = Payload.directPrefix(undefined)
  const slot = new Uint8Array(prefix.length + bytes.length)
  slot.set(prefix)
  slot.set(bytes, prefix.length)
  return slot
}

const NETWORK = "hotstuff2-broadcast-test"
const { Channel } = TransportConfig

const key = (n: number) => {
  const seed = new Uint8Array(32)
  seed[0] = 0xb0
  seed[1] = n
  return Either.getOrThrow(Identity.fromSeed(seed))
}
const alice = key(1)
const mallory = key(2)
const carol = key(3)
const outsider = key(4)
const bob = key(5)
const addressOf = (id: Identity.Identity) => `${MemoryTransport.hostOf(id.peerId)}:9000`

const vote = (view: bigint, voter: Identity.PeerId) =>
  Message.Vote.make({ view, blockHash: new Uint8Array(32).fill(1), voter, signature: new Uint8Array(64) })

const encoded = (message: Message.Message) => Either.getOrThrow(Codec.encode(message))

/** A broadcast slot: `message` sealed by `signer`. */
const sealedSlot = (
  signer: Identity.Identity,
  sequence: bigint,
  message: Message.Message,
  networkId = NETWORK
) =>
  Payload.envelope(
    Either.getOrThrow(Envelope.seal(signer, { networkId, sequence, payload: encoded(message) })).bytes
  )

interface Counts {
  duplicates: number
  rejected: Array<Broadcaster.Rejection>
  sent: number
}

/** Alice: a full node (registry, manager, broadcaster) whose validators are alice, mallory, carol, bob. */
const aliceLayer = (counts: Counts, validators = [alice, mallory, carol, bob], loopbackBuffer = 1024) => {
  const peersConfig = { heartbeatInterval: "1 hour" }
  return Broadcaster.Broadcaster.layer({
    identity: alice,
    networkId: NETWORK,
    validators: validators.map((v) => v.peerId),
    config: { dedupWindow: 64, loopbackBuffer },
    observer: {
      duplicate: () => void counts.duplicates++,
      rejected: (r) => void counts.rejected.push(r),
      sent: () => void counts.sent++
    }
  }).pipe(
    Layer.provideMerge(
      PeerManager.PeerManager.layer({
        identity: alice,
        listen: addressOf(alice),
        // Nobody else listens: alice only accepts, so mallory's raw connection is the one kept.
        validators: validators.map((v) => ({ id: v.peerId, addresses: v === alice ? [addressOf(v)] : [] })),
        config: peersConfig
      })
    ),
    Layer.provideMerge(MemoryTransport.layer({ identity: alice, config: { networkId: NETWORK } })),
    Layer.provideMerge(PeerRegistry.PeerRegistry.layer(peersConfig))
  )
}

const noCounts = (): Counts => ({ duplicates: 0, rejected: [], sent: 0 })

/** Alice started in the test's scope, with what her observer counted. */
const startAlice = (validators = [alice, mallory, carol, bob]) =>
  Effect.gen(function* () {
    const counts = noCounts()
    const context = yield* Layer.build(aliceLayer(counts, validators))
    const broadcaster = Context.get(context, Broadcaster.Broadcaster)
    const registry = Context.get(context, PeerRegistry.PeerRegistry)
    const inbox = yield* Queue.unbounded<Broadcaster.Delivery>()
    yield* Effect.forkScoped(Stream.runForEach(broadcaster.inbound, (d) => Queue.offer(inbox, d)))
    return { broadcaster, registry, inbox, counts }
  })

/** A raw, authenticated connection from `who` to alice, to write any slot on any channel. */
const rawConnection = (who: Identity.Identity) =>
  Effect.gen(function* () {
    const context = yield* Layer.build(
      MemoryTransport.layer({ identity: who, config: { networkId: NETWORK } })
    )
    const transport = Context.get(context, Transport.Transport)
    const connection = yield* transport.dial(addressOf(alice), alice.peerId).pipe(Effect.orDie)
    return (channel: number, slots: ReadonlyArray<Uint8Array>) =>
      connection.send(channel, slots).pipe(Effect.orDie)
  })

/** Lets the simulated network deliver what was written (it runs on the clock). */
const settle = TestClock.adjust("10 millis")

const taken = (inbox: Queue.Queue<Broadcaster.Delivery>) =>
  Effect.map(Queue.takeAll(inbox), Chunk.toReadonlyArray)

const scoreOf = (registry: PeerRegistry.PeerRegistryShape, peer: Identity.PeerId) =>
  Effect.map(registry.get(peer), (s) => Option.getOrThrow(s).score)

const withNetwork = <A, E, R>(body: Effect.Effect<A, E, R>) =>
  Effect.flatMap(Layer.build(SimulatedNetwork.SimulatedNetwork.layer({ seed: 3 })), (network) =>
    Effect.provide(body, network)
  )

describe("Broadcaster inbound", () => {
  it.scoped(
    "delivers an envelope once with its origin; the same envelope again is a duplicate, not a fault",
    () =>
      withNetwork(
        Effect.gen(function* () {
          const { inbox, registry, counts } = yield* startAlice()
          const write = yield* rawConnection(mallory)
          const slot = sealedSlot(mallory, 100n, vote(1n, mallory.peerId))
          yield* write(Channel.consensus, [slot, slot])
          yield* settle
          yield* write(Channel.consensus, [slot])
          yield* settle
          const got = yield* taken(inbox)
          assert.strictEqual(got.length, 1)
          assert.strictEqual(got[0]!.origin, mallory.peerId)
          assert.strictEqual(got[0]!.from, mallory.peerId)
          assert.strictEqual(got[0]!.sequence, 100n)
          assert.deepStrictEqual(got[0]!.message, vote(1n, mallory.peerId))
          assert.strictEqual(counts.duplicates, 2)
          assert.deepStrictEqual(counts.rejected, [])
          assert.strictEqual(yield* scoreOf(registry, mallory.peerId), 0)
        })
      )
  )

  it.scoped("keeps a relayed envelope's origin, and drops the origin's own copy after it", () =>
    withNetwork(
      Effect.gen(function* () {
        const { inbox, counts } = yield* startAlice()
        const fromMallory = yield* rawConnection(mallory)
        const fromCarol = yield* rawConnection(carol)
        const slot = sealedSlot(carol, 7n, vote(2n, carol.peerId))
        yield* fromMallory(Channel.consensus, [slot])
        yield* settle
        yield* fromCarol(Channel.consensus, [slot])
        yield* settle
        const got = yield* taken(inbox)
        assert.strictEqual(got.length, 1)
        assert.strictEqual(got[0]!.origin, carol.peerId)
        assert.strictEqual(got[0]!.from, mallory.peerId)
        assert.strictEqual(counts.duplicates, 1)
      })
    )
  )

  it.scoped(
    "refuses each kind of bad input with a typed reason and a penalty, and loses nothing accepted",
    () =>
      withNetwork(
        Effect.gen(function* () {
          const { inbox, registry, counts } = yield* startAlice()
          const write = yield* rawConnection(mallory)
          const good = (n: bigint) => sealedSlot(mallory, 1000n + n, vote(n, mallory.peerId))
          const tampered = sealedSlot(mallory, 2000n, vote(5n, mallory.peerId))
          tampered[tampered.length - 70]! ^= 1 // a payload byte: the signature no longer matches
          const bad: ReadonlyArray<readonly [number, Uint8Array, Broadcaster.Rejection["reason"]]> = [
            [Channel.consensus, tampered, "bad-signature"],
            [
              Channel.consensus,
              sealedSlot(mallory, 2001n, vote(6n, mallory.peerId), "another-network"),
              "bad-signature"
            ],
            [Channel.consensus, sealedSlot(outsider, 1n, vote(7n, outsider.peerId)), "unknown-origin"],
            [Channel.consensus, new Uint8Array([0x07, 1, 2, 3]), "malformed"],
            [Channel.consensus, bareSlot(new Uint8Array([0x02, 0xff])), "malformed"],
            [Channel.consensus, new Uint8Array([Payload.DIRECT_TRACED, 1, 2]), "malformed"],
            [Channel.sync, bareSlot(encoded(vote(8n, mallory.peerId))), "wrong-channel"],
            [Channel.consensus, bareSlot(encoded(Message.Ping.make({ nonce: 1n }))), "reserved-message"]
          ]
          // Good messages around each bad one, in the same frames.
          let n = 0n
          for (const [channel, slot] of bad) {
            if (channel === Channel.consensus) yield* write(channel, [good(n++), slot, good(n++)])
            else yield* write(channel, [slot])
          }
          yield* settle
          const got = yield* taken(inbox)
          assert.deepStrictEqual(
            got.map((d) => d.message),
            Array.from({ length: Number(n) }, (_, i) => vote(BigInt(i), mallory.peerId))
          )
          // Channels are drained by priority, so only the order within a channel is kept.
          assert.sameMembers(
            counts.rejected.map((r) => r.reason),
            bad.map(([, , reason]) => reason)
          )
          for (const r of counts.rejected) {
            assert.strictEqual(r.peer, mallory.peerId)
            assert.isAbove(r.detail.length, 0)
          }
          // Reported: two bad signatures (-50 each) alone reach the ban threshold (-100).
          assert.isTrue(yield* registry.isBanned(mallory.peerId))
        })
      )
  )

  it.scoped("a genuine envelope relayed on the wrong channel does not shadow the origin's own copy", () =>
    withNetwork(
      Effect.gen(function* () {
        const { inbox, counts } = yield* startAlice()
        const fromMallory = yield* rawConnection(mallory)
        const fromCarol = yield* rawConnection(carol)
        const slot = sealedSlot(carol, 7n, vote(2n, carol.peerId))
        yield* fromMallory(Channel.sync, [slot])
        yield* settle
        yield* fromCarol(Channel.consensus, [slot])
        yield* settle
        assert.deepStrictEqual(
          counts.rejected.map((r) => [r.peer, r.reason]),
          [[mallory.peerId, "wrong-channel"]]
        )
        const got = yield* taken(inbox)
        assert.strictEqual(got.length, 1)
        assert.strictEqual(got[0]!.from, carol.peerId)
      })
    )
  )

  it.scoped("a copy of a delivered envelope is dropped before its signature is checked", () =>
    withNetwork(
      Effect.gen(function* () {
        const { inbox, registry, counts } = yield* startAlice()
        const write = yield* rawConnection(mallory)
        const slot = sealedSlot(carol, 70n, vote(3n, carol.peerId))
        yield* write(Channel.consensus, [slot])
        const copy = Uint8Array.from(slot)
        copy[copy.length - 1]! ^= 1 // a broken signature: only a check would notice
        yield* write(
          Channel.consensus,
          Array.from({ length: 100 }, () => copy)
        )
        yield* settle
        assert.strictEqual((yield* taken(inbox)).length, 1)
        assert.strictEqual(counts.duplicates, 100)
        assert.deepStrictEqual(counts.rejected, [])
        assert.strictEqual(yield* scoreOf(registry, mallory.peerId), 0)
      })
    )
  )

  it.scoped(
    "one consumer at a time; the next consumer gets what the last left; closing ends the stream",
    () =>
      withNetwork(
        Effect.gen(function* () {
          const counts = noCounts()
          const scope = yield* Scope.make()
          const context = yield* Layer.buildWithScope(aliceLayer(counts), scope)
          const broadcaster = Context.get(context, Broadcaster.Broadcaster)
          const write = yield* rawConnection(mallory)
          const slot = (i: bigint) => sealedSlot(mallory, 500n + i, vote(i, mallory.peerId))
          const first = yield* Effect.fork(Stream.runCollect(Stream.take(broadcaster.inbound, 1)))
          yield* settle
          yield* write(Channel.consensus, [slot(0n)])
          yield* settle
          assert.deepStrictEqual(
            Chunk.toReadonlyArray(yield* Fiber.join(first)).map((d) => d.sequence),
            [500n]
          )
          for (let i = 1n; i < 5n; i++) {
            yield* write(Channel.consensus, [slot(i)])
            yield* settle
          }
          const rest = yield* Effect.fork(Stream.runCollect(broadcaster.inbound))
          yield* settle
          const second = yield* Effect.exit(Stream.runDrain(broadcaster.inbound))
          assert.isTrue(Exit.isFailure(second) && Cause.isDie(second.cause), "a second consumer is refused")
          yield* Scope.close(scope, Exit.void)
          // Without the end of the stream on close, this join would wait forever.
          assert.deepStrictEqual(
            Chunk.toReadonlyArray(yield* Fiber.join(rest)).map((d) => d.sequence),
            [501n, 502n, 503n, 504n]
          )
        })
      )
  )

  it.scoped(
    "receive: the stream's queue without the stream; one consumer's place shared with inbound; closing interrupts a waiting receive",
    () =>
      withNetwork(
        Effect.gen(function* () {
          const counts = noCounts()
          const scope = yield* Scope.make()
          const context = yield* Layer.buildWithScope(aliceLayer(counts), scope)
          const broadcaster = Context.get(context, Broadcaster.Broadcaster)
          const write = yield* rawConnection(mallory)
          const slot = (i: bigint) => sealedSlot(mallory, 700n + i, vote(i, mallory.peerId))
          const sequences = (chunk: Chunk.Chunk<Broadcaster.Delivery>) =>
            Chunk.toReadonlyArray(chunk).map((d) => d.sequence)
          // Waits for a message, then hands over a chunk already there in the caller's step.
          const waiting = yield* Effect.fork(broadcaster.receive)
          yield* settle
          yield* write(Channel.consensus, [slot(0n)])
          yield* settle
          assert.deepStrictEqual(sequences(yield* Fiber.join(waiting)), [700n])
          yield* write(Channel.consensus, [slot(1n), slot(2n)])
          yield* settle
          assert.deepStrictEqual(sequences(yield* broadcaster.receive), [701n, 702n])
          // While one receive waits, a second receive and a stream are refused (defects).
          const holder = yield* Effect.fork(broadcaster.receive)
          yield* settle
          const second = yield* Effect.exit(broadcaster.receive)
          assert.isTrue(Exit.isFailure(second) && Cause.isDie(second.cause), "a second receive is refused")
          const stream = yield* Effect.exit(Stream.runDrain(broadcaster.inbound))
          assert.isTrue(
            Exit.isFailure(stream) && Cause.isDie(stream.cause),
            "a stream beside receive is refused"
          )
          // The waiting receive still gets the next message: the refusals took nothing from it.
          yield* write(Channel.consensus, [slot(3n)])
          yield* settle
          assert.deepStrictEqual(sequences(yield* Fiber.join(holder)), [703n])
          // An interrupted receive gives its place back.
          const interrupted = yield* Effect.fork(broadcaster.receive)
          yield* settle
          yield* Fiber.interrupt(interrupted)
          // While a stream runs, receive is refused.
          const reading = yield* Effect.fork(Stream.runCollect(Stream.take(broadcaster.inbound, 1)))
          yield* settle
          const beside = yield* Effect.exit(broadcaster.receive)
          assert.isTrue(
            Exit.isFailure(beside) && Cause.isDie(beside.cause),
            "receive beside a stream is refused"
          )
          yield* write(Channel.consensus, [slot(4n)])
          yield* settle
          assert.deepStrictEqual(sequences(yield* Fiber.join(reading)), [704n])
          // Closing interrupts a receive that waits (as Queue.take on a shut queue), and one after.
          const last = yield* Effect.fork(broadcaster.receive)
          yield* settle
          yield* Scope.close(scope, Exit.void)
          const ended = yield* Fiber.await(last)
          assert.isTrue(Exit.isInterrupted(ended), "a waiting receive is interrupted on close")
          const after = yield* Effect.exit(broadcaster.receive)
          assert.isTrue(Exit.isInterrupted(after), "a receive after close is interrupted")
        })
      )
  )

  it.scoped("drops envelopes older than the dedup window as duplicates", () =>
    withNetwork(
      Effect.gen(function* () {
        const { inbox, counts } = yield* startAlice()
        const write = yield* rawConnection(mallory)
        yield* write(Channel.consensus, [sealedSlot(mallory, 1000n, vote(1n, mallory.peerId))])
        yield* write(Channel.consensus, [sealedSlot(mallory, 1000n - 64n, vote(2n, mallory.peerId))])
        yield* write(Channel.consensus, [sealedSlot(mallory, 1000n - 63n, vote(3n, mallory.peerId))])
        yield* settle
        assert.deepStrictEqual(
          (yield* taken(inbox)).map((d) => d.sequence),
          [1000n, 937n]
        )
        assert.strictEqual(counts.duplicates, 1)
      })
    )
  )
})

describe("Broadcaster outbound", () => {
  it.scoped(
    "send to itself is delivered on inbound; internal messages are refused with InvalidOutbound",
    () =>
      withNetwork(
        Effect.gen(function* () {
          const { broadcaster, inbox } = yield* startAlice()
          yield* broadcaster.send(alice.peerId, vote(3n, alice.peerId))
          yield* settle
          const got = yield* taken(inbox)
          assert.strictEqual(got.length, 1)
          assert.strictEqual(got[0]!.from, alice.peerId)
          assert.strictEqual(got[0]!.origin, alice.peerId)
          const refused = yield* Effect.flip(broadcaster.send(carol.peerId, Message.Ping.make({ nonce: 1n })))
          assert.strictEqual(refused._tag, "InvalidOutbound")
          const invalid = yield* Effect.flip(
            broadcaster.broadcast({
              ...vote(1n, alice.peerId),
              signature: new Uint8Array(3)
            } as Message.Message)
          )
          assert.strictEqual(invalid._tag, "InvalidOutbound")
        })
      )
  )

  it.scoped(
    "own messages wait for the consumer up to loopbackBuffer, then Backpressure; they come before the network's",
    () =>
      withNetwork(
        Effect.gen(function* () {
          const counts = noCounts()
          const context = yield* Layer.build(aliceLayer(counts, undefined, 2))
          const broadcaster = Context.get(context, Broadcaster.Broadcaster)
          const write = yield* rawConnection(mallory)
          yield* write(Channel.consensus, [sealedSlot(mallory, 9n, vote(9n, mallory.peerId))])
          yield* settle
          yield* broadcaster.send(alice.peerId, vote(1n, alice.peerId))
          yield* broadcaster.send(alice.peerId, vote(2n, alice.peerId))
          const full = yield* Effect.flip(broadcaster.send(alice.peerId, vote(3n, alice.peerId)))
          assert.strictEqual(full._tag, "Backpressure")
          const got = yield* Stream.runCollect(Stream.take(broadcaster.inbound, 3))
          assert.deepStrictEqual(
            Chunk.toReadonlyArray(got).map((d) => [d.from, (d.message as Message.Vote).view]),
            [
              [alice.peerId, 1n],
              [alice.peerId, 2n],
              [mallory.peerId, 9n]
            ]
          )
          yield* broadcaster.send(alice.peerId, vote(3n, alice.peerId))
        })
      )
  )

  it.scoped("a broadcast lists who took it and who did not, and never waits for an absent peer", () =>
    withNetwork(
      Effect.gen(function* () {
        const { broadcaster, counts } = yield* startAlice()
        yield* rawConnection(mallory)
        yield* settle
        const receipt = yield* broadcaster.broadcast(vote(4n, alice.peerId))
        assert.deepStrictEqual(receipt.queued, [mallory.peerId])
        assert.sameMembers(
          receipt.failed.map((f) => f.peer),
          [carol.peerId, bob.peerId]
        )
        for (const f of receipt.failed) assert.strictEqual(f.error._tag, "PeerNotConnected")
        assert.strictEqual(receipt.id, Envelope.id({ origin: alice.peerId, sequence: receipt.sequence }))
        assert.strictEqual(counts.sent, 1)
        const next = yield* broadcaster.multicast([mallory.peerId, alice.peerId], vote(5n, alice.peerId))
        assert.strictEqual(next.sequence, receipt.sequence + 1n)
        assert.deepStrictEqual(next.queued, [mallory.peerId])
      })
    )
  )

  it.scoped("sequence numbers start from the clock, so a restarted origin is not taken for a duplicate", () =>
    withNetwork(
      Effect.gen(function* () {
        yield* TestClock.adjust("5 seconds")
        const first = yield* Effect.scoped(
          Effect.flatMap(startAlice(), ({ broadcaster }) => broadcaster.broadcast(vote(1n, alice.peerId)))
        )
        yield* TestClock.adjust("1 millis")
        const second = yield* Effect.scoped(
          Effect.flatMap(startAlice(), ({ broadcaster }) => broadcaster.broadcast(vote(1n, alice.peerId)))
        )
        assert.strictEqual(first.sequence, 5000n << 16n)
        assert.isTrue(second.sequence > first.sequence)
      })
    )
  )
})
