// A message the application changes after `send` checked it (a `Codec.encodeLater` message, written
// into its frame only when the frame is built) is verified again when the frame is built: one that no
// longer verifies is left out, counted and never sent, so the receiver never sees bytes this node did
// not check (before, it was sent as zeros, and the receiver penalised this honest node).
import { assert, it } from "@effect/vitest"
import { Codec, type Identity, Message } from "@hotstuff2/wire"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import * as TestClock from "effect/TestClock"
import { MemoryTransport, TransportConfig } from "../src/index.js"
import { accept, receiver } from "./fixtures/conformance.js"
import { memoryTransport, withNetwork } from "./fixtures/harness.js"
import { identity } from "./fixtures/identities.js"

const transportOf = (n: number) => memoryTransport(identity(n))

const vote = (view: bigint, voter: Identity.PeerId) =>
  Message.Vote.make({ view, blockHash: new Uint8Array(32).fill(1), voter, signature: new Uint8Array(64) })

it.scoped("a sent message changed before its frame is built is left out, counted, and never sent", () =>
  withNetwork(
    { seed: 1 },
    Effect.gen(function* () {
      const a = yield* transportOf(1)
      const b = yield* transportOf(2)
      const listener = yield* b.listen(`${MemoryTransport.hostOf(identity(2).peerId)}:9000`)
      const dialing = yield* Effect.fork(a.dial(listener.address, identity(2).peerId))
      const accepting = yield* Effect.fork(accept(listener))
      yield* TestClock.adjust("100 millis")
      const toB = yield* Fiber.join(dialing)
      const atB = yield* Fiber.join(accepting)
      const inbox = yield* receiver(atB)

      // Three votes in one synchronous run: the first is written at once, the others when the turn
      // ends. The third is changed in between into a vote that no longer validates (a 5-byte hash).
      const votes = [vote(1n, identity(1).peerId), vote(2n, identity(1).peerId), vote(3n, identity(1).peerId)]
      const consensus = TransportConfig.Channel.consensus
      yield* Effect.sync(() => {
        for (const v of votes) {
          const later = Either.getOrThrow(Codec.encodeLater(undefined, v))
          assert.isUndefined(toB.unsafeSend(consensus, [later]))
        }
        ;(votes[2] as { blockHash: Uint8Array }).blockHash = new Uint8Array(5)
      })
      yield* TestClock.adjust("100 millis")
      const received = (yield* inbox.messages(2)).flatMap((f) => f.messages)
      const views = received.map((bytes) => {
        const decoded = Codec.decode(bytes)
        assert.isTrue(Either.isRight(decoded), "every message that arrives decodes")
        return Either.isRight(decoded) && decoded.right._tag === "Vote" ? decoded.right.view : undefined
      })
      assert.deepStrictEqual(views, [1n, 2n])
      assert.strictEqual((yield* toB.stats).changedAfterSend, 1)
      // Nothing more arrives: the changed vote was not sent at all.
      yield* toB.send(consensus, [Either.getOrThrow(Codec.encode(vote(4n, identity(1).peerId)))])
      yield* TestClock.adjust("100 millis")
      const [next] = (yield* inbox.messages(1)).flatMap((f) => f.messages)
      const decoded = Codec.decode(next!)
      assert.isTrue(Either.isRight(decoded) && decoded.right._tag === "Vote" && decoded.right.view === 4n)
    })
  )
)
