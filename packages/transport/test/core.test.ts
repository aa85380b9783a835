// The connection core below every transport, driven directly through a fake pipe: what a queue
// holds while its peer does not read.
import { assert, describe, it } from "@effect/vitest"
import { Frame } from "@hotstuff2/wire"
import * as Either from "effect/Either"
import { ConnectionCore } from "../src/internal/connection.js"
import type { Pipe } from "../src/internal/pipe.js"
import * as TransportConfig from "../src/TransportConfig.js"

const config = Either.getOrThrow(TransportConfig.decode({ networkId: "core-test" }))

/**
 * An open core on a pipe that takes every write, or (stalled) refuses more after the first, or after
 * the first `stalled` writes when a number; `writes` gets the chunks of each write.
 */
const openCore = (
  stalled: boolean | number,
  writes?: Array<ReadonlyArray<Uint8Array>>,
  coreConfig: TransportConfig.TransportConfig = config
): ConnectionCore => {
  let written = 0
  const pipe: Pipe = {
    remoteAddress: "127.0.0.1:1",
    attach: () => {},
    write: (chunks) => {
      writes?.push(chunks.map((c) => Uint8Array.from(c)))
      written++
      return stalled === false || (typeof stalled === "number" && written <= stalled)
    },
    pause: () => {},
    resume: () => {},
    end: (onFinished) => onFinished?.(),
    destroy: () => {}
  }
  const core = new ConnectionCore(pipe, {
    config: coreConfig,
    localPeer: "a".repeat(64) as never,
    remoteAddress: "127.0.0.1:1",
    direction: "outbound",
    timers: () => () => {}
  })
  core.open("b".repeat(64) as never)
  return core
}

describe("ConnectionCore", () => {
  it("a peer that stops reading holds about what its queue counts, not a shared pool per small frame", () => {
    // Found by review: small frames come from shared pools (Node's 8 KiB pool; for a while this
    // round, 64 KiB slabs), and with 63 other connections sending in between, each frame queued for
    // the stalled peer sat in a pool of its own: 4 MB queued held 33 MB (with the slabs, 256 MB).
    const stalled = openCore(true)
    const others = Array.from({ length: 63 }, () => openCore(false))
    const message = new Uint8Array(1000).fill(1)
    for (let round = 0; round < 4096; round++) {
      assert.isUndefined(stalled.send(1, [message]))
      for (const other of others) other.send(1, [message])
    }
    const queued = stalled.stats().queued[1]!
    assert.isAtLeast(queued.frames, 4000)
    const held = new Set<ArrayBufferLike>()
    // A queued send is a frame, or the messages it will be built from.
    const items = (
      stalled as unknown as {
        channels: Array<{ items: Array<Uint8Array | ReadonlyArray<Uint8Array> | undefined> }>
      }
    ).channels[1]!.items
    for (const item of items) {
      if (item instanceof Uint8Array) held.add(item.buffer)
      else for (const message of item ?? []) held.add(message.buffer)
    }
    let bytes = 0
    for (const buffer of held) bytes += buffer.byteLength
    assert.isBelow(bytes, 2 * queued.bytes, `${queued.bytes} bytes queued hold ${bytes} bytes of buffers`)
  })

  it("joins the sends of a turn into frames within the limits, and makes each write one buffer", async () => {
    const limited = Either.getOrThrow(
      TransportConfig.decode({ networkId: "core-test", maxMessagesPerFrame: 50, maxWriteBytes: 100_000 })
    )
    const writes: Array<ReadonlyArray<Uint8Array>> = []
    const core = openCore(false, writes, limited)
    const message = (i: number, size: number) => new Uint8Array(size).fill(i % 251)
    // A lone send is written during the call; the 300 sends after it in the same turn leave at its end.
    assert.isUndefined(core.send(1, [message(0, 1000)]))
    assert.strictEqual(writes.length, 1)
    for (let i = 1; i <= 300; i++) assert.isUndefined(core.send(1, [message(i, 1000)]))
    // A frame built at once (too big to join), then more small sends, still in order.
    assert.isUndefined(core.send(1, [message(301, 70_000)]))
    for (let i = 302; i < 310; i++) assert.isUndefined(core.send(1, [message(i, 1000)]))
    for (let turn = 0; turn < 20; turn++) await new Promise<void>((resolve) => queueMicrotask(resolve))
    const decoder = new Frame.FrameDecoder(Frame.defaultLimits)
    const got: Array<number> = []
    for (const chunks of writes) {
      const separate = chunks.filter((c) => c.length >= 70_000).length
      // Frames built at the flush share one buffer; one built at once is a chunk of its own between them.
      assert.isAtMost(chunks.length - separate, separate + 1, `${chunks.length} chunks in a write`)
      let size = 0
      for (const chunk of chunks) {
        size += chunk.length
        const error = decoder.push(chunk, (frame) => {
          assert.isAtMost(frame.messages.length, 50)
          assert.isAtMost(
            Frame.sizeOf(frame.messages),
            Math.max(65_536, Frame.sizeOf(frame.messages.slice(0, 1)))
          )
          for (const m of frame.messages) got.push(m[0]!)
        })
        assert.isUndefined(error)
      }
      assert.isAtMost(
        size,
        100_000 + 70_100,
        "a write stays within the budget, but for one frame built at once"
      )
    }
    assert.deepStrictEqual(
      got,
      Array.from({ length: 310 }, (_, i) => i % 251)
    )
    // Joined: far fewer frames than sends.
    const stats = core.stats()
    assert.isAtMost(stats.framesSent, 20, `${stats.framesSent} frames for 310 sends`)
    assert.isAtLeast(stats.framesSent, 310 / 50)
  })

  it("writes a Frame.Deferred into the frame: at the flush while the pipe takes writes, at once when blocked", async () => {
    const written: Array<number> = []
    const deferred = (i: number): Frame.Deferred => ({
      length: 3,
      writeTo: (target, offset) => {
        written.push(i)
        target.set([0xd0, i, 0xd1], offset)
      }
    })
    for (const stalled of [false, true]) {
      written.length = 0
      const writes: Array<ReadonlyArray<Uint8Array>> = []
      const core = openCore(stalled, writes)
      assert.isUndefined(core.send(1, [deferred(0)])) // written at once (a lone send), blocking a stalled pipe
      assert.isUndefined(core.send(1, [deferred(1), Uint8Array.of(0xaa)]))
      assert.isUndefined(core.send(1, [deferred(2)]))
      // Blocked: built (and written) in the send; otherwise at the end of the turn.
      assert.deepStrictEqual(written, stalled ? [0, 1, 2] : [0])
      await new Promise<void>((resolve) => queueMicrotask(resolve))
      assert.deepStrictEqual(written, [0, 1, 2])
      if (stalled) continue
      const got: Array<string> = []
      const decoder = new Frame.FrameDecoder(Frame.defaultLimits)
      for (const chunks of writes)
        for (const chunk of chunks)
          decoder.push(chunk, (f) => got.push(...f.messages.map((m) => Buffer.from(m).toString("hex"))))
      assert.deepStrictEqual(got, ["d000d1", "d001d1", "aa", "d002d1"])
    }
  })
})

describe("ConnectionCore on a pipe with streams of its own (QUIC)", () => {
  /** A pipe blocked after its first write, that says whether it takes urgent frames meanwhile. */
  const blockedPipe = (takesUrgent: () => boolean) => {
    const writes: Array<Array<number>> = []
    let written = 0
    const pipe: Pipe = {
      remoteAddress: "127.0.0.1:1",
      attach: () => {},
      write: (chunks) => {
        const channels: Array<number> = []
        for (const chunk of chunks) {
          // Each chunk is one or more whole frames: read the channel of every header.
          for (let off = 0; off < chunk.length; ) {
            channels.push(chunk[off + 1]!)
            off += 8 + new DataView(chunk.buffer, chunk.byteOffset + off + 4, 4).getUint32(0)
          }
        }
        writes.push(channels)
        return ++written < 1
      },
      pause: () => {},
      resume: () => {},
      end: (onFinished) => onFinished?.(),
      destroy: () => {},
      takesUrgent
    }
    const core = new ConnectionCore(pipe, {
      config,
      localPeer: "a".repeat(64) as never,
      remoteAddress: "127.0.0.1:1",
      direction: "outbound",
      timers: () => () => {}
    })
    core.open("b".repeat(64) as never)
    return { core, writes }
  }
  const turn = () => new Promise<void>((resolve) => setImmediate(resolve))
  const { consensus, sync } = TransportConfig.Channel

  it("while the pipe is blocked on a sync backlog, a vote is still written when the pipe takes urgent frames", async () => {
    const { core, writes } = blockedPipe(() => true)
    assert.isUndefined(core.send(sync, [new Uint8Array(60_000)]))
    await turn()
    assert.isUndefined(core.send(sync, [new Uint8Array(60_000)]))
    assert.isUndefined(core.send(consensus, [Uint8Array.of(1)]))
    await turn()
    assert.deepStrictEqual(writes, [[sync], [consensus]], "the vote went, the second sync frame waits")
  })

  it("and waits with everything else when the pipe does not (its urgent streams are backed up, or a socket)", async () => {
    const { core, writes } = blockedPipe(() => false)
    assert.isUndefined(core.send(sync, [new Uint8Array(60_000)]))
    await turn()
    assert.isUndefined(core.send(consensus, [Uint8Array.of(1)]))
    await turn()
    assert.deepStrictEqual(writes, [[sync]])
    assert.strictEqual(core.stats().queued[consensus]!.frames, 1)
  })
})
