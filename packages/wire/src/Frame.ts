/**
 * Frames: the unit a connection carries. An 8-byte header (version, channel, flags, body length)
 * and a body holding a batch of messages (opaque bytes: usually encoded envelopes), optionally
 * deflated when large. `FrameDecoder` turns a byte stream cut at arbitrary points into whole frames,
 * checking every declared size against its limits before allocating for it. Only a frame that
 * arrives split across chunks is copied (once, into one buffer); others are decoded in place.
 */
import * as zlib from "node:zlib"
import * as Either from "effect/Either"
import { DecodeFailure, fromFailure, gather, Reader, u32Size, Writer } from "./internal/binary.js"
import {
  DecompressedTooLarge,
  type FrameError,
  FrameTooLarge,
  Malformed,
  UnknownVersion
} from "./WireError.js"

export const VERSION = 1
export const SUPPORTED_VERSIONS: ReadonlyArray<number> = [VERSION]
export const HEADER_BYTES = 8

/** Header flag bits. Any other bit set is refused. */
export const Flags = {
  /** The body is raw DEFLATE (RFC 1951), preceded by its inflated length as a varint. */
  deflate: 0x01
} as const
const KNOWN_FLAGS = Flags.deflate

/** A frame: messages on one channel, in order. */
export interface Frame {
  readonly channel: number
  readonly messages: ReadonlyArray<Uint8Array>
  /**
   * Set on a decoded frame that came compressed: its bytes were charged to the sender (through the
   * decoder's `admitCompressed`) before it was inflated.
   */
  readonly compressed?: true
}

/**
 * A message written by the frame itself when the frame is built: `length` bytes, which `writeTo` puts
 * at `offset` in `target`. A sender that would otherwise encode a message into a buffer of its own,
 * only for the frame to copy it, hands this instead (see `Codec.encodeLater`). `writeTo` must write
 * exactly `length` bytes and must not throw.
 */
export interface Deferred {
  readonly length: number
  readonly writeTo: (target: Buffer, offset: number) => void
  /**
   * Checks again, just before the frame is built, that the message is still what was checked:
   * false if it changed since (it is then left out of the frame, never sent). A frame builder that
   * calls it and then `writeTo` with no code in between writes exactly what it verified.
   */
  readonly verify?: () => boolean
}

/** A message to send: its bytes, or a `Deferred` that writes them into the frame. */
export type Outbound = Uint8Array | Deferred

/** A frame to send. */
export interface OutboundFrame {
  readonly channel: number
  readonly messages: ReadonlyArray<Outbound>
}

/** Writes `message`, length-prefixed, at the writer's position. */
const writeMessage = (writer: Writer, message: Outbound): void => {
  if (message instanceof Uint8Array) {
    writer.lengthPrefixed(message)
    return
  }
  writer.u32(message.length)
  message.writeTo(writer.buf, writer.pos)
  writer.pos += message.length
}

/** Limits a decoder enforces; all sizes in bytes. */
export interface FrameLimits {
  /** Largest body (after the header, as sent) accepted. */
  readonly maxFrameBytes: number
  /** Largest body once inflated, for compressed frames. */
  readonly maxDecompressedBytes: number
  /** Most messages in one frame. */
  readonly maxMessagesPerFrame: number
  /**
   * Largest ratio of a compressed body's inflated size to its size on the wire (default
   * `defaultMaxInflationRatio`): a small frame cannot make this node inflate a large one.
   */
  readonly maxInflationRatio?: number
  /** The channels whose frames may come compressed; a compressed frame elsewhere is malformed. Default: all. */
  readonly compressedChannels?: ReadonlySet<number>
}

/** Real payloads (blocks, certificates) deflate 1.3 to 3 times; a zeroed megabyte, a thousand. */
export const defaultMaxInflationRatio = 64

export const defaultLimits: FrameLimits = {
  maxFrameBytes: 16 * 1024 * 1024,
  maxDecompressedBytes: 64 * 1024 * 1024,
  maxMessagesPerFrame: 4096
}

export interface EncodeOptions {
  /** Deflate bodies of at least `compressionThreshold` bytes; never smaller ones (votes don't shrink). */
  readonly compression?: "none" | "deflate"
  readonly compressionThreshold?: number
  /** Refuse to build a frame the receiver would refuse. */
  readonly maxFrameBytes?: number
  readonly maxDecompressedBytes?: number
  readonly maxMessagesPerFrame?: number
  /** A body that deflates beyond this ratio is sent as it is (a receiver would refuse it deflated). */
  readonly maxInflationRatio?: number
  /**
   * Where the frame's bytes go: a Buffer of exactly `size` bytes the frame may keep (default:
   * `Buffer.allocUnsafe`, which carves small ones from Node's shared 8 KiB pool). A connection
   * queueing frames for a peer that is not reading passes its own, so that they keep no shared
   * memory alive. A compressed frame is built in a new `Buffer.allocUnsafe` of its size.
   */
  readonly allocate?: (size: number) => Buffer
}

export const defaultCompressionThreshold = 64 * 1024

const batchSize = (messages: ReadonlyArray<Outbound>): number => {
  let size = u32Size(messages.length)
  for (let i = 0; i < messages.length; i++) size += u32Size(messages[i]!.length) + messages[i]!.length
  return size
}

const writeHeader = (out: Buffer, at: number, channel: number, flags: number, length: number): void => {
  out[at] = VERSION
  out[at + 1] = channel
  out[at + 2] = flags
  out[at + 3] = 0
  out.writeUInt32BE(length, at + 4)
}

/** A batch's body size, or why no receiver would take it: a channel outside 0..255, no messages, an empty message, too many. */
const bodySize = (frame: OutboundFrame, maxMessages: number): number | Malformed => {
  const { channel, messages } = frame
  if (!Number.isInteger(channel) || channel < 0 || channel > 255) {
    return malformed(1, `channel must be an integer in 0..255, got ${channel}`)
  }
  if (messages.length === 0 || messages.length > maxMessages) {
    return malformed(HEADER_BYTES, `a frame carries 1 to ${maxMessages} messages, got ${messages.length}`)
  }
  for (let i = 0; i < messages.length; i++) {
    if (messages[i]!.length === 0) return malformed(HEADER_BYTES, `message ${i} is empty`)
  }
  return batchSize(messages)
}

/**
 * What `encode` without compression would make of `frame`, without making it: its size in bytes
 * (header included), or the error `encode` would return. A sender that builds the frame later (joined
 * with others) refuses a bad one at once with this.
 */
export const measure = (
  frame: OutboundFrame,
  options: EncodeOptions = {}
): Either.Either<number, FrameTooLarge | Malformed> => {
  const size = bodySize(frame, options.maxMessagesPerFrame ?? defaultLimits.maxMessagesPerFrame)
  if (typeof size !== "number") return Either.left(size)
  const limit = options.maxFrameBytes ?? defaultLimits.maxFrameBytes
  if (size > limit) return Either.left(new FrameTooLarge({ channel: frame.channel, size, limit }))
  return Either.right(HEADER_BYTES + size)
}

/** The size of the uncompressed frame of `messages`, header included (what `encodeInto` writes). */
export const sizeOf = (messages: ReadonlyArray<Outbound>): number => HEADER_BYTES + batchSize(messages)

/**
 * Writes the uncompressed frame of `messages` on `channel` into `target` at `offset`, and returns
 * where it ends. For messages already checked (`measure`), into a buffer the caller sized with
 * `sizeOf`: a sender building several frames into one buffer, for one write.
 */
export const encodeInto = (
  target: Buffer,
  offset: number,
  channel: number,
  messages: ReadonlyArray<Outbound>
): number => {
  const writer = new Writer(target)
  writer.pos = offset + HEADER_BYTES
  writer.u32(messages.length)
  for (let i = 0; i < messages.length; i++) writeMessage(writer, messages[i]!)
  writeHeader(target, offset, channel, 0, writer.pos - offset - HEADER_BYTES)
  return writer.pos
}

/**
 * Encodes a frame: header and batch, deflated if asked and if it helps. Refuses what a receiver with
 * the same limits would refuse: a channel outside 0..255, no messages, an empty message, too many.
 */
export const encode = (
  frame: OutboundFrame,
  options: EncodeOptions = {}
): Either.Either<Uint8Array, FrameTooLarge | DecompressedTooLarge | Malformed> => {
  const { channel, messages } = frame
  const limit = options.maxFrameBytes ?? defaultLimits.maxFrameBytes
  const size = bodySize(frame, options.maxMessagesPerFrame ?? defaultLimits.maxMessagesPerFrame)
  if (typeof size !== "number") return Either.left(size)
  const compress =
    options.compression === "deflate" && size >= (options.compressionThreshold ?? defaultCompressionThreshold)
  if (!compress && size > limit) return Either.left(new FrameTooLarge({ channel, size, limit }))
  const out =
    options.allocate === undefined
      ? Buffer.allocUnsafe(HEADER_BYTES + size)
      : options.allocate(HEADER_BYTES + size)
  const writer = new Writer(out)
  writer.pos = HEADER_BYTES
  writer.u32(messages.length)
  for (let i = 0; i < messages.length; i++) writeMessage(writer, messages[i]!)
  if (compress && size > (options.maxDecompressedBytes ?? defaultLimits.maxDecompressedBytes)) {
    return Either.left(
      new DecompressedTooLarge({
        channel,
        size,
        limit: options.maxDecompressedBytes ?? defaultLimits.maxDecompressedBytes
      })
    )
  }
  if (compress) {
    const deflated = zlib.deflateRawSync(out.subarray(HEADER_BYTES), { level: 1 })
    const body = u32Size(size) + deflated.length
    // Deflated only where it helps and a receiver would inflate it (within its ratio).
    if (body < size && size <= (options.maxInflationRatio ?? defaultMaxInflationRatio) * body) {
      if (body > limit) return Either.left(new FrameTooLarge({ channel, size: body, limit }))
      const packed = Buffer.allocUnsafe(HEADER_BYTES + body)
      writeHeader(packed, 0, channel, Flags.deflate, body)
      const w = new Writer(packed)
      w.pos = HEADER_BYTES
      w.u32(size)
      w.bytes(deflated)
      return Either.right(packed)
    }
    if (size > limit) return Either.left(new FrameTooLarge({ channel, size, limit }))
  }
  writeHeader(out, 0, channel, 0, size)
  return Either.right(out)
}

const malformed = (offset: number, reason: string) =>
  new Malformed({ what: "Frame", path: "", offset, reason })

/** Checks a header; returns the body length or an error. */
const checkHeader = (header: Uint8Array, limits: FrameLimits): Either.Either<number, FrameError> => {
  const version = header[0]!
  if (version !== VERSION) return Either.left(new UnknownVersion({ version, supported: SUPPORTED_VERSIONS }))
  const flags = header[2]!
  if ((flags & ~KNOWN_FLAGS) !== 0)
    return Either.left(malformed(2, `unknown flag bits 0x${flags.toString(16)}`))
  if (header[3] !== 0) return Either.left(malformed(3, "reserved header byte must be 0"))
  if ((flags & Flags.deflate) !== 0 && limits.compressedChannels?.has(header[1]!) === false) {
    return Either.left(malformed(2, `compressed frame on channel ${header[1]}, which takes no compression`))
  }
  const length = ((header[4]! << 24) >>> 0) + (header[5]! << 16) + (header[6]! << 8) + header[7]!
  if (length > limits.maxFrameBytes) {
    return Either.left(new FrameTooLarge({ channel: header[1]!, size: length, limit: limits.maxFrameBytes }))
  }
  return Either.right(length)
}

const readBatch = (body: Uint8Array, limits: FrameLimits): Array<Uint8Array> => {
  const reader = new Reader(body, 0, body.length)
  const count = reader.u32()
  if (count === 0) throw new DecodeFailure(0, "a frame carries at least one message")
  if (count > limits.maxMessagesPerFrame) {
    throw new DecodeFailure(0, `${count} messages exceed the limit of ${limits.maxMessagesPerFrame}`)
  }
  if (count > reader.remaining)
    throw new DecodeFailure(0, `${count} messages cannot fit in ${reader.remaining} bytes`)
  const messages = new Array<Uint8Array>(count)
  for (let i = 0; i < count; i++) {
    const at = reader.pos
    const message = reader.lengthPrefixed(0xffffffff) // bounded by the bytes left
    if (message.length === 0) throw new DecodeFailure(at, `message ${i} is empty`)
    messages[i] = message
  }
  if (reader.remaining !== 0)
    throw new DecodeFailure(reader.pos, `${reader.remaining} trailing bytes after the batch`)
  return messages
}

/** A compressed body's inflated size as it declares it, and where its deflate stream starts. */
interface Compressed {
  readonly declared: number
  readonly deflated: Uint8Array
}

/** Reads and checks a compressed body's declared size against the size and ratio limits. */
const compressedBody = (
  channel: number,
  body: Uint8Array,
  limits: FrameLimits
): Either.Either<Compressed, FrameError> => {
  let declared: number
  let at: number
  try {
    const reader = new Reader(body, 0, body.length)
    declared = reader.u32()
    at = reader.pos
  } catch (e) {
    if (e instanceof DecodeFailure) return Either.left(malformed(HEADER_BYTES, e.reason))
    throw e
  }
  const ratioLimit = (limits.maxInflationRatio ?? defaultMaxInflationRatio) * body.length
  const limit = Math.min(limits.maxDecompressedBytes, ratioLimit)
  if (declared > limit) return Either.left(new DecompressedTooLarge({ channel, size: declared, limit }))
  return Either.right({ declared, deflated: body.subarray(at) })
}

/** What zlib gave for a compressed body (sync or async), checked against what the body declared. */
const inflated = (
  channel: number,
  body: Compressed,
  result: { readonly buffer: Buffer; readonly engine: { readonly bytesWritten: number } } | Error,
  limits: FrameLimits
): Either.Either<Frame, FrameError> => {
  const { declared, deflated } = body
  const start = HEADER_BYTES + u32Size(declared)
  if (result instanceof Error) {
    return Either.left(
      (result as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE"
        ? malformed(HEADER_BYTES, `inflates to more than the declared ${declared} bytes`)
        : malformed(HEADER_BYTES, `invalid deflate data: ${result.message}`)
    )
  }
  const consumed = result.engine.bytesWritten
  if (consumed !== deflated.length) {
    return Either.left(
      malformed(start + consumed, `${deflated.length - consumed} bytes after the end of the deflate stream`)
    )
  }
  if (result.buffer.length !== declared) {
    return Either.left(
      malformed(HEADER_BYTES, `inflates to ${result.buffer.length} bytes, declared ${declared}`)
    )
  }
  return batch(channel, result.buffer, limits, true)
}

/** A body's batch as a frame; `compressed` marks one that was inflated. */
const batch = (
  channel: number,
  body: Uint8Array,
  limits: FrameLimits,
  compressed: boolean
): Either.Either<Frame, FrameError> => {
  try {
    const messages = readBatch(body, limits)
    return Either.right(compressed ? { channel, messages, compressed: true } : { channel, messages })
  } catch (e) {
    if (e instanceof DecodeFailure) {
      const error = fromFailure("Frame", e)
      return Either.left(new Malformed({ ...error, offset: error.offset + HEADER_BYTES }))
    }
    throw e
  }
}

// maxOutputLength stops a deflate bomb at the declared size instead of after it; `info` gives how
// much of the input the stream used (bytes after its end are refused).
// A small body gets a small output chunk: zlib's default (16 KiB) would be allocated for any frame.
const inflateOptions = (declared: number) => ({
  maxOutputLength: Math.max(declared, 1),
  chunkSize: Math.max(64, Math.min(declared, 16 * 1024)),
  info: true
})

type InflateResult = { readonly buffer: Buffer; readonly engine: { readonly bytesWritten: number } }

const inflateNow = (body: Compressed): InflateResult | Error => {
  try {
    return zlib.inflateRawSync(body.deflated, inflateOptions(body.declared)) as unknown as InflateResult
  } catch (e) {
    return e instanceof Error ? e : new Error(String(e))
  }
}

/** Decodes one frame's body (after a checked header), inflating a compressed one in place. */
const decodeBody = (
  channel: number,
  flags: number,
  body: Uint8Array,
  limits: FrameLimits
): Either.Either<Frame, FrameError> => {
  if ((flags & Flags.deflate) === 0) return batch(channel, body, limits, false)
  return Either.flatMap(compressedBody(channel, body, limits), (compressed) =>
    inflated(channel, compressed, inflateNow(compressed), limits)
  )
}

/** Decodes exactly one whole frame from `bytes`. */
export const decode = (
  bytes: Uint8Array,
  limits: FrameLimits = defaultLimits
): Either.Either<Frame, FrameError> => {
  if (bytes.length < HEADER_BYTES) return Either.left(malformed(bytes.length, "shorter than a frame header"))
  return Either.flatMap(checkHeader(bytes, limits), (length) =>
    HEADER_BYTES + length !== bytes.length
      ? Either.left(
          malformed(HEADER_BYTES, `header declares ${length} body bytes, got ${bytes.length - HEADER_BYTES}`)
        )
      : decodeBody(bytes[1]!, bytes[2]!, bytes.subarray(HEADER_BYTES), limits)
  )
}

/** What is left of `parts` after their first `n` bytes, as views. */
const after = (parts: ReadonlyArray<Uint8Array>, n: number): Array<Uint8Array> => {
  const out: Array<Uint8Array> = []
  for (const part of parts) {
    if (n >= part.length) n -= part.length
    else {
      out.push(n === 0 ? part : part.subarray(n))
      n = 0
    }
  }
  return out
}

/** How a `FrameDecoder` treats compressed frames, beyond its limits. */
export interface DecoderOptions {
  /**
   * Compressed bodies declared to inflate to more than this many bytes are inflated off the event
   * loop (zlib's thread pool): the decoder holds every byte after such a frame until it is done,
   * then goes on in order. Default: every body is inflated at once, in `push`.
   */
  readonly asyncInflateAbove?: number
  /** Told when the decoder starts (true) and stops (false) holding frames behind an inflation. */
  readonly onHold?: (held: boolean) => void
  /** An error found after `push` returned: in an inflated frame, or in the bytes held behind it. */
  readonly onError?: (error: FrameError) => void
}

/**
 * An incremental frame decoder for one byte stream. Feed it chunks as they arrive, cut anywhere;
 * it calls `onFrame` synchronously for each whole frame, in order. It holds at most one partial
 * frame (header plus a body within `maxFrameBytes`) beyond the chunk in hand. After an error the
 * stream cannot be resynchronised: every later `push` returns the same error.
 *
 * A compressed frame is checked (its channel, its declared size against `maxDecompressedBytes` and
 * `maxInflationRatio`), then offered to `admitCompressed` with what it costs before anything is
 * inflated: false drops it uninflated. A large one is inflated asynchronously when
 * `asyncInflateAbove` says so (see `DecoderOptions`).
 */
export class FrameDecoder {
  private parts: Array<Uint8Array> = []
  private buffered = 0
  /** Bytes needed before the next step: a header, or a header and its body. */
  private need = HEADER_BYTES
  private bodyLength = -1
  private error: FrameError | undefined
  /** An inflation is running off the event loop: bytes are only buffered until it is done. */
  private holding = false
  private onFrame: (frame: Frame) => void = () => {}
  /** Stopped (`discard`): an inflation that finishes later delivers nothing. */
  private discarded = false
  /**
   * Asked before a compressed body is inflated, with its channel and what it costs: its declared
   * inflated size (or its size on the wire, if larger). False drops the frame, uninflated.
   */
  admitCompressed: ((channel: number, bytes: number) => boolean) | undefined

  constructor(
    private limits: FrameLimits = defaultLimits,
    private readonly options: DecoderOptions = {}
  ) {}

  /**
   * Changes the limits for the frames after the current one: a connection decodes its handshake
   * under tight limits, then its traffic under the configured ones, from one stream.
   */
  setLimits(limits: FrameLimits): void {
    this.limits = limits
  }

  /** Bytes held waiting for the rest of a frame (or behind an inflation). */
  get bufferedBytes(): number {
    return this.buffered
  }

  /** Whether frames are held behind an inflation running off the event loop. */
  get held(): boolean {
    return this.holding
  }

  /** Stops for good: an inflation still running delivers nothing, and buffered bytes are let go. */
  discard(): void {
    this.discarded = true
    this.parts = []
    this.buffered = 0
  }

  push(chunk: Uint8Array, onFrame: (frame: Frame) => void): FrameError | undefined {
    if (this.error !== undefined) return this.error
    if (this.discarded || chunk.length === 0) return undefined
    this.parts.push(chunk)
    this.buffered += chunk.length
    this.onFrame = onFrame
    return this.holding ? undefined : this.drain()
  }

  /** Decodes whole frames from what is buffered, until a partial one, an error, or an async inflation. */
  private drain(): FrameError | undefined {
    while (this.buffered >= this.need) {
      if (this.bodyLength < 0) {
        // Check the header as soon as it is complete, before waiting for (or allocating) its body.
        const header =
          this.parts[0]!.length >= HEADER_BYTES ? this.parts[0]! : gather(this.parts, HEADER_BYTES)
        const checked = checkHeader(header, this.limits)
        if (Either.isLeft(checked)) return this.fail(checked.left)
        this.bodyLength = checked.right
        this.need = HEADER_BYTES + checked.right
        continue
      }
      const frameBytes = this.need
      // A frame within one chunk is decoded in place; one cut across chunks is copied, alone (the
      // bytes after it stay views of their chunk, not part of the copy).
      const single = this.parts.length === 1
      const buf = single ? this.parts[0]! : gather(this.parts, frameBytes)
      this.parts = single
        ? buf.length > frameBytes
          ? [buf.subarray(frameBytes)]
          : []
        : after(this.parts, frameBytes)
      this.buffered -= frameBytes
      this.need = HEADER_BYTES
      this.bodyLength = -1
      const channel = buf[1]!
      const body = buf.subarray(HEADER_BYTES, frameBytes)
      if ((buf[2]! & Flags.deflate) === 0) {
        const decoded = batch(channel, body, this.limits, false)
        if (Either.isLeft(decoded)) return this.fail(decoded.left)
        this.onFrame(decoded.right)
        continue
      }
      const checked = compressedBody(channel, body, this.limits)
      if (Either.isLeft(checked)) return this.fail(checked.left)
      const compressed = checked.right
      if (this.admitCompressed?.(channel, Math.max(compressed.declared, body.length)) === false) continue
      const above = this.options.asyncInflateAbove
      if (above !== undefined && compressed.declared > above) {
        this.inflateLater(channel, compressed)
        return undefined
      }
      const decoded = inflated(channel, compressed, inflateNow(compressed), this.limits)
      if (Either.isLeft(decoded)) return this.fail(decoded.left)
      this.onFrame(decoded.right)
    }
    return undefined
  }

  private inflateLater(channel: number, compressed: Compressed): void {
    this.holding = true
    this.options.onHold?.(true)
    const limits = this.limits
    zlib.inflateRaw(compressed.deflated, inflateOptions(compressed.declared), (error, result) => {
      if (this.discarded) return
      const decoded = inflated(channel, compressed, error ?? (result as unknown as InflateResult), limits)
      this.holding = false
      let failure: FrameError | undefined
      if (Either.isLeft(decoded)) failure = this.fail(decoded.left)
      else {
        this.onFrame(decoded.right)
        // The frame's consumer may have stopped the decoder, or the bytes behind it hold another.
        if (!this.discarded) failure = this.drain()
      }
      if (failure !== undefined) this.options.onError?.(failure)
      if (!this.holding) this.options.onHold?.(false)
    })
  }

  private fail(error: FrameError): FrameError {
    this.error = error
    this.parts = []
    this.buffered = 0
    return error
  }
}
