import * as zlib from "node:zlib"
import { assert, describe, it } from "@effect/vitest"
import * as Either from "effect/Either"
import * as fc from "effect/FastCheck"
import { Frame, type WireError } from "../src/index.js"

type Malformed = WireError.Malformed

import { hex } from "./fixtures/plain.js"

/** `n` bytes that deflate about 2 to 3 times, as real payloads do: a small alphabet, no long runs. */
const compressible = (n: number): Uint8Array => {
  const out = new Uint8Array(n)
  let x = 12345
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0
    out[i] = 97 + ((x >>> 16) % 8)
  }
  return out
}

const limits: Frame.FrameLimits = {
  maxFrameBytes: 4096,
  maxDecompressedBytes: 16_384,
  maxMessagesPerFrame: 64
}

const frameArb = fc.record({
  channel: fc.integer({ min: 0, max: 255 }),
  messages: fc.array(fc.uint8Array({ minLength: 1, maxLength: 300 }), { minLength: 1, maxLength: 8 })
})

const encodeAll = (frames: ReadonlyArray<Frame.Frame>, options?: Frame.EncodeOptions): Uint8Array =>
  Buffer.concat(frames.map((f) => Either.getOrThrow(Frame.encode(f, options))))

const show = (frames: ReadonlyArray<Frame.Frame>) =>
  frames.map((f) => ({ channel: f.channel, messages: f.messages.map(hex) }))

/** Feeds `stream` cut at `cuts` and collects frames, failing on any error. */
const decodeChunks = (stream: Uint8Array, cuts: ReadonlyArray<number>, l = limits) => {
  const decoder = new Frame.FrameDecoder(l)
  const out: Array<Frame.Frame> = []
  let at = 0
  for (const cut of [...cuts, stream.length]) {
    const error = decoder.push(stream.subarray(at, cut), (f) => out.push(f))
    if (error) throw new Error(`unexpected ${error._tag}: ${error.message}`)
    at = cut
  }
  assert.strictEqual(decoder.bufferedBytes, 0)
  return out
}

describe("Frame", () => {
  it.prop("decode(encode(frame)) gives the frame back", [frameArb], ([frame]) => {
    const bytes = Either.getOrThrow(Frame.encode(frame, limits))
    assert.deepStrictEqual(show([Either.getOrThrow(Frame.decode(bytes, limits))]), show([frame]))
  })

  it.prop(
    "measure, sizeOf and encodeInto agree with encode: frames built one after another in one buffer are encode's bytes",
    [fc.array(frameArb, { minLength: 1, maxLength: 6 })],
    ([frames]) => {
      const sizes = frames.map((f) => Frame.sizeOf(f.messages))
      assert.deepStrictEqual(
        frames.map((f) => Either.getOrThrow(Frame.measure(f, limits))),
        frames.map((f) => Either.getOrThrow(Frame.encode(f, limits)).length)
      )
      const out = Buffer.alloc(sizes.reduce((a, b) => a + b, 0) + 3)
      let at = 3
      for (const f of frames) at = Frame.encodeInto(out, at, f.channel, f.messages)
      assert.strictEqual(at, out.length)
      assert.strictEqual(hex(out.subarray(3)), hex(encodeAll(frames)))
    }
  )

  it.prop(
    "the incremental decoder gives the same frames for every split of a stream",
    [
      fc.array(frameArb, { minLength: 1, maxLength: 6 }),
      fc.array(fc.integer({ min: 0, max: 1 << 16 }), { maxLength: 12 })
    ],
    ([frames, rawCuts]) => {
      const stream = encodeAll(frames)
      const cuts = [...new Set(rawCuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b)
      assert.deepStrictEqual(show(decodeChunks(stream, cuts)), show(frames))
    }
  )

  it("gives the same frames when a stream is cut at every single position, and byte by byte", () => {
    const frames = [
      { channel: 0, messages: [Uint8Array.of(1), Uint8Array.of(2, 3)] },
      { channel: 7, messages: [new Uint8Array(200).fill(9)] },
      { channel: 255, messages: [Uint8Array.of(4)] }
    ]
    const stream = encodeAll(frames)
    const expected = show(frames)
    for (let cut = 0; cut <= stream.length; cut++) {
      assert.deepStrictEqual(show(decodeChunks(stream, [cut])), expected, `cut at ${cut}`)
    }
    const everyByte = Array.from({ length: stream.length - 1 }, (_, i) => i + 1)
    assert.deepStrictEqual(show(decodeChunks(stream, everyByte)), expected)
  })

  it("passes a frame at exactly the size limit and refuses one byte over", () => {
    // One message: body = count(1) + length varint(2) + n bytes.
    const atLimit = { channel: 1, messages: [new Uint8Array(limits.maxFrameBytes - 3)] }
    const bytes = Either.getOrThrow(Frame.encode(atLimit, limits))
    assert.strictEqual(bytes.length, Frame.HEADER_BYTES + limits.maxFrameBytes)
    assert.strictEqual(decodeChunks(bytes, [100]).length, 1)
    const over = { channel: 1, messages: [new Uint8Array(limits.maxFrameBytes - 2)] }
    const refused = Frame.encode(over, limits)
    assert.isTrue(Either.isLeft(refused) && refused.left._tag === "FrameTooLarge")
    // The receiver refuses it too, from the header alone.
    const big = Either.getOrThrow(Frame.encode(over))
    const error = new Frame.FrameDecoder(limits).push(big.subarray(0, Frame.HEADER_BYTES), () =>
      assert.fail()
    )
    assert.strictEqual(error?._tag, "FrameTooLarge")
    assert.strictEqual((error as any).size, limits.maxFrameBytes + 1)
  })

  it("refuses a 4 GiB length prefix on the header, without waiting for or allocating the body", () => {
    const header = Uint8Array.of(1, 3, 0, 0, 0xff, 0xff, 0xff, 0xff)
    const decoder = new Frame.FrameDecoder()
    const before = process.memoryUsage().arrayBuffers
    const error = decoder.push(header, () => assert.fail("no frame"))
    assert.strictEqual(error?._tag, "FrameTooLarge")
    assert.strictEqual((error as any).size, 2 ** 32 - 1)
    assert.isBelow(process.memoryUsage().arrayBuffers - before, 1024 * 1024)
    assert.strictEqual(decoder.bufferedBytes, 0)
  })

  it("refuses an unknown version, unknown flags and a non-zero reserved byte", () => {
    const good = Either.getOrThrow(Frame.encode({ channel: 2, messages: [Uint8Array.of(1)] }))
    const withByte = (i: number, v: number) => {
      const copy = Uint8Array.from(good)
      copy[i] = v
      return copy
    }
    assert.strictEqual(new Frame.FrameDecoder().push(withByte(0, 2), () => {})?._tag, "UnknownVersion")
    const flags = Frame.decode(withByte(2, 0x80))
    assert.isTrue(Either.isLeft(flags) && flags.left._tag === "Malformed" && /flag/.test(flags.left.reason))
    const reserved = Frame.decode(withByte(3, 1))
    assert.isTrue(Either.isLeft(reserved) && /reserved/.test((reserved.left as any).reason))
  })

  it("refuses a batch that declares no messages, too many, or more than its bytes can hold", () => {
    const frameOf = (body: ReadonlyArray<number>) => {
      const header = Buffer.from([1, 0, 0, 0, 0, 0, 0, 0])
      header.writeUInt32BE(body.length, 4)
      return new Uint8Array([...header, ...body])
    }
    for (const [body, pattern] of [
      [[0], /at least one/],
      [[65, 1, 1], /exceed the limit/],
      [[3, 1, 1], /cannot fit/],
      [[1, 5, 1], /exceeds the 1 bytes left/],
      [[1, 0], /empty/],
      [[1, 1, 1, 9], /trailing/]
    ] as const) {
      const result = Frame.decode(frameOf(body), limits)
      assert.isTrue(Either.isLeft(result), `body ${body}`)
      if (Either.isLeft(result)) assert.match((result.left as any).reason, pattern)
    }
  })

  it("compresses large batches only, and inflates them back", () => {
    const small = Either.getOrThrow(
      Frame.encode({ channel: 1, messages: [new Uint8Array(100)] }, { compression: "deflate" })
    )
    assert.strictEqual(small[2], 0, "small frames are never compressed")
    const payload = compressible(100_000)
    const big = Either.getOrThrow(
      Frame.encode(
        { channel: 3, messages: [payload] },
        { compression: "deflate", compressionThreshold: 1024 }
      )
    )
    assert.strictEqual(big[2], Frame.Flags.deflate)
    assert.isBelow(big.length, 60_000)
    const frame = Either.getOrThrow(Frame.decode(big))
    assert.strictEqual(hex(frame.messages[0]!), hex(payload))
    assert.isTrue(frame.compressed)
  })

  it("sends a body that would inflate beyond maxInflationRatio as it is, and refuses one that does", () => {
    // 100 kB of one byte deflates about 600 times: a receiver would take it for a bomb.
    const zeros = new Uint8Array(100_000).fill(42)
    const plainFrame = Either.getOrThrow(
      Frame.encode({ channel: 3, messages: [zeros] }, { compression: "deflate", compressionThreshold: 1024 })
    )
    assert.strictEqual(plainFrame[2], 0, "not deflated")
    const deflated = Either.getOrThrow(
      Frame.encode(
        { channel: 3, messages: [zeros] },
        { compression: "deflate", compressionThreshold: 1024, maxInflationRatio: 1000 }
      )
    )
    assert.strictEqual(deflated[2], Frame.Flags.deflate)
    const refused = Frame.decode(deflated)
    assert.isTrue(Either.isLeft(refused) && refused.left._tag === "DecompressedTooLarge")
    assert.isTrue(Either.isRight(Frame.decode(deflated, { ...Frame.defaultLimits, maxInflationRatio: 1000 })))
  })

  it("refuses a compressed frame on a channel that takes no compression", () => {
    const frame = Either.getOrThrow(
      Frame.encode(
        { channel: 1, messages: [compressible(10_000)] },
        { compression: "deflate", compressionThreshold: 1024 }
      )
    )
    assert.strictEqual(frame[2], Frame.Flags.deflate)
    const only4 = { ...Frame.defaultLimits, compressedChannels: new Set([4]) }
    const refused = Frame.decode(frame, only4)
    assert.isTrue(Either.isLeft(refused) && /takes no compression/.test((refused.left as Malformed).reason))
    const onChannel4 = Buffer.from(frame)
    onChannel4[1] = 4
    assert.isTrue(Either.isRight(Frame.decode(onChannel4, only4)))
  })

  it("checks the declared inflated size before inflating, and stops a deflate bomb at it", () => {
    const bomb = zlib.deflateRawSync(new Uint8Array(10 * 1024 * 1024))
    const frameWith = (declared: number) => {
      const varint: Array<number> = []
      for (let v = declared; ; v = Math.floor(v / 128)) {
        if (v < 128) {
          varint.push(v)
          break
        }
        varint.push((v & 0x7f) | 0x80)
      }
      const body = Buffer.concat([Buffer.from(varint), bomb])
      const header = Buffer.from([1, 4, Frame.Flags.deflate, 0, 0, 0, 0, 0])
      header.writeUInt32BE(body.length, 4)
      return Buffer.concat([header, body])
    }
    const tooBig = Frame.decode(frameWith(limits.maxDecompressedBytes + 1), {
      ...limits,
      maxFrameBytes: 1 << 20
    })
    assert.isTrue(Either.isLeft(tooBig) && tooBig.left._tag === "DecompressedTooLarge")
    const lying = Frame.decode(frameWith(1000), { ...limits, maxFrameBytes: 1 << 20 })
    assert.isTrue(
      Either.isLeft(lying) &&
        lying.left._tag === "Malformed" &&
        /more than the declared/.test(lying.left.reason)
    )
    const garbage = Buffer.from([1, 4, 1, 0, 0, 0, 0, 4, 3, 0xff, 0xff, 0xff])
    const invalid = Frame.decode(garbage)
    assert.isTrue(Either.isLeft(invalid) && /deflate/.test((invalid.left as any).reason))
  })

  it("refuses bytes after the end of the deflate stream", () => {
    const frame = Either.getOrThrow(
      Frame.encode(
        { channel: 3, messages: [compressible(5000)] },
        { compression: "deflate", compressionThreshold: 100 }
      )
    )
    const junk = Buffer.concat([frame, Buffer.from("deadbeef", "hex")])
    junk.writeUInt32BE(junk.length - Frame.HEADER_BYTES, 4)
    assert.isTrue(Either.isRight(Frame.decode(frame)))
    const result = Frame.decode(junk)
    assert.isTrue(
      Either.isLeft(result) && /after the end of the deflate stream/.test((result.left as any).reason)
    )
  })

  it("refuses to compress a batch larger than the receiver would inflate", () => {
    const result = Frame.encode(
      { channel: 4, messages: [new Uint8Array(20_000)] },
      { compression: "deflate", compressionThreshold: 100, maxDecompressedBytes: 10_000 }
    )
    assert.isTrue(Either.isLeft(result) && result.left._tag === "DecompressedTooLarge")
  })

  it("stays failed after an error: a corrupted stream is not resynchronised", () => {
    const decoder = new Frame.FrameDecoder(limits)
    const first = decoder.push(Uint8Array.of(9, 0, 0, 0, 0, 0, 0, 1, 0), () => assert.fail())
    assert.strictEqual(first?._tag, "UnknownVersion")
    const good = Either.getOrThrow(Frame.encode({ channel: 0, messages: [Uint8Array.of(1)] }))
    assert.strictEqual(
      decoder.push(good, () => assert.fail("no frames after an error")),
      first
    )
  })

  it("refuses to encode frames a receiver would refuse", () => {
    for (const frame of [
      { channel: 256, messages: [Uint8Array.of(1)] },
      { channel: -1, messages: [Uint8Array.of(1)] },
      { channel: 0, messages: [] },
      { channel: 0, messages: [new Uint8Array(0)] },
      { channel: 0, messages: new Array(65).fill(Uint8Array.of(1)) },
      { channel: 0, messages: [new Uint8Array(limits.maxFrameBytes)] }
    ]) {
      assert.isTrue(Either.isLeft(Frame.encode(frame, limits)), JSON.stringify(frame.channel))
      assert.deepStrictEqual(
        Frame.measure(frame, limits),
        Either.map(Frame.encode(frame, limits), (b) => b.length)
      )
    }
  })
})

describe("FrameDecoder and compressed frames", () => {
  const encode = (channel: number, message: Uint8Array, compression: "none" | "deflate" = "none") =>
    Either.getOrThrow(
      Frame.encode({ channel, messages: [message] }, { compression, compressionThreshold: 1024 })
    )
  const small = (byte: number) => new Uint8Array([byte, byte, byte])

  it("inflates a large body off the event loop and holds the frames behind it, in order", async () => {
    const big = compressible(200_000)
    const stream = Buffer.concat([encode(4, small(1)), encode(4, big, "deflate"), encode(4, small(2))])
    const seen: Array<string> = []
    const holds: Array<boolean> = []
    let released!: () => void
    const done = new Promise<void>((resolve) => {
      released = resolve
    })
    const decoder = new Frame.FrameDecoder(Frame.defaultLimits, {
      asyncInflateAbove: 64 * 1024,
      onHold: (held) => {
        holds.push(held)
        if (!held) released()
      },
      onError: (e) => seen.push(`error ${e._tag}`)
    })
    const onFrame = (frame: Frame.Frame) =>
      seen.push(
        frame.messages[0]!.length === 3 ? `small ${frame.messages[0]![0]}` : `big ${frame.compressed}`
      )
    assert.isUndefined(decoder.push(stream, onFrame))
    assert.deepStrictEqual(seen, ["small 1"], "the frame after the large one waits for it")
    assert.isTrue(decoder.held)
    // More bytes while held are buffered, not decoded.
    assert.isUndefined(decoder.push(encode(4, small(3)), onFrame))
    assert.deepStrictEqual(seen, ["small 1"])
    await done
    assert.deepStrictEqual(seen, ["small 1", "big true", "small 2", "small 3"])
    assert.deepStrictEqual(holds, [true, false])
    assert.isFalse(decoder.held)
  })

  it("asks admitCompressed with the declared size before inflating, and drops what it refuses", () => {
    const body = compressible(100_000)
    const asked: Array<[number, number]> = []
    const decoder = new Frame.FrameDecoder(Frame.defaultLimits)
    decoder.admitCompressed = (channel, bytes) => {
      asked.push([channel, bytes])
      return false
    }
    const seen: Array<number> = []
    const error = decoder.push(Buffer.concat([encode(4, body, "deflate"), encode(4, small(9))]), (f) =>
      seen.push(f.messages[0]!.length)
    )
    assert.isUndefined(error)
    assert.deepStrictEqual(seen, [3], "the refused frame is dropped uninflated; the next one passes")
    assert.strictEqual(asked.length, 1)
    assert.strictEqual(asked[0]![0], 4)
    assert.isAtLeast(asked[0]![1], body.length, "charged its inflated size, not its smaller wire size")
  })

  it("reports an error found after an async inflation to onError, and stops", async () => {
    const stream = Buffer.concat([
      encode(4, compressible(200_000), "deflate"),
      Buffer.from([9, 9, 9, 9, 9, 9, 9, 9])
    ])
    const errors: Array<string> = []
    let released!: () => void
    const done = new Promise<void>((resolve) => {
      released = resolve
    })
    const decoder = new Frame.FrameDecoder(Frame.defaultLimits, {
      asyncInflateAbove: 1024,
      onHold: (held) => held || released(),
      onError: (e) => errors.push(e._tag)
    })
    const frames: Array<Frame.Frame> = []
    assert.isUndefined(decoder.push(stream, (f) => frames.push(f)))
    await done
    assert.strictEqual(frames.length, 1)
    assert.deepStrictEqual(errors, ["UnknownVersion"])
    assert.isDefined(
      decoder.push(encode(4, small(1)), (f) => frames.push(f)),
      "the stream stays failed"
    )
  })
})
