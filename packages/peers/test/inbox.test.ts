// The inbox's node-wide bound (`inboundBytesTotal`): past it, a peer that has a frame queued already
// waits for room, while a peer with nothing queued still gets one frame in (fairness); taking frames
// under the total again lets every waiting peer go on.
import { assert, it } from "@effect/vitest"
import { Identity } from "@hotstuff2/wire"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Schema from "effect/Schema"
import { FairInbox } from "../src/internal/inbox.js"

const peer = (n: number) => Schema.decodeSync(Identity.PeerId)(n.toString(16).padStart(64, "0"))
const frame = (n: number, bytes: number) => ({ peer: peer(n), channel: 1, messages: [new Uint8Array(bytes)] })

it.effect("holds the total across peers at the bound, one frame per peer past it, and wakes waiters", () =>
  Effect.gen(function* () {
    // Per peer: 100 frames or 10 kB; over all peers: 1,000 bytes.
    const inbox = new FairInbox(100, 10_000, 1_000)
    assert.isTrue(inbox.tryOffer(frame(1, 400)))
    assert.isTrue(inbox.tryOffer(frame(1, 400)))
    assert.isTrue(inbox.tryOffer(frame(1, 400)), "800 < 1,000: one more fits")
    assert.isFalse(inbox.tryOffer(frame(1, 400)), "1,200 >= 1,000 and peer 1 has frames queued: full")
    assert.isTrue(inbox.isFull(peer(1)))
    assert.isTrue(inbox.tryOffer(frame(2, 400)), "peer 2 has nothing queued: it still gets one frame in")
    assert.isFalse(inbox.tryOffer(frame(2, 400)), "but only one")
    // Both readers wait for room.
    const waiting1 = yield* Effect.fork(inbox.offer(frame(1, 400)))
    const waiting2 = yield* Effect.fork(inbox.offer(frame(2, 400)))
    yield* Effect.yieldNow()
    assert.isTrue((yield* Fiber.poll(waiting1))._tag === "None")
    assert.isTrue((yield* Fiber.poll(waiting2))._tag === "None")
    // The consumer takes 4 frames (1,600 bytes): 0 left, under the total: both go on.
    assert.strictEqual(inbox.poll(4).length, 4)
    yield* Fiber.join(waiting1)
    yield* Fiber.join(waiting2)
    assert.strictEqual(inbox.poll(10).length, 2)
  })
)
