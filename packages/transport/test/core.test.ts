// The connection core below every transport, driven directly through a fake pipe: what a queue
// holds while its peer does not read.
import { assert, describe, it } from "@effect/vitest"
import * as Either from "effect/Either"
import { ConnectionCore } from "../src/internal/connection.js"
import type { Pipe } from "../src/internal/pipe.js"
import * as TransportConfig from "../src/TransportConfig.js"

const config = Either.getOrThrow(TransportConfig.decode({ networkId: "core-test" }))

/** An open core on a pipe that takes every write, or (stalled) refuses more after the first. */
const openCore = (stalled: boolean): ConnectionCore => {
  const pipe: Pipe = {
    remoteAddress: "127.0.0.1:1",
    attach: () => {},
    write: () => !stalled,
    pause: () => {},
    resume: () => {},
    end: (onFinished) => onFinished?.(),
    destroy: () => {}
  }
  const core = new ConnectionCore(pipe, {
    config,
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
    const frames = (stalled as unknown as { channels: Array<{ frames: Array<Uint8Array | undefined> }> })
      .channels[1]!.frames
    for (const frame of frames) if (frame !== undefined) held.add(frame.buffer)
    let bytes = 0
    for (const buffer of held) bytes += buffer.byteLength
    assert.isBelow(bytes, 2 * queued.bytes, `${queued.bytes} bytes queued hold ${bytes} bytes of buffers`)
  })
})
