// The connection core shared by every transport: per-channel bounded outbound queues drained by
// priority and coalesced into few writes, a synchronous inbound frame decoder with a bounded queue
// that pauses the pipe when full, and the reserved control channel used by the handshake and the
// goodbye. Plain JavaScript on the pipe's callbacks: this is the hot path. Effect wraps it in
// connectionApi.ts; timers come in through `Timers`, backed by Effect's Clock.
import type { Identity } from "@hotstuff2/wire"
import { Frame } from "@hotstuff2/wire"
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import type { CloseReason, ConnectionStats, Direction, InboundFrame, SendError } from "../Transport.js"
import type { ChannelConfig, TransportConfig } from "../TransportConfig.js"
import { Backpressure, ConnectionClosed, UnknownChannel } from "../TransportError.js"
import { type Budget, unlimited } from "./budget.js"
import { encodeGoodbye } from "./handshake.js"
import { HANDSHAKE_FRAME_BYTES, type Pipe } from "./pipe.js"
import type { Timers } from "./timers.js"

/** Channel 255 carries the transport's own frames: handshake and goodbye. */
export const CONTROL_CHANNEL = 255

/**
 * Until the peer is authenticated, frames are small and never compressed: an unauthenticated client
 * must not make this node buffer megabytes or inflate anything.
 */
export const HANDSHAKE_LIMITS: Frame.FrameLimits = {
  maxFrameBytes: HANDSHAKE_FRAME_BYTES,
  maxDecompressedBytes: 0,
  maxMessagesPerFrame: 4
}

export type CoreError = SendError

/**
 * A queued send: its frame, or (while the pipe takes writes) its messages, which the flush joins with
 * the sends queued after them on the channel into one frame.
 */
type Queued = Uint8Array | ReadonlyArray<Frame.Outbound>

class ChannelQueue {
  items: Array<Queued> = []
  /** Each item's size as a frame of its own: what the byte budget counts. */
  sizes: Array<number> = []
  head = 0
  bytes = 0
  dropped = 0
  constructor(
    readonly config: ChannelConfig,
    private readonly budget: Budget
  ) {}

  get length(): number {
    return this.items.length - this.head
  }

  push(item: Queued, size: number): void {
    this.items.push(item)
    this.sizes.push(size)
    this.bytes += size
    this.budget.outbound += size
  }

  shift(): Queued {
    const item = this.items[this.head]!
    this.items[this.head] = undefined as unknown as Queued
    const size = this.sizes[this.head++]!
    this.bytes -= size
    this.budget.outbound -= size
    if (this.head === this.items.length) {
      // Empty: an idle connection keeps no backing store.
      this.items.length = 0
      this.sizes.length = 0
      this.head = 0
    } else if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head)
      this.sizes = this.sizes.slice(this.head)
      this.head = 0
    }
    return item
  }

  clear(): void {
    this.budget.outbound -= this.bytes
    this.items = []
    this.sizes = []
    this.head = 0
    this.bytes = 0
  }
}

/** A config's channels by id, and their rank in config order: made once per config, shared by its connections. */
interface ChannelTable {
  readonly byId: ReadonlyArray<ChannelConfig | undefined>
  readonly rank: ReadonlyArray<number>
  /** The channels configured with compression: a compressed frame elsewhere is a protocol error. */
  readonly compressed: ReadonlySet<number>
}

const tables = new WeakMap<TransportConfig, ChannelTable>()

/** A config's frame options: made once per config, shared by its connections. */
const frameOptionsOf = new WeakMap<TransportConfig, Frame.EncodeOptions>()

const frameOptionsFor = (config: TransportConfig): Frame.EncodeOptions => {
  let options = frameOptionsOf.get(config)
  if (options === undefined) {
    options = {
      maxFrameBytes: config.maxFrameBytes,
      maxMessagesPerFrame: config.maxMessagesPerFrame,
      compressionThreshold: config.compressionThreshold,
      maxInflationRatio: config.maxInflationRatio
    }
    frameOptionsOf.set(config, options)
  }
  return options
}

const channelTable = (config: TransportConfig): ChannelTable => {
  let table = tables.get(config)
  if (table === undefined) {
    const byId: Array<ChannelConfig | undefined> = []
    const rank: Array<number> = []
    config.channels.forEach((channel, i) => {
      byId[channel.id] = channel
      rank[channel.id] = i
    })
    for (let id = 0; id < byId.length; id++) byId[id] ??= undefined
    const compressed = new Set(config.channels.filter((c) => c.compression !== "none").map((c) => c.id))
    table = { byId, rank, compressed }
    tables.set(config, table)
  }
  return table
}

/** For a core made without a node budget: its own limits only. */
const UNLIMITED = unlimited()

const CONTROL_CONFIG: ChannelConfig = {
  id: CONTROL_CHANNEL,
  name: "control",
  priority: 0,
  maxQueuedFrames: 64,
  maxQueuedBytes: 1 << 20,
  overflow: "reject",
  compression: "none"
}

export interface CoreOptions {
  readonly config: TransportConfig
  readonly localPeer: Identity.PeerId
  readonly remoteAddress: string
  readonly direction: Direction
  readonly timers: Timers
  /** The node-wide memory budget shared with the transport's other connections (default: none). */
  readonly budget?: Budget
  /** A message queued on `channel` changed after `send` checked it, and was left out (never sent). */
  readonly onChanged?: (core: ConnectionCore, channel: number) => void
}

let nextId = 1

const OWN_CHUNK_BYTES = 16 * 1024

/** A frame of a write: built already, or to be built from sends queued as messages (`size` bytes). */
type Part =
  | Uint8Array
  | { readonly channel: number; readonly messages: ReadonlyArray<Frame.Outbound>; readonly size: number }

/** A frame built already and at least this big goes to the pipe as it is, not copied into the write's buffer. */
const SEPARATE_BYTES = 16 * 1024

/**
 * The chunks of one write: its frames, built one after another into one buffer. TLS encrypts one
 * buffer as it is, where it first copies several into one (and a socket takes one buffer as cheaply as
 * several). A frame built already of `SEPARATE_BYTES` or more is a chunk of its own rather than copied.
 */
const assemble = (parts: ReadonlyArray<Part>): Array<Uint8Array> => {
  if (parts.length === 1 && parts[0] instanceof Uint8Array) return [parts[0]]
  let packed = 0
  for (const part of parts) {
    if (!(part instanceof Uint8Array)) packed += part.size
    else if (part.length < SEPARATE_BYTES) packed += part.length
  }
  const out = Buffer.allocUnsafe(packed)
  const chunks: Array<Uint8Array> = []
  let pos = 0
  let from = 0
  for (const part of parts) {
    if (!(part instanceof Uint8Array)) pos = Frame.encodeInto(out, pos, part.channel, part.messages)
    else if (part.length < SEPARATE_BYTES) {
      out.set(part, pos)
      pos += part.length
    } else {
      if (pos > from) chunks.push(out.subarray(from, pos))
      from = pos
      chunks.push(part)
    }
  }
  if (pos > from) chunks.push(from === 0 && pos === packed ? out : out.subarray(from, pos))
  return chunks
}

/**
 * Sends joined into one frame stop at this size: the receiver decodes a frame once all of it is
 * there, so a bigger one would hold its first message back for longer.
 */
const JOIN_BYTES = 64 * 1024

/**
 * A `Backpressure` as cheap as it can be made: a sender that outruns its peer meets one per send
 * until the queue drains, and a validated, stack-capturing error costs about 5 us. Our own numbers
 * need no validation, and an expected, typed refusal needs no stack.
 */
const backpressure = (fields: ConstructorParameters<typeof Backpressure>[0]): Backpressure => {
  const limit = Error.stackTraceLimit
  Error.stackTraceLimit = 0
  try {
    return new Backpressure(fields, true)
  } finally {
    Error.stackTraceLimit = limit
  }
}

export class ConnectionCore {
  readonly id = nextId++
  /** Set by the handshake once the remote is authenticated. */
  remotePeer: Identity.PeerId = "" as Identity.PeerId
  state: "handshake" | "open" | "closing" | "closed" = "handshake"
  closeReason: CloseReason | undefined
  /** Receives control-channel messages (the handshake's, then goodbyes). */
  onControl: (message: Uint8Array) => void = () => {}
  private readonly closeListeners: Array<(reason: CloseReason) => void> = []

  // Outbound. Queues are made on a channel's first frame: most connections use few channels.
  private readonly table: ChannelTable
  private channels: Array<ChannelQueue | undefined> | undefined
  /** Per priority, the channels' queues in config order (round-robin within a level). */
  private readonly levels: Array<Array<ChannelQueue>> = []
  private readonly budget: Budget
  private readonly control: ChannelQueue
  private queuedFrames = 0
  private flushScheduled = false
  /** Whether the next turn's first frame is written at once (the last turn was no burst). */
  private writeFirst = true
  private blocked = false
  private readonly frameOptions: Frame.EncodeOptions
  /** The largest frame the flush builds by joining sends queued as messages (see `nextFrame`). */
  private readonly joinBytes: number
  /** Made the first time a frame waits for a blocked pipe (most connections never block). */
  private frameOptionsWhenBlocked: Frame.EncodeOptions | undefined
  /** Where frames queued while the pipe is blocked are built (see `carve`). */
  private own: { buffer: ArrayBuffer; offset: number } | undefined

  // Inbound.
  private readonly decoder: Frame.FrameDecoder
  private inbound: Array<InboundFrame> = []
  private inboundBytes = 0
  private waiter: ((frames: Array<InboundFrame> | undefined) => void) | undefined
  /** Takes frames in the data callback itself while none are queued (see `setReceiver`). */
  private receiver: ((frame: InboundFrame) => boolean) | undefined
  /** What the receiver threw, for `receive` to report. */
  receiverFailure: { readonly error: unknown } | undefined
  /**
   * A frame went to the queue: frames keep going there until the consumer calls `take` again with
   * nothing queued (it has handled every frame it took), so none overtakes a frame in its hands.
   */
  private receiverHeld = false
  private paused = false
  /** A compressed frame is being inflated off the event loop: the pipe is paused behind it. */
  private inflating = false
  /** The remote broke the protocol: nothing more of what it sends is read. */
  private violated = false

  // Counters.
  private framesSent = 0
  /** Sends handed to the pipe (several may share a frame). */
  private sendsWritten = 0
  private bytesSent = 0
  private framesReceived = 0
  private bytesReceived = 0
  private writes = 0
  private changedAfterSend = 0
  private cancelCloseTimer: (() => void) | undefined

  constructor(
    readonly pipe: Pipe,
    readonly options: CoreOptions
  ) {
    const { config } = options
    this.budget = options.budget ?? UNLIMITED
    this.control = new ChannelQueue(CONTROL_CONFIG, this.budget)
    this.table = channelTable(config)
    this.frameOptions = frameOptionsFor(config)
    this.joinBytes = Math.min(JOIN_BYTES, config.maxFrameBytes, config.maxDecompressedBytes)
    this.decoder = new Frame.FrameDecoder(HANDSHAKE_LIMITS, {
      asyncInflateAbove: config.maxInlineInflateBytes,
      onHold: (held) => {
        this.inflating = held
        if (held) this.pipe.pause()
        else if (this.state !== "closed") {
          this.wake()
          if (!this.paused) this.pipe.resume()
        }
      },
      onError: (error) => this.protocolError(`${error._tag}: ${error.message}`)
    })
    pipe.attach({
      data: (chunk) => this.onData(chunk),
      drain: () => {
        this.blocked = false
        this.flush()
      },
      close: (error) => this.onPipeClosed(error)
    })
  }

  get remoteAddress(): string {
    return this.options.remoteAddress
  }

  /** The handshake authenticated `peer`: traffic may flow, under the configured frame limits. */
  open(peer: Identity.PeerId): void {
    this.remotePeer = peer
    this.state = "open"
    const { config } = this.options
    this.pipe.opened?.(config.maxFrameBytes)
    this.decoder.setLimits({
      maxFrameBytes: config.maxFrameBytes,
      maxDecompressedBytes: config.maxDecompressedBytes,
      maxMessagesPerFrame: config.maxMessagesPerFrame,
      maxInflationRatio: config.maxInflationRatio,
      compressedChannels: this.table.compressed
    })
  }

  // ---- outbound ----

  private queueOf(channelId: number): ChannelQueue | undefined {
    const existing = this.channels?.[channelId]
    if (existing !== undefined) return existing
    const config = this.table.byId[channelId]
    if (config === undefined) return undefined
    const queue = new ChannelQueue(config, this.budget)
    this.channels ??= new Array(this.table.byId.length)
    this.channels[channelId] = queue
    const level = this.levels[config.priority] ?? []
    this.levels[config.priority] = level
    const rank = this.table.rank[channelId]!
    let at = level.length
    while (at > 0 && this.table.rank[level[at - 1]!.config.id]! > rank) at--
    level.splice(at, 0, queue)
    return queue
  }

  /** Queues one frame; returns an error instead of queueing when that is what the policy says. */
  send(channelId: number, messages: ReadonlyArray<Frame.Outbound>): CoreError | undefined {
    if (this.state !== "open") {
      return new ConnectionClosed({ peer: this.remotePeer, reason: this.closeReason?.reason ?? this.state })
    }
    const queue = channelId === CONTROL_CHANNEL ? undefined : this.queueOf(channelId)
    if (queue === undefined) return new UnknownChannel({ channel: channelId })
    const pending = this.blocked
      ? undefined
      : Frame.measure({ channel: channelId, messages }, this.frameOptions)
    let item: Queued
    let size: number
    if (pending !== undefined && Either.isRight(pending) && pending.right <= this.joinBytes) {
      // The pipe takes writes: the messages wait for the flush (at the latest, the end of this turn),
      // which joins them with the channel's sends after them into one frame.
      item = messages
      size = pending.right
    } else {
      // A small frame from Node's shared 8 KiB pool keeps the whole pool alive. One that will wait for
      // a blocked pipe is built in this connection's own buffers instead: a peer that stops reading
      // holds about what its queue counts (`maxQueuedBytes`), not a pool per frame.
      const encoded = Frame.encode(
        { channel: channelId, messages },
        this.optionsFor(queue, this.blocked ? this.whenBlocked() : this.frameOptions)
      )
      if (Either.isLeft(encoded)) return encoded.left
      item = encoded.right
      size = item.length
    }
    const { maxQueuedFrames, maxQueuedBytes, overflow } = queue.config
    const budget = this.budget
    if (budget.outbound + size > budget.maxOutbound) {
      // The node as a whole holds its budget: nothing of this connection's queue is dropped for it.
      if (overflow === "reject") {
        return backpressure({
          peer: this.remotePeer,
          channel: channelId,
          queuedFrames: queue.length,
          queuedBytes: budget.outbound,
          maxFrames: maxQueuedFrames,
          maxBytes: budget.maxOutbound,
          limit: "node"
        })
      }
      queue.dropped++
      return undefined
    }
    if (queue.length >= maxQueuedFrames || queue.bytes + size > maxQueuedBytes) {
      if (overflow === "reject") {
        return backpressure({
          peer: this.remotePeer,
          channel: channelId,
          queuedFrames: queue.length,
          queuedBytes: queue.bytes,
          maxFrames: maxQueuedFrames,
          maxBytes: maxQueuedBytes
        })
      }
      if (overflow === "drop-oldest" && size <= maxQueuedBytes) {
        while (queue.length > 0 && (queue.length >= maxQueuedFrames || queue.bytes + size > maxQueuedBytes)) {
          queue.shift()
          queue.dropped++
          this.queuedFrames--
        }
      }
      // drop-newest, or a frame larger than the whole byte budget even with the queue empty.
      if (queue.length >= maxQueuedFrames || queue.bytes + size > maxQueuedBytes) {
        queue.dropped++
        return undefined
      }
    }
    queue.push(item, size)
    this.queuedFrames++
    this.flushSoon()
    return undefined
  }

  /**
   * `size` bytes of this connection's own 16 KiB chunks (larger frames get their own buffer): frames
   * queued behind a blocked pipe share memory only with each other. The chunk is let go once the
   * queues are empty.
   */
  private carve(size: number): Buffer {
    if (size > OWN_CHUNK_BYTES / 4) return Buffer.allocUnsafe(size)
    let own = this.own
    if (own === undefined || own.offset + size > OWN_CHUNK_BYTES) {
      own = { buffer: new ArrayBuffer(OWN_CHUNK_BYTES), offset: 0 }
      this.own = own
    }
    const out = Buffer.from(own.buffer, own.offset, size)
    own.offset += size
    return out
  }

  private whenBlocked(): Frame.EncodeOptions {
    if (this.frameOptionsWhenBlocked === undefined) {
      this.frameOptionsWhenBlocked = { ...this.frameOptions, allocate: (size: number) => this.carve(size) }
    }
    return this.frameOptionsWhenBlocked
  }

  /** Sends a control message now, ahead of everything queued (handshake, goodbye). */
  sendControl(message: Uint8Array): void {
    if (this.state === "closed") return
    const encoded = Frame.encode({ channel: CONTROL_CHANNEL, messages: [message] })
    if (Either.isLeft(encoded)) return
    this.control.push(encoded.right, encoded.right.length)
    this.queuedFrames++
    this.scheduleFlush()
  }

  /**
   * The first frame of a turn is written at once (a lone message, a reply, waits for nothing); the
   * ones queued after it in the same synchronous run, and in the microtasks before the turn's end,
   * leave together in one write at the end of the turn. After a turn that sent several frames (a
   * burst) the next turn's first frame waits for its batch too: a sender in full flow makes one
   * write per turn, not two.
   */
  private flushSoon(): void {
    if (this.flushScheduled || (this.blocked && this.pipe.takesUrgent?.() !== true)) return
    if (this.writeFirst) this.flush()
    this.flushScheduled = true
    queueMicrotask(this.endTurn)
  }

  private readonly endTurn = (): void => {
    this.flushScheduled = false
    const before = this.sendsWritten
    this.flush()
    this.writeFirst = this.sendsWritten - before <= 1
  }

  private scheduleFlush(): void {
    if (this.flushScheduled || (this.blocked && this.pipe.takesUrgent?.() !== true)) return
    this.flushScheduled = true
    // A microtask: frames queued in the same synchronous run leave in one write, with no timer delay.
    queueMicrotask(this.endTurn)
  }

  /**
   * Writes queued frames: control first, then by priority level, round-robin within a level. While
   * the pipe is blocked, nothing, or (a pipe that takes them: streams of their own) control and
   * priority-0 frames only.
   */
  private flush(): void {
    if (this.queuedFrames === 0 || this.state === "closed") return
    if (this.blocked && this.pipe.takesUrgent?.() !== true) return
    const levels = this.blocked ? Math.min(1, this.levels.length) : this.levels.length
    const budget = this.options.config.maxWriteBytes
    const parts: Array<Part> = []
    let bytes = 0
    const queued = this.queuedFrames
    while (this.control.length > 0 && bytes < budget) {
      const frame = this.control.shift() as Uint8Array
      parts.push(frame)
      bytes += frame.length
      this.queuedFrames--
    }
    for (let level = 0; level < levels && bytes < budget; level++) {
      const queues = this.levels[level]
      if (queues === undefined) continue
      let progress = true
      while (progress && bytes < budget) {
        progress = false
        for (let i = 0; i < queues.length && bytes < budget; i++) {
          const queue = queues[i]!
          if (queue.length === 0) continue
          const part = this.nextPart(queue, budget - bytes)
          progress = true
          if (part === undefined) continue
          parts.push(part)
          bytes += part instanceof Uint8Array ? part.length : part.size
        }
      }
    }
    this.sendsWritten += queued - this.queuedFrames
    if (this.queuedFrames === 0) this.own = undefined
    if (parts.length === 0) return
    this.framesSent += parts.length
    this.bytesSent += bytes
    this.writes++
    const more = this.pipe.write(assemble(parts))
    if (!more) this.blocked = true
    if (this.queuedFrames > 0 && !this.blocked) this.scheduleFlush()
    else if (this.queuedFrames === 0 && this.state === "closing") this.endPipe()
  }

  /**
   * Takes the next frame of `queue`: a send queued as a frame, or one queued as messages joined with
   * the sends queued as messages after it, while the frame stays within `joinBytes` and the message
   * limit, and the write's remaining `room` (bytes). One frame where there were many: one header, and
   * one decode for the batch.
   */
  private nextPart(queue: ChannelQueue, room: number): Part | undefined {
    let size = queue.sizes[queue.head]!
    const first = queue.shift()
    this.queuedFrames--
    if (first instanceof Uint8Array) return first
    let messages = first
    const next = queue.items[queue.head]
    if (next !== undefined && !(next instanceof Uint8Array)) {
      const joined = first.slice()
      const maxMessages = this.options.config.maxMessagesPerFrame
      const limit = Math.min(this.joinBytes, room)
      while (queue.length > 0) {
        const item = queue.items[queue.head]!
        if (item instanceof Uint8Array || joined.length + item.length > maxMessages) break
        // The joined frame is at most the sizes of its sends' own frames, less the headers it saves
        // (one message count in place of several is never longer).
        const itemSize = queue.sizes[queue.head]!
        if (size + itemSize - Frame.HEADER_BYTES > limit) break
        queue.shift()
        this.queuedFrames--
        size += itemSize - Frame.HEADER_BYTES
        for (let i = 0; i < item.length; i++) joined.push(item[i]!)
      }
      messages = joined
      size = Frame.sizeOf(joined)
    }
    const channel = queue.config.id
    // Checked again now, with nothing run between this and the frame's bytes being written.
    const unchanged = this.unchanged(channel, messages)
    if (unchanged !== messages) {
      if (unchanged.length === 0) return undefined
      messages = unchanged
      size = Frame.sizeOf(unchanged)
    }
    if (queue.config.compression !== "deflate" || size < this.frameOptions.compressionThreshold!) {
      return { channel, messages, size }
    }
    const encoded = Frame.encode({ channel, messages }, this.optionsFor(queue, this.frameOptions))
    // Cannot fail: each send was measured against these limits, and the join stays within them.
    if (Either.isRight(encoded)) return encoded.right
    queue.dropped++
    return undefined
  }

  /**
   * `messages` less those that changed since `send` checked them (`Frame.Deferred.verify`): left out,
   * counted, reported, never sent. The same array when none did.
   */
  private unchanged(channel: number, messages: ReadonlyArray<Frame.Outbound>): ReadonlyArray<Frame.Outbound> {
    let kept: Array<Frame.Outbound> | undefined
    for (let i = 0; i < messages.length; i++) {
      const message = messages[i]!
      if (message instanceof Uint8Array || message.verify === undefined || message.verify()) {
        kept?.push(message)
        continue
      }
      kept ??= messages.slice(0, i)
      this.changedAfterSend++
      this.options.onChanged?.(this, channel)
    }
    return kept ?? messages
  }

  private optionsFor(queue: ChannelQueue, options: Frame.EncodeOptions): Frame.EncodeOptions {
    return queue.config.compression === "deflate" ? { ...options, compression: "deflate" } : options
  }

  // ---- inbound ----

  private onData(chunk: Uint8Array): void {
    if (this.state === "closed" || this.violated) return
    this.bytesReceived += chunk.length
    const error = this.decoder.push(chunk, this.onFrame)
    if (error !== undefined) this.protocolError(`${error._tag}: ${error.message}`)
    // Once per data event, not per frame: the consumer gets every frame of a TLS record in one take.
    else this.wake()
  }

  private wake(): void {
    if (this.waiter === undefined || this.inbound.length === 0) return
    const waiter = this.waiter
    this.waiter = undefined
    waiter(this.takeInbound())
  }

  /** Every frame queued for the consumer, handed over: their bytes leave this and the node's count. */
  private takeInbound(): Array<InboundFrame> {
    const frames = this.inbound
    const bytes = this.inboundBytes
    this.inbound = []
    this.inboundBytes = 0
    if (bytes > 0) this.budget.releaseInbound(bytes)
    return frames
  }

  /** The node's inbound budget has room again: read again, unless this connection's own queue is full. */
  resumeFromBudget(): void {
    const { maxInboundFrames, maxInboundBytes } = this.options.config
    if (
      !this.paused ||
      this.state === "closed" ||
      this.inbound.length >= maxInboundFrames ||
      this.inboundBytes >= maxInboundBytes
    )
      return
    this.paused = false
    if (!this.inflating) this.pipe.resume()
  }

  private readonly onFrame = (frame: Frame.Frame): void => {
    if (this.state === "closed" || this.violated) return
    if (frame.channel === CONTROL_CHANNEL) {
      for (const message of frame.messages) this.onControl(message)
      return
    }
    if (this.state === "handshake") {
      this.protocolError("application frame before the handshake finished")
      return
    }
    if (this.table.byId[frame.channel] === undefined) {
      this.protocolError(`frame on unknown channel ${frame.channel}`)
      return
    }
    this.framesReceived++
    if (this.receiver !== undefined && !this.receiverHeld && this.offerToReceiver(frame)) return
    this.receiverHeld = true
    this.inbound.push(frame)
    let bytes = 0
    for (const message of frame.messages) bytes += message.length
    this.inboundBytes += bytes
    this.budget.inbound += bytes
    const { maxInboundFrames, maxInboundBytes } = this.options.config
    if (this.waiter !== undefined || this.paused) return
    if (this.inbound.length >= maxInboundFrames || this.inboundBytes >= maxInboundBytes) {
      this.paused = true
      this.pipe.pause()
    } else if (this.budget.inboundFull) {
      this.paused = true
      this.budget.pausedOver(this)
      this.pipe.pause()
    }
  }

  /**
   * Hands each frame to `receiver` synchronously as it is decoded, while no frame is queued for
   * `take` or in the consumer's hands; a frame it returns false for is queued, and so is every frame
   * after it until the consumer calls `take` again with nothing queued, so the order is kept.
   * `undefined` removes it.
   */
  setReceiver(receiver: ((frame: InboundFrame) => boolean) | undefined): void {
    this.receiver = receiver
  }

  /**
   * Asked before a compressed frame is inflated, with its channel and what it costs (its declared
   * inflated size, or its wire size if larger): false drops it uninflated. `undefined` removes it.
   */
  setAdmitCompressed(admit: ((channel: number, bytes: number) => boolean) | undefined): void {
    this.decoder.admitCompressed = admit
  }

  private offerToReceiver(frame: InboundFrame): boolean {
    try {
      return this.receiver!(frame)
    } catch (e) {
      // A bug in the receiver must not escape the socket's data callback (that would end the
      // process): it is removed, this frame and the rest go through `take`, and `receive` dies
      // with the error once.
      this.receiver = undefined
      this.receiverFailure = { error: e }
      return false
    }
  }

  /**
   * Takes every frame received so far, or waits for the next one; `undefined` once closed and empty.
   * One consumer at a time.
   */
  take(callback: (frames: Array<InboundFrame> | undefined) => void): void {
    if (this.waiter !== undefined) throw new Error("a connection has one consumer: another take is waiting")
    if (this.inbound.length > 0) {
      const frames = this.takeInbound()
      if (this.paused && this.state !== "closed") {
        this.paused = false
        this.budget.forget(this)
        if (!this.inflating) this.pipe.resume()
      }
      callback(frames)
    } else if (this.state === "closed") {
      callback(undefined)
    } else {
      // Nothing queued, and the consumer asks again: it has handled every frame it took.
      this.receiverHeld = false
      this.waiter = callback
    }
  }

  /** Withdraws `callback`'s pending take (only its own). */
  cancelTake(callback: (frames: Array<InboundFrame> | undefined) => void): void {
    if (this.waiter === callback) this.waiter = undefined
  }

  // ---- closing ----

  /** Calls `listener` once the connection is closed (at once if it is); returns an unsubscribe. */
  onClosed(listener: (reason: CloseReason) => void): () => void {
    if (this.closeReason !== undefined && this.state === "closed") {
      listener(this.closeReason)
      return () => {}
    }
    this.closeListeners.push(listener)
    return () => {
      const i = this.closeListeners.indexOf(listener)
      if (i >= 0) this.closeListeners.splice(i, 1)
    }
  }

  /**
   * For shutdown: a peer that is not reading (writes blocked) is cut at once; otherwise close as
   * `close` does, and call `onFinished` once the queue and the goodbye are handed to the pipe (not
   * when the peer acknowledges: that takes network time a shutdown need not wait for).
   */
  shutdown(reason: string, detail: string, goodbye: Uint8Array, onFinished: () => void): void {
    if (this.state === "closed" || this.blocked) {
      this.destroy(reason, detail)
      onFinished()
      return
    }
    this.finishedListeners.push(onFinished)
    this.close(reason, detail, goodbye)
  }

  private readonly finishedListeners: Array<() => void> = []

  private endPipe(): void {
    this.pipe.end(() => {
      for (const listener of this.finishedListeners.splice(0)) listener()
    })
  }

  /** Graceful: flush what is queued and a goodbye, end the pipe; cut it after `closeTimeout`. */
  close(reason: string, detail: string, goodbye?: Uint8Array): void {
    if (this.state === "closing" || this.state === "closed") return
    this.closeReason = { initiator: "local", reason, detail }
    this.state = "closing"
    this.cancelCloseTimer = this.options.timers(Duration.toMillis(this.options.config.closeTimeout), () =>
      this.destroy("close-timeout", "queued frames did not flush in time")
    )
    if (goodbye !== undefined) this.sendControl(goodbye)
    if (this.queuedFrames === 0) this.endPipe()
  }

  /** At once: drops queued frames and cuts the pipe. */
  destroy(reason: string, detail: string): void {
    if (this.state === "closed") return
    this.closeReason ??= { initiator: "local", reason, detail }
    this.pipe.destroy()
    this.onPipeClosed()
  }

  /**
   * The remote broke the protocol. Nothing more it sends is read. Before authentication the pipe is
   * cut at once. Once open, what this side had queued for it is dropped and it is told why in a
   * goodbye (reason `protocol-error`, the wire error as detail), then the pipe is cut as soon as the
   * goodbye is handed to the network (at once if the remote does not read). Frames it sent before
   * the violation stay with the consumer.
   */
  protocolError(detail: string): void {
    if (this.state === "closed" || this.violated) return
    this.violated = true
    this.closeReason = { initiator: "local", reason: "protocol-error", detail }
    if (this.state !== "open" || this.blocked) {
      this.destroy("protocol-error", detail)
      return
    }
    for (let level = 0; level < this.levels.length; level++) {
      for (const queue of this.levels[level] ?? []) queue.clear()
    }
    this.queuedFrames = this.control.length
    this.finishedListeners.push(() => this.destroy("protocol-error", detail))
    this.close("protocol-error", detail, encodeGoodbye("protocol-error", detail))
  }

  /** The remote said goodbye: remember why, for when the pipe closes. */
  remoteClosing(reason: string, detail: string): void {
    if (this.closeReason === undefined) this.closeReason = { initiator: "remote", reason, detail }
  }

  private onPipeClosed(error?: Error): void {
    if (this.state === "closed") return
    this.state = "closed"
    this.decoder.discard()
    this.cancelCloseTimer?.()
    this.closeReason ??= error
      ? { initiator: "remote", reason: "error", detail: error.message }
      : { initiator: "remote", reason: "eof", detail: "the remote closed the connection" }
    for (let level = 0; level < this.levels.length; level++) {
      for (const queue of this.levels[level] ?? []) queue.clear()
    }
    this.control.clear()
    this.queuedFrames = 0
    // Frames still queued for the consumer no longer count against the node's budget (a closed
    // connection receives nothing more): a consumer that never takes them cannot hold it forever.
    this.budget.forget(this)
    if (this.inboundBytes > 0) this.budget.releaseInbound(this.inboundBytes)
    this.inboundBytes = 0
    // A waiting consumer gets the frames that arrived before the close first, then the end.
    if (this.waiter !== undefined) {
      const waiter = this.waiter
      this.waiter = undefined
      const frames = this.takeInbound()
      waiter(frames.length > 0 ? frames : undefined)
    }
    const reason = this.closeReason
    for (const listener of this.closeListeners.splice(0)) listener(reason)
    for (const listener of this.finishedListeners.splice(0)) listener()
  }

  stats(): ConnectionStats {
    const dropped: Record<number, number> = {}
    const queued: Record<number, { frames: number; bytes: number }> = {}
    for (const config of this.table.byId) {
      if (config === undefined) continue
      const queue = this.channels?.[config.id]
      dropped[config.id] = queue?.dropped ?? 0
      queued[config.id] = { frames: queue?.length ?? 0, bytes: queue?.bytes ?? 0 }
    }
    return {
      framesSent: this.framesSent,
      bytesSent: this.bytesSent,
      framesReceived: this.framesReceived,
      bytesReceived: this.bytesReceived,
      writes: this.writes,
      dropped,
      queued,
      readPaused: this.paused,
      changedAfterSend: this.changedAfterSend
    }
  }
}
