// The machinery of SimulatedNetwork: one event calendar per network, driven by Effect's Clock.
//
// Events live in buckets keyed by their whole-millisecond due time, with a min-heap of the distinct
// times; within a bucket they run in the order they were scheduled, which with the per-direction
// clamp of due times keeps every connection FIFO. A timer is one fiber sleeping on the Clock until a
// due time (or yielding once if the time is now); it runs every event due and arms the next timer.
// A new timer starts only for a due time earlier than every pending one, so under TestClock a
// simulation costs one short-lived fiber (and one TestClock step) per simulated millisecond that has
// traffic, whatever the number of links, connections or units.
import * as Cause from "effect/Cause"
import type * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import {
  AddressInUse,
  type Binding,
  ConnectionRefused,
  defaultLinkConditions,
  defaultSendBufferBytes,
  type LinkConditions,
  LinkConditionsPatch,
  type LinkStats,
  SimulatedNetworkOptions,
  type SimulatedNetworkShape
} from "../SimulatedNetwork.js"
import type { Pipe, PipeHandlers } from "./pipe.js"

/** First port handed out for port-0 binds and dials, per host. */
const firstPort = 40000
const lastPort = 65535

// ---------------------------------------------------------------------------------------------
// Addresses

interface ParsedAddress {
  readonly host: string
  readonly port: number
}

/** `host:port` or `[ipv6]:port`; undefined when malformed. The host comes back without brackets. */
export const parseAddress = (address: string): ParsedAddress | undefined => {
  const colon = address.lastIndexOf(":")
  if (colon <= 0) return undefined
  const portText = address.slice(colon + 1)
  if (!/^\d{1,5}$/.test(portText)) return undefined
  const port = Number(portText)
  if (port > lastPort) return undefined
  let host = address.slice(0, colon)
  if (host.startsWith("[")) {
    if (!host.endsWith("]") || host.length < 3) return undefined
    host = host.slice(1, -1)
  } else if (host.includes(":")) return undefined
  return { host, port }
}

export const formatAddress = (host: string, port: number): string =>
  host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`

const normalizeHost = (host: string): string =>
  host.length > 2 && host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host

// ---------------------------------------------------------------------------------------------
// Randomness: mulberry32, one stream per directional link, seeded from the network seed and the
// link's hosts, so traffic on one link never shifts the draws of another.

const linkSeed = (seed: number, from: string, to: string): number => {
  let h = (0x811c9dc5 ^ Math.imul((seed | 0) ^ (Math.floor(seed / 0x100000000) | 0), 0x9e3779b1)) | 0
  const key = `${from}\u0000${to}`
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return h
}

const nextRandom = (link: Link): number => {
  link.rng = (link.rng + 0x6d2b79f5) | 0
  let t = link.rng
  t = Math.imul(t ^ (t >>> 15), t | 1)
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

/** Rounds a due time up to the whole millisecond, forgiving float noise (100.0000000001 is 100). */
const dueMillis = (time: number): number => Math.ceil(time - 1e-6)

// ---------------------------------------------------------------------------------------------
// Links, pipes, events

class Link implements LinkStats {
  /** Replaced whole by setLink; units in flight keep what they were sent with. */
  conditions: LinkConditions
  /** When the link finishes transmitting the last unit accepted (bandwidth serialisation). */
  busyUntil = 0
  /** Whether a partition currently separates the two hosts. */
  cut = false
  /** How many times a partition has cut this link: a unit sent under another count is dropped. */
  cuts = 0
  rng: number
  deliveredWrites = 0
  deliveredBytes = 0
  lostWrites = 0
  lostBytes = 0
  partitionedWrites = 0
  partitionedBytes = 0

  constructor(
    readonly from: string,
    readonly to: string,
    conditions: LinkConditions,
    seed: number
  ) {
    this.conditions = conditions
    this.rng = seed
  }
}

/** Marks, in an inbox, the graceful close of the other side (its FIN), behind the data before it. */
const endOfStream = new Uint8Array(0)

/** One end of a connection: its outbound direction (sender state) and its inbound buffer. */
class Side implements Pipe {
  handlers: PipeHandlers | undefined = undefined
  /** The other end; undefined for a pipe dialled across a partition (the SYN was lost). */
  peer: Side | undefined = undefined
  /** Bytes written on this side and not yet handed to the peer's `data` handler. */
  inFlight = 0
  /** Due time of the last unit (or FIN) sent on this side: later ones never arrive before it. */
  lastDelivery = 0
  needDrain = false
  /** `end()` was called or the peer's FIN arrived: no more writes. */
  ending = false
  paused = false
  closed = false
  closeNotified = false
  closeError: Error | undefined = undefined
  flushScheduled = false
  /** Arrived and not yet handed over: before attach, while paused, or behind such data. */
  inbox: Array<Uint8Array> = []
  inboxHead = 0

  constructor(
    readonly network: Network,
    readonly remoteAddress: string,
    readonly out: Link
  ) {}

  // Methods on the prototype, not arrow fields: six closures less per end of every connection.
  attach(handlers: PipeHandlers): void {
    this.network.attach(this, handlers)
  }
  write(chunks: ReadonlyArray<Uint8Array>): boolean {
    return this.network.write(this, chunks)
  }
  pause(): void {
    this.paused = true
  }
  resume(): void {
    this.network.resume(this)
  }
  end(onFinished?: () => void): void {
    this.network.end(this)
    // Everything written, and the close, are now the network's to deliver.
    if (onFinished !== undefined) queueMicrotask(onFinished)
  }
  destroy(error?: Error): void {
    this.network.destroy(this, error)
  }
}

const DATA = 0
const FIN = 1
const CLOSE = 2
const FLUSH = 3
type EventKind = typeof DATA | typeof FIN | typeof CLOSE | typeof FLUSH

class SimEvent {
  constructor(
    readonly kind: EventKind,
    /** The sender for DATA and FIN; the side concerned for CLOSE and FLUSH. */
    readonly side: Side,
    readonly chunk: Uint8Array | undefined,
    /** The link's cut count at send time (DATA). */
    readonly cuts: number
  ) {}
}

class TimeHeap {
  private readonly items: Array<number> = []

  get size(): number {
    return this.items.length
  }

  peek(): number {
    return this.items[0]!
  }

  push(value: number): void {
    const items = this.items
    let i = items.length
    items.push(value)
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (items[parent]! <= value) break
      items[i] = items[parent]!
      i = parent
    }
    items[i] = value
  }

  pop(): void {
    const items = this.items
    const last = items.pop()!
    const n = items.length
    if (n === 0) return
    let i = 0
    for (;;) {
      const left = 2 * i + 1
      if (left >= n) break
      const right = left + 1
      const child = right < n && items[right]! < items[left]! ? right : left
      if (items[child]! >= last) break
      items[i] = items[child]!
      i = child
    }
    items[i] = last
  }

  clear(): void {
    this.items.length = 0
  }
}

interface Listener {
  readonly onConnection: (pipe: Pipe) => void
}

const connectionReset = (address: string): Error =>
  Object.assign(new Error(`connection reset by ${address}`), { code: "ECONNRESET" })

// ---------------------------------------------------------------------------------------------
// The network

class Network {
  /** Upload limits of hosts (bytes per second, shared by every link leaving the host). */
  readonly uploads = new Map<string, { bandwidth: number; busyUntil: number }>()
  readonly links = new Map<string, Map<string, Link>>()
  readonly bindings = new Map<string, Listener>()
  readonly nextPort = new Map<string, number>()
  /** Host to partition group; hosts absent are in group 0. Empty: no partition. */
  groups = new Map<string, number>()
  groupCount = 0
  readonly buckets = new Map<number, Array<SimEvent>>()
  readonly times = new TimeHeap()
  readonly timers = new Set<number>()
  earliestTimer = Number.POSITIVE_INFINITY
  processing = false
  shutdown = false
  errors: Array<unknown> = []
  /** Sides not yet told they are closed: shutdown tells them, so nothing waits on a dead network. */
  readonly open = new Set<Side>()

  constructor(
    readonly clock: Clock.Clock,
    readonly seed: number,
    readonly defaults: LinkConditions,
    readonly sendBufferBytes: number,
    readonly fork: (effect: Effect.Effect<void>) => void
  ) {}

  // -- links and partitions

  link(from: string, to: string): Link {
    let row = this.links.get(from)
    if (row === undefined) {
      row = new Map()
      this.links.set(from, row)
    }
    let link = row.get(to)
    if (link === undefined) {
      link = new Link(from, to, this.defaults, linkSeed(this.seed, from, to))
      link.cut = !this.reachable(from, to)
      row.set(to, link)
    }
    return link
  }

  reachable(a: string, b: string): boolean {
    if (a === b || this.groups.size === 0) return true
    return (this.groups.get(a) ?? 0) === (this.groups.get(b) ?? 0)
  }

  applyPartition(): void {
    for (const row of this.links.values()) {
      for (const link of row.values()) {
        const cut = !this.reachable(link.from, link.to)
        if (cut) link.cuts++
        link.cut = cut
      }
    }
  }

  allocatePort(host: string): number | undefined {
    let port = this.nextPort.get(host) ?? firstPort
    for (let tries = 0; tries <= lastPort - firstPort; tries++) {
      const candidate = port
      port = port === lastPort ? firstPort : port + 1
      if (!this.bindings.has(formatAddress(host, candidate))) {
        this.nextPort.set(host, port)
        return candidate
      }
    }
    return undefined
  }

  // -- the calendar

  now(): number {
    return this.clock.unsafeCurrentTimeMillis()
  }

  schedule(time: number, kind: EventKind, side: Side, chunk: Uint8Array | undefined, cuts: number): void {
    if (this.shutdown) return
    let bucket = this.buckets.get(time)
    if (bucket === undefined) {
      bucket = []
      this.buckets.set(time, bucket)
      this.times.push(time)
      if (!this.processing && time < this.earliestTimer) this.startTimer(time)
    }
    bucket.push(new SimEvent(kind, side, chunk, cuts))
  }

  startTimer(time: number): void {
    this.timers.add(time)
    if (time < this.earliestTimer) this.earliestTimer = time
    const wait = time - this.now()
    if (wait < 1e-6) {
      // Due now: on a microtask, after the `write` that scheduled it returns (never inside it).
      // Not through the Clock: a zero-length TestClock sleep completes synchronously, and a timer
      // that is started but never fires would leave `earliestTimer` stuck and stall the network.
      queueMicrotask(() => {
        const logged = this.fire(time)
        if (logged !== Effect.void) this.fork(logged)
      })
      return
    }
    this.fork(
      Effect.zipRight(
        Effect.sleep(wait),
        Effect.suspend(() => this.fire(time))
      )
    )
  }

  fire(time: number): Effect.Effect<void> {
    this.timers.delete(time)
    let earliest = Number.POSITIVE_INFINITY
    for (const t of this.timers) if (t < earliest) earliest = t
    this.earliestTimer = earliest
    // The timer's time has come, whatever the clock reads: a TestClock driven by fractional sleeps
    // can read 12088.999999999 when a 12089 timer fires, and nothing would be due.
    this.runDue(time)
    if (this.errors.length === 0) return Effect.void
    const errors = this.errors
    this.errors = []
    return Effect.forEach(
      errors,
      (error) =>
        Effect.logError("SimulatedNetwork: a pipe handler threw; the simulation goes on", Cause.die(error)),
      { discard: true }
    )
  }

  runDue(dueBy = 0): void {
    if (this.shutdown) return
    this.processing = true
    try {
      const now = Math.max(this.now(), dueBy)
      while (this.times.size > 0 && this.times.peek() <= now) {
        const time = this.times.peek()
        const bucket = this.buckets.get(time)!
        // Events scheduled for this same time while it runs are appended and run in this loop.
        for (let i = 0; i < bucket.length; i++) {
          try {
            this.handle(bucket[i]!)
          } catch (error) {
            this.errors.push(error)
          }
        }
        this.buckets.delete(time)
        this.times.pop()
      }
    } finally {
      this.processing = false
    }
    if (!this.shutdown && this.times.size > 0 && this.times.peek() < this.earliestTimer) {
      this.startTimer(this.times.peek())
    }
  }

  handle(event: SimEvent): void {
    switch (event.kind) {
      case DATA:
        this.arrive(event.side, event.chunk!, event.cuts)
        break
      case FIN:
        this.arriveEnd(event.side)
        break
      case CLOSE:
        this.notifyClose(event.side)
        break
      case FLUSH:
        this.flush(event.side)
        break
    }
  }

  // -- delivery

  arrive(sender: Side, chunk: Uint8Array, cuts: number): void {
    const receiver = sender.peer!
    const link = sender.out
    const n = chunk.length
    if (receiver.closed) {
      sender.inFlight -= n
      this.maybeDrain(sender)
      return
    }
    if (link.cuts !== cuts) {
      link.partitionedWrites++
      link.partitionedBytes += n
      sender.inFlight -= n
      this.maybeDrain(sender)
      return
    }
    link.deliveredWrites++
    link.deliveredBytes += n
    if (receiver.handlers === undefined || receiver.paused || receiver.inboxHead < receiver.inbox.length) {
      receiver.inbox.push(chunk)
      return
    }
    sender.inFlight -= n
    receiver.handlers.data(chunk)
    this.maybeDrain(sender)
  }

  arriveEnd(sender: Side): void {
    const receiver = sender.peer!
    if (receiver.closed) return
    if (receiver.handlers === undefined || receiver.paused || receiver.inboxHead < receiver.inbox.length) {
      receiver.inbox.push(endOfStream)
      return
    }
    this.endReceived(receiver)
  }

  /** The peer's FIN reached the side's handler: answer with our own FIN (no half-open), then close. */
  endReceived(side: Side): void {
    if (!side.ending) {
      side.ending = true
      this.sendEnd(side)
    }
    this.closeSide(side, undefined)
  }

  flush(side: Side): void {
    side.flushScheduled = false
    const sender = side.peer
    while (
      !side.closed &&
      !side.paused &&
      side.handlers !== undefined &&
      sender !== undefined &&
      side.inboxHead < side.inbox.length
    ) {
      const chunk = side.inbox[side.inboxHead++]!
      if (chunk === endOfStream) {
        this.endReceived(side)
        break
      }
      sender.inFlight -= chunk.length
      side.handlers.data(chunk)
      this.maybeDrain(sender)
    }
    if (side.inboxHead >= side.inbox.length) {
      side.inbox = []
      side.inboxHead = 0
    } else if (side.inboxHead > 1024 && side.inboxHead * 2 > side.inbox.length) {
      side.inbox = side.inbox.slice(side.inboxHead)
      side.inboxHead = 0
    }
    this.maybeDrain(side)
    if (side.closed) this.notifyClose(side)
  }

  maybeDrain(sender: Side): void {
    if (
      sender.needDrain &&
      !sender.closed &&
      sender.handlers !== undefined &&
      sender.inFlight <= this.sendBufferBytes
    ) {
      sender.needDrain = false
      sender.handlers.drain()
    }
  }

  scheduleFlush(side: Side): void {
    if (side.flushScheduled) return
    side.flushScheduled = true
    this.schedule(dueMillis(this.now()), FLUSH, side, undefined, 0)
  }

  closeSide(side: Side, error: Error | undefined): void {
    if (side.closed) return
    side.closed = true
    side.closeError = error
    side.needDrain = false
    side.inbox = []
    side.inboxHead = 0
    this.schedule(dueMillis(this.now()), CLOSE, side, undefined, 0)
  }

  notifyClose(side: Side): void {
    // A side closed before anyone attached to it (refused over a limit) will never be told: forget it.
    if (side.handlers === undefined && side.closed) this.open.delete(side)
    if (side.closeNotified || side.handlers === undefined) return
    side.closeNotified = true
    this.open.delete(side)
    const error = side.closeError
    if (error === undefined) side.handlers.close()
    else side.handlers.close(error)
  }

  sendEnd(side: Side): void {
    let time = dueMillis(this.now() + side.out.conditions.latency)
    if (time < side.lastDelivery) time = side.lastDelivery
    side.lastDelivery = time
    this.schedule(time, FIN, side, undefined, 0)
  }

  // -- the Pipe methods

  attach(side: Side, handlers: PipeHandlers): void {
    side.handlers = handlers
    if (side.inboxHead < side.inbox.length || side.needDrain || (side.closed && !side.closeNotified)) {
      this.scheduleFlush(side)
    }
  }

  resume(side: Side): void {
    if (!side.paused) return
    side.paused = false
    if (!side.closed && side.inboxHead < side.inbox.length) this.scheduleFlush(side)
  }

  write(side: Side, chunks: ReadonlyArray<Uint8Array>): boolean {
    // Discarded, and no backpressure to wait out: close (or its FIN) is on its way, as with a socket.
    if (side.closed || side.ending || this.shutdown) return true
    let n = 0
    for (let i = 0; i < chunks.length; i++) n += chunks[i]!.length
    const link = side.out
    if (side.peer === undefined) {
      if (n > 0) {
        link.partitionedWrites++
        link.partitionedBytes += n
      }
      return true
    }
    if (n > 0) {
      const conditions = link.conditions
      if (link.cut) {
        link.partitionedWrites++
        link.partitionedBytes += n
      } else if (conditions.loss > 0 && nextRandom(link) < conditions.loss) {
        link.lostWrites++
        link.lostBytes += n
      } else {
        // A copy: the writer may reuse its buffers once `write` returns, as with a socket.
        const chunk = new Uint8Array(n)
        let offset = 0
        for (let i = 0; i < chunks.length; i++) {
          chunk.set(chunks[i]!, offset)
          offset += chunks[i]!.length
        }
        const now = this.now()
        let at = now
        // The sending host's uplink first (shared by all its links), then the link's own bandwidth.
        const upload = this.uploads.get(link.from)
        if (upload !== undefined) {
          at = Math.max(upload.busyUntil, now) + (n * 1000) / upload.bandwidth
          upload.busyUntil = at
        }
        if (conditions.bandwidth !== undefined) {
          at = Math.max(link.busyUntil, at) + (n * 1000) / conditions.bandwidth
          link.busyUntil = at
        }
        at += conditions.latency
        if (conditions.jitter > 0) at += nextRandom(link) * conditions.jitter
        let time = dueMillis(at)
        if (time < side.lastDelivery) time = side.lastDelivery
        side.lastDelivery = time
        side.inFlight += n
        this.schedule(time, DATA, side, chunk, link.cuts)
      }
    }
    if (side.inFlight > this.sendBufferBytes) {
      side.needDrain = true
      return false
    }
    return true
  }

  end(side: Side): void {
    if (side.closed || side.ending) return
    side.ending = true
    if (side.peer === undefined) this.closeSide(side, undefined)
    else this.sendEnd(side)
  }

  destroy(side: Side, error: Error | undefined): void {
    if (side.closed) return
    this.closeSide(side, error)
    const peer = side.peer
    if (peer !== undefined && !peer.closed) this.closeSide(peer, connectionReset(peer.remoteAddress))
  }

  close(): void {
    this.shutdown = true
    this.bindings.clear()
    this.buckets.clear()
    this.times.clear()
    this.timers.clear()
    // Like a host losing its network: every open pipe closes now, with an error.
    for (const side of this.open) {
      side.closed = true
      side.closeError ??= new Error("the simulated network shut down")
      this.notifyClose(side)
    }
    this.open.clear()
  }
}

const statsOf = (links: Iterable<Link>): LinkStats => {
  const total = {
    deliveredWrites: 0,
    deliveredBytes: 0,
    lostWrites: 0,
    lostBytes: 0,
    partitionedWrites: 0,
    partitionedBytes: 0
  }
  for (const link of links) {
    total.deliveredWrites += link.deliveredWrites
    total.deliveredBytes += link.deliveredBytes
    total.lostWrites += link.lostWrites
    total.lostBytes += link.lostBytes
    total.partitionedWrites += link.partitionedWrites
    total.partitionedBytes += link.partitionedBytes
  }
  return total
}

/** Builds a network in the current scope; closing the scope stops every timer and releases every binding. */
export const make = (
  options: SimulatedNetworkOptions
): Effect.Effect<SimulatedNetworkShape, never, Scope.Scope> =>
  Effect.gen(function* () {
    const valid = yield* Effect.orDie(Schema.validate(SimulatedNetworkOptions)(options))
    const validatePatch = Schema.validate(LinkConditionsPatch)
    const clock = yield* Effect.clock
    // Interruptible fibers even when built in an uninterruptible region (see timers.ts).
    const run = yield* Effect.interruptible(FiberSet.makeRuntime<never, void, never>())
    const network = new Network(
      clock,
      valid.seed ?? 1,
      { ...defaultLinkConditions, ...valid.defaults },
      valid.sendBufferBytes ?? defaultSendBufferBytes,
      (effect) => {
        run(effect)
      }
    )
    // Registered after the FiberSet's, so it runs first: nothing new is scheduled while timers stop.
    yield* Effect.addFinalizer(() => Effect.sync(() => network.close()))

    const setLink = (from: string, to: string, conditions: Partial<LinkConditions>): Effect.Effect<void> =>
      Effect.flatMap(Effect.orDie(validatePatch(conditions)), (patch) =>
        Effect.sync(() => {
          const link = network.link(normalizeHost(from), normalizeHost(to))
          link.conditions = { ...link.conditions, ...patch }
        })
      )

    const partition = (groups: ReadonlyArray<ReadonlyArray<string>>): Effect.Effect<void> =>
      Effect.suspend(() => {
        const next = new Map<string, number>()
        for (let i = 0; i < groups.length; i++) {
          for (const name of groups[i]!) {
            const host = normalizeHost(name)
            const group = next.get(host)
            if (group !== undefined && group !== i + 1) {
              return Effect.dieMessage(`SimulatedNetwork.partition: host "${host}" is named in two groups`)
            }
            next.set(host, i + 1)
          }
        }
        network.groups = next
        network.groupCount = groups.length
        network.applyPartition()
        return Effect.void
      })

    const bind = (
      address: string,
      onConnection: (pipe: Pipe) => void
    ): Effect.Effect<Binding, AddressInUse> =>
      Effect.suspend(() => {
        const parsed = parseAddress(address)
        if (parsed === undefined) {
          return Effect.dieMessage(
            `SimulatedNetwork.bind: malformed address "${address}" (expected host:port)`
          )
        }
        const port = parsed.port === 0 ? network.allocatePort(parsed.host) : parsed.port
        if (port === undefined) return Effect.fail(new AddressInUse({ address }))
        const key = formatAddress(parsed.host, port)
        if (network.bindings.has(key)) return Effect.fail(new AddressInUse({ address: key }))
        const listener: Listener = { onConnection }
        network.bindings.set(key, listener)
        const binding: Binding = {
          address: key,
          close: Effect.sync(() => {
            if (network.bindings.get(key) === listener) network.bindings.delete(key)
          })
        }
        return Effect.succeed(binding)
      })

    const connect = (fromHost: string, toAddress: string): Effect.Effect<Pipe, ConnectionRefused> =>
      Effect.suspend(() => {
        const parsed = parseAddress(toAddress)
        const key = parsed === undefined ? undefined : formatAddress(parsed.host, parsed.port)
        const listener = key === undefined ? undefined : network.bindings.get(key)
        if (parsed === undefined || key === undefined || listener === undefined) {
          return Effect.fail(new ConnectionRefused({ address: toAddress }))
        }
        const from = normalizeHost(fromHost)
        const port = network.allocatePort(from) ?? firstPort
        const out = network.link(from, parsed.host)
        const back = network.link(parsed.host, from)
        const client = new Side(network, key, out)
        network.open.add(client)
        if (out.cut) return Effect.succeed<Pipe>(client)
        const server = new Side(network, formatAddress(from, port), back)
        network.open.add(server)
        client.peer = server
        server.peer = client
        listener.onConnection(server)
        return Effect.succeed<Pipe>(client)
      })

    const setUpload = (host: string, bytesPerSecond: number | undefined): Effect.Effect<void> =>
      Effect.suspend(() => {
        const name = normalizeHost(host)
        if (bytesPerSecond === undefined) {
          network.uploads.delete(name)
          return Effect.void
        }
        if (!Number.isFinite(bytesPerSecond) || bytesPerSecond <= 0) {
          return Effect.dieMessage(
            `SimulatedNetwork.setUpload: ${bytesPerSecond} is not a positive number of bytes per second`
          )
        }
        const current = network.uploads.get(name)
        network.uploads.set(name, { bandwidth: bytesPerSecond, busyUntil: current?.busyUntil ?? 0 })
        return Effect.void
      })

    const shape: SimulatedNetworkShape = {
      setLink,
      setUpload,
      setLinkBoth: (a, b, conditions) =>
        Effect.zipRight(setLink(a, b, conditions), setLink(b, a, conditions)),
      partition,
      isolate: (host) =>
        Effect.sync(() => {
          network.groups.set(normalizeHost(host), ++network.groupCount)
          network.applyPartition()
        }),
      heal: Effect.sync(() => {
        network.groups = new Map()
        network.groupCount = 0
        network.applyPartition()
      }),
      bind,
      connect,
      linkStats: (from, to) =>
        Effect.sync(() => {
          const link = network.links.get(normalizeHost(from))?.get(normalizeHost(to))
          return statsOf(link === undefined ? [] : [link])
        }),
      stats: Effect.sync(() =>
        statsOf(Array.from(network.links.values(), (row) => Array.from(row.values())).flat())
      )
    }
    return shape
  })
