/**
 * A deterministic, seeded, in-memory network driven by Effect's `Clock`: the backend that lets a
 * 100-node cluster run under `TestClock` in milliseconds, and the same bytes-moving contract
 * (`Pipe`) as a real socket, so the connection code under test is the production code.
 *
 * Model:
 * - Hosts are opaque names ("10.0.0.1", "node-3"); endpoints are `host:port` (IPv6 hosts in
 *   brackets). Links are directional per host pair and shared by every connection between the two
 *   hosts; a host always reaches itself.
 * - One `write` is one delivery unit. It is lost whole with probability `loss` (drawn from the
 *   link's own seeded stream, so traffic elsewhere never changes a link's draws), or it arrives at
 *   `send time + transmission + latency + jitter`, rounded up to the whole millisecond (the Clock's
 *   resolution). Transmission is `bytes / bandwidth`, serialised per link: the link is busy until
 *   the previous unit has gone out. A connection never reorders: a unit never arrives before the one
 *   written before it on the same connection and direction (jitter is clamped).
 * - A host may have an upload limit (`setUpload`): its units are serialised through it, across all
 *   of its links, before the link's own bandwidth applies.
 * - A lost unit vanishes at send time: it takes neither link time nor send-buffer space.
 * - Partitions are checked at send time and at delivery time: a unit in flight on a link that a
 *   partition cut (even if healed since) is dropped. Graceful closes (`end`) and resets (`destroy`)
 *   are never lost: like TCP's FIN they are retried by the stack, so they cross partitions.
 * - All timing goes through `Clock`; a delivery due now happens on the next scheduling step, so
 *   zero-delay traffic flows without `TestClock.adjust`.
 */
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import type { Pipe } from "./internal/pipe.js"
import * as internal from "./internal/simulated.js"

/** How one direction of a host pair behaves. Defaults: no latency, jitter or loss; unlimited bandwidth. */
export const LinkConditions = Schema.Struct({
  /** One-way delay in milliseconds added to every unit. */
  latency: Schema.Number.pipe(Schema.finite(), Schema.nonNegative()),
  /** Extra delay in milliseconds, uniform in `[0, jitter]` per unit; never reorders a connection. */
  jitter: Schema.Number.pipe(Schema.finite(), Schema.nonNegative()),
  /** Probability in `[0, 1]` that one write is dropped whole. */
  loss: Schema.Number.pipe(Schema.between(0, 1)),
  /** Bytes per second, shared by all connections on the link; `undefined` means unlimited. */
  bandwidth: Schema.UndefinedOr(Schema.Number.pipe(Schema.finite(), Schema.positive()))
})

/** How one direction of a host pair behaves. */
export interface LinkConditions extends Schema.Schema.Type<typeof LinkConditions> {}

/** A change to a link's conditions: the fields named replace the link's current values. */
export const LinkConditionsPatch = Schema.partialWith(LinkConditions, { exact: true })

/** The default link conditions: a perfect, instant network. */
export const defaultLinkConditions: LinkConditions = { latency: 0, jitter: 0, loss: 0, bandwidth: undefined }

/** Configuration of a simulated network; every field is optional. */
export const SimulatedNetworkOptions = Schema.Struct({
  /** Seed of every random draw (loss, jitter). Default 1. Same seed, same traffic: same outcome. */
  seed: Schema.optional(Schema.Int),
  /** Conditions of every link not set otherwise. Default `defaultLinkConditions`. */
  defaults: Schema.optional(LinkConditionsPatch),
  /** High-water mark, per connection and direction, of bytes accepted but not yet delivered to the
   * receiver's `data` handler; `write` returns false over it. Default 1 MiB. */
  sendBufferBytes: Schema.optional(Schema.Int.pipe(Schema.positive()))
})

/** Configuration of a simulated network. */
export interface SimulatedNetworkOptions extends Schema.Schema.Type<typeof SimulatedNetworkOptions> {}

/** The default high-water mark of a pipe's send buffer: 1 MiB. */
export const defaultSendBufferBytes = 1024 * 1024

/** Counters of one directional link (or, from `stats`, of all links summed). */
export interface LinkStats {
  /** Units (and their bytes) that reached the receiving host, held or handed to the receiver. */
  readonly deliveredWrites: number
  readonly deliveredBytes: number
  /** Units dropped by the `loss` model. */
  readonly lostWrites: number
  readonly lostBytes: number
  /** Units dropped by a partition: at send (including writes on a pipe dialled across one) or in flight. */
  readonly partitionedWrites: number
  readonly partitionedBytes: number
}

/** A listening address; closing it refuses new connections and leaves established ones open. */
export interface Binding {
  /** The bound address as `host:port`, with the port assigned when 0 was asked for. */
  readonly address: string
  readonly close: Effect.Effect<void>
}

/** Something is already bound at the address (or, for port 0, no port is left on the host). */
export class AddressInUse extends Schema.TaggedError<AddressInUse>()("AddressInUse", {
  address: Schema.String
}) {
  override get message() {
    return `address ${this.address} is already in use`
  }
}

/** Nothing is bound at the address dialled; the dial fails at once, as a TCP RST would. */
export class ConnectionRefused extends Schema.TaggedError<ConnectionRefused>()("ConnectionRefused", {
  address: Schema.String
}) {
  override get message() {
    return `connection to ${this.address} refused: nothing is bound there`
  }
}

/** The simulated network: links, partitions, listeners and dials. */
export interface SimulatedNetworkShape {
  /**
   * Changes the conditions of the link from host `from` to host `to`, one direction only; fields not
   * named keep their current value. Units already in flight keep the conditions they were sent with.
   * Dies on out-of-range values (negative latency, loss outside [0, 1], bandwidth <= 0).
   */
  readonly setLink: (from: string, to: string, conditions: Partial<LinkConditions>) => Effect.Effect<void>
  /**
   * Limits what host `host` sends, over all its links together, to `bytesPerSecond` (its uplink:
   * a leader sending one message to 999 peers serialises the 999 copies); undefined removes the
   * limit. Applied before each link's own `bandwidth`. Dies on a value that is not positive.
   */
  readonly setUpload: (host: string, bytesPerSecond: number | undefined) => Effect.Effect<void>
  /** `setLink` in both directions between hosts `a` and `b`. */
  readonly setLinkBoth: (a: string, b: string, conditions: Partial<LinkConditions>) => Effect.Effect<void>
  /**
   * Replaces the partition: hosts in different groups exchange no bytes, in either direction, and
   * units in flight between them are dropped. Hosts named in no group form one more group together
   * ("the rest"), so `partition([["a", "b"]])` cuts a and b off from everyone else. Dies if a host
   * is named in two groups.
   */
  readonly partition: (groups: ReadonlyArray<ReadonlyArray<string>>) => Effect.Effect<void>
  /** Cuts one host off from every other host, keeping the rest of the current partition. */
  readonly isolate: (host: string) => Effect.Effect<void>
  /** Removes every partition; new units and new connections flow again (lost units stay lost). */
  readonly heal: Effect.Effect<void>
  /**
   * Listens at `host:port` (port 0: the next free port on the host, from 40000 up). Each connection
   * dialled to it hands its server-side pipe to `onConnection`, synchronously, during the dial.
   * Released by `Binding.close` or when the network's scope closes. Dies on a malformed address.
   */
  readonly bind: (address: string, onConnection: (pipe: Pipe) => void) => Effect.Effect<Binding, AddressInUse>
  /**
   * Dials `toAddress` from host `fromHost`. Fails at once with `ConnectionRefused` if nothing is
   * bound there. If the two hosts are partitioned, the SYN is lost: the returned pipe is silent
   * (its writes go nowhere, it never receives, healing does not revive it) and `onConnection` is not
   * called; the dialer's own handshake timeout decides. Otherwise the server side is handed to the
   * binding's `onConnection` and the client side is returned; the server side's `remoteAddress` is
   * `fromHost:<ephemeral port>` (assigned deterministically, from 40000 up per host).
   */
  readonly connect: (fromHost: string, toAddress: string) => Effect.Effect<Pipe, ConnectionRefused>
  /** Counters of the link from host `from` to host `to` (zeros for a link that never carried a unit). */
  readonly linkStats: (from: string, to: string) => Effect.Effect<LinkStats>
  /** Counters summed over every link. */
  readonly stats: Effect.Effect<LinkStats>
}

/** A deterministic in-memory network for tests and simulations; see the module comment for its model. */
export class SimulatedNetwork extends Context.Tag("@hotstuff2/transport/SimulatedNetwork")<
  SimulatedNetwork,
  SimulatedNetworkShape
>() {
  /** A fresh network; everything it schedules stops, and every binding is released, when its scope closes. */
  static readonly layer = (options?: SimulatedNetworkOptions): Layer.Layer<SimulatedNetwork> =>
    Layer.scoped(SimulatedNetwork, internal.make(options ?? {}))
}
