// NodeRpc's bad input under TestCluster and TestClock: an authenticated peer (a raw connection with a
// validator's key over the simulated network) sends RPC frames that do not decode, an RPC request in
// a broadcast envelope, and an answer nobody asked for. Each is refused or dropped, counted, charged
// to the peer as the rest of the node's bad input is, and the node keeps serving the others.

import { RpcSerialization } from "@effect/rpc"
import { assert, it } from "@effect/vitest"
import { Broadcaster } from "@hotstuff2/broadcast"
import { MemoryTransport, SimulatedNetwork, Transport } from "@hotstuff2/transport"
import { Codec, Envelope, Identity, Message } from "@hotstuff2/wire"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import { TestCluster } from "../src/index.js"
import { clientOf, serve, settle } from "./fixtures/rpc.js"
import { waitSimulated } from "./fixtures/wait.js"

const SYNC = 4
const NETWORK = "hotstuff2-test-cluster"

/** A counter's value in this process's registry, for one node and one label value. */
const counter = (name: string, node: Identity.PeerId, label: string, value: string) =>
  Effect.map(Metric.snapshot, (pairs) => {
    const short = Identity.shortPeerId(node)
    let total = 0
    for (const pair of pairs) {
      if (pair.metricKey.name !== name) continue
      const tags = new Map(pair.metricKey.tags.map((t) => [t.key, t.value]))
      if (tags.get("node") !== short || tags.get(label) !== value) continue
      total += (pair.metricState as unknown as { count: number }).count
    }
    return total
  })

/** RPC data: a stream id, then `body` (raw bytes, or a value MessagePack writes). */
const rpcData = (stream: number, body: Uint8Array | object): Uint8Array => {
  const bytes =
    body instanceof Uint8Array ? body : (RpcSerialization.msgPack.unsafeMake().encode(body) as Uint8Array)
  const out = Buffer.alloc(4 + bytes.length)
  out.writeUInt32BE(stream, 0)
  out.set(bytes, 4)
  return out
}

const bare = (message: Message.Message): Uint8Array =>
  Uint8Array.from([0x00, ...Either.getOrThrow(Codec.encode(message))])

it.scoped(
  "garbage RpcRequest data from an authenticated peer: refused as malformed and counted, the peer's score lowered; an envelope-carried request refused, a stray answer dropped, a repeated request id refused, an answer that does not decode a typed RpcBadResponse; the node keeps serving others",
  () =>
    Effect.gen(function* () {
      // A deep ban threshold: the attacker's score shows every charge, and it is not cut meanwhile.
      const cluster = yield* TestCluster.make({
        size: 3,
        seed: 21,
        config: { peers: { maxScore: 1000, banThreshold: -1000 } }
      })
      const [a, b] = [cluster.node(0), cluster.node(1)]
      yield* waitSimulated(
        "a and b connected",
        Effect.map(a.peers, (ps) => ps.some((p) => p.id === b.self && p.state === "connected"))
      )
      yield* serve(b, "b")
      // Validator 2 stops; its key dials b from elsewhere and writes raw frames.
      yield* cluster.stop(2)
      const attacker = cluster.validators[2]!.identity
      const transport = yield* Layer.build(
        MemoryTransport.layer({ identity: attacker, config: { networkId: NETWORK }, host: "raw" })
      ).pipe(
        Effect.provideService(SimulatedNetwork.SimulatedNetwork, cluster.network),
        Effect.orDie,
        Effect.map((context) => Context.get(context, Transport.Transport))
      )
      // The handshake runs on the simulated network's Clock: moved until it is done.
      const dialed = yield* settle(transport.dial(cluster.validators[1]!.address, b.self))
      if (Exit.isFailure(dialed)) return assert.fail(`dial failed: ${dialed.cause}`)
      const connection = dialed.value
      // What b sends the raw peer: the requests of its client to it.
      const requests: Array<{ readonly stream: number; readonly id: string }> = []
      yield* Effect.forkScoped(
        Stream.runForEach(connection.frames, (frame) =>
          Effect.sync(() => {
            for (const slot of frame.messages) {
              const read = Broadcaster.readDirectSlot(slot)
              if (typeof read === "string" || read.message._tag !== "RpcRequest") continue
              const data = read.message.data
              const [value] = RpcSerialization.msgPack.unsafeMake().decode(data.subarray(4)) as Array<any>
              if (value?._tag === "Request") {
                requests.push({ stream: Buffer.from(data).readUInt32BE(0), id: value.id })
              }
            }
          })
        )
      )
      yield* waitSimulated(
        "the raw peer admitted",
        Effect.map(b.peers, (ps) => ps.some((p) => p.id === attacker.peerId && p.state === "connected"))
      )
      const malformed = () => counter("hotstuff2_messages_rejected", b.self, "reason", "malformed")
      const reserved = () => counter("hotstuff2_messages_rejected", b.self, "reason", "reserved-message")
      const dropped = () => counter("hotstuff2_rpc_dropped", b.self, "reason", "unknown-stream")
      const before = { malformed: yield* malformed(), reserved: yield* reserved(), dropped: yield* dropped() }

      const garbage = [
        Uint8Array.of(0, 0, 1), // shorter than a stream id and a value
        rpcData(1, Uint8Array.of(0x92, 0x01)), // a MessagePack array cut short
        rpcData(1, { _tag: "Nope", requestId: "1" }), // MessagePack, but no RPC frame
        rpcData(1, { _tag: "Request", id: "x", tag: "Slow", payload: {}, headers: [] }) // a bad request id
      ]
      yield* connection
        .send(
          SYNC,
          garbage.map((data) => bare(Message.RpcRequest.make({ data })))
        )
        .pipe(Effect.orDie)
      yield* waitSimulated(
        "four malformed refusals",
        Effect.map(malformed(), (n) => n === before.malformed + 4)
      )

      // A well-formed request, sealed in an envelope as a broadcast would be: refused where envelopes
      // are read, by the consumer of b's messages (the RPC refusals above needed none).
      yield* Effect.forkScoped(Stream.runDrain(b.messages))
      const request = rpcData(1, {
        _tag: "Request",
        id: "1",
        tag: "Slow",
        payload: { millis: 1 },
        headers: []
      })
      const sealed = Either.getOrThrow(
        Envelope.seal(attacker, {
          networkId: NETWORK,
          // Above anything validator 2 sent before its stop: not dropped as a duplicate.
          sequence: 2n ** 48n,
          payload: Either.getOrThrow(Codec.encode(Message.RpcRequest.make({ data: request })))
        })
      )
      // An answer for a stream nobody opened: dropped, counted, not charged.
      const stray = bare(
        Message.RpcResponse.make({
          data: rpcData(4242, { _tag: "Exit", requestId: "1", exit: { _tag: "Success", value: "x" } })
        })
      )
      yield* connection.send(SYNC, [Uint8Array.from([0x02, ...sealed.bytes]), stray]).pipe(Effect.orDie)
      yield* waitSimulated(
        "the envelope refused and the stray answer dropped",
        Effect.zipWith(reserved(), dropped(), (r, d) => r === before.reserved + 1 && d === before.dropped + 1)
      )
      assert.strictEqual(yield* malformed(), before.malformed + 4, "the stray answer is not a refusal")

      const score = (yield* b.peers).find((p) => p.id === attacker.peerId)!.score
      // Four invalid messages (-20 each) and a protocol violation (-30), barely decayed.
      assert.isBelow(score, -100)

      // A request id already in flight on its stream: refused (the first one is served).
      const slow = bare(
        Message.RpcRequest.make({
          data: rpcData(7, { _tag: "Request", id: "5", tag: "Slow", payload: { millis: 100 }, headers: [] })
        })
      )
      yield* connection.send(SYNC, [slow, slow]).pipe(Effect.orDie)
      yield* waitSimulated(
        "the repeated request id refused",
        Effect.map(malformed(), (n) => n === before.malformed + 5)
      )

      // b asks the raw peer, which answers with what the RPC's schema refuses: a typed failure at b's
      // client, and the raw peer charged for it.
      const toRaw = yield* clientOf(b, attacker.peerId)
      const asking = yield* Effect.fork(toRaw.Who())
      yield* waitSimulated(
        "b's request at the raw peer",
        Effect.sync(() => requests.length === 1)
      )
      const [asked] = requests
      yield* connection
        .send(SYNC, [
          bare(
            Message.RpcResponse.make({
              data: rpcData(asked!.stream, {
                _tag: "Exit",
                requestId: asked!.id,
                exit: { _tag: "Success", value: 42 }
              })
            })
          )
        ])
        .pipe(Effect.orDie)
      const answer = yield* settle(Fiber.join(asking))
      assert.isTrue(Exit.isFailure(answer))
      if (Exit.isFailure(answer)) {
        assert.strictEqual(Option.getOrThrow(Cause.failureOption(answer.cause))._tag, "RpcBadResponse")
      }
      assert.strictEqual(yield* malformed(), before.malformed + 6)

      // b still serves a's requests.
      const client = yield* clientOf(a, b.self)
      assert.deepStrictEqual(yield* settle(client.Slow({ millis: 5 })), Exit.succeed("b slept 5"))
    })
)
