import { assert, describe, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import { Mailbox } from "../src/internal/mailbox.js"

describe("Mailbox", () => {
  it("refuses own messages past its capacity, and hands them out before the network's chunk", () => {
    const mailbox = new Mailbox<string>(2)
    assert.isTrue(mailbox.offerLocal("own 1"))
    assert.isTrue(mailbox.offerLocal("own 2"))
    assert.isFalse(mailbox.offerLocal("own 3"))
    Effect.runSync(mailbox.offerNetwork(Chunk.make("net 1", "net 2")))
    assert.deepStrictEqual(Chunk.toReadonlyArray(Effect.runSync(mailbox.take)), [
      "own 1",
      "own 2",
      "net 1",
      "net 2"
    ])
    assert.isTrue(mailbox.offerLocal("own 3"))
  })

  it.live("holds the network side until its chunk is taken, and wakes a waiting taker", () =>
    Effect.gen(function* () {
      const mailbox = new Mailbox<number>(4)
      const taker = yield* Effect.fork(mailbox.take)
      yield* mailbox.offerNetwork(Chunk.make(1))
      assert.deepStrictEqual(Chunk.toReadonlyArray(yield* Fiber.join(taker)), [1])
      yield* mailbox.offerNetwork(Chunk.make(2))
      const producer = yield* Effect.fork(mailbox.offerNetwork(Chunk.make(3)))
      yield* Effect.yieldNow()
      assert.isNull(producer.unsafePoll())
      assert.deepStrictEqual(Chunk.toReadonlyArray(yield* mailbox.take), [2])
      yield* Fiber.join(producer)
      assert.deepStrictEqual(Chunk.toReadonlyArray(yield* mailbox.take), [3])
    })
  )
})
