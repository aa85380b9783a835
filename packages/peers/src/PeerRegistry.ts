/**
 * Who this node knows and how they behave: addresses and their health, connection state, a
 * reputation score that decays toward neutral, bans that grow longer each time, RTT. All updates are
 * atomic; every change is published on `changes`. With a data directory, bans and the address book
 * survive a restart.
 */
import type { Identity } from "@hotstuff2/wire"
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Option from "effect/Option"
import type * as Stream from "effect/Stream"
import * as internal from "./internal/registry.js"
import type { InvalidPeersConfig, PeersConfigInput } from "./PeersConfig.js"

export type PeerId = Identity.PeerId

/** A named thing a peer did; its weight is in `PeersConfig.weights`. */
export type ReputationEvent =
  | "InvalidMessage"
  | "BadSignature"
  | "RateLimitExceeded"
  | "Timeout"
  | "ProtocolViolation"
  | "UsefulMessage"

/**
 * Where an address came from. `config`, `bootstrap`, `dns` and `anchor` addresses are the operator's
 * (or proven by a past connection): gossip never pushes them out. `gossip` came in a peer record
 * signed by the peer; `inbound` is where a connection of the peer came from.
 */
export type AddressSource = "config" | "bootstrap" | "dns" | "anchor" | "gossip" | "inbound"

/** Sources that gossip and inbound connections can never push out of a peer's addresses. */
export const protectedSources: ReadonlySet<AddressSource> = internal.protectedSources

/** An address of a peer and how dialling it went. */
export interface AddressInfo {
  readonly address: string
  readonly source: AddressSource
  /** Clock millis of the last successful dial, if any. */
  readonly lastSuccess: number | undefined
  readonly lastFailure: number | undefined
  /** Failed dials since the last success. */
  readonly failures: number
}

export type ConnectionState = "disconnected" | "connecting" | "connected"

export interface Ban {
  /** Clock millis when it ends. */
  readonly until: number
  readonly reason: string
  /** How many times this peer has been banned (1 for the first ban). */
  readonly count: number
}

export interface PeerState {
  readonly id: PeerId
  /** A member of the current validator set: never banned for longer than `banCap`. */
  readonly validator: boolean
  readonly addresses: ReadonlyArray<AddressInfo>
  readonly connection: ConnectionState
  /** Reputation, decayed to the time it was read. 0 is neutral. */
  readonly score: number
  /** The ban in force, if any (an expired ban reads as none). */
  readonly ban: Option.Option<Ban>
  /** Bans so far, including expired ones: the next ban is longer. */
  readonly banCount: number
  /** Clock millis of the last frame or connection from this peer. */
  readonly lastSeen: number | undefined
  /** Smoothed round-trip time in milliseconds. */
  readonly rtt: number | undefined
  /** Failed dials since the last connection. */
  readonly consecutiveFailures: number
}

export type PeerEvent =
  | {
      readonly _tag: "Discovered"
      readonly peer: PeerId
      readonly address: string
      readonly source: AddressSource
    }
  | {
      readonly _tag: "Connected"
      readonly peer: PeerId
      readonly address: string
      readonly direction: "inbound" | "outbound"
    }
  | { readonly _tag: "Disconnected"; readonly peer: PeerId; readonly reason: string }
  | {
      readonly _tag: "ScoreChanged"
      readonly peer: PeerId
      readonly score: number
      readonly event: ReputationEvent
      /** What the peer did, when the reporter said (a protocol violation names its wire error). */
      readonly detail?: string
    }
  | {
      readonly _tag: "Banned"
      readonly peer: PeerId
      readonly until: number
      readonly reason: string
      readonly count: number
    }
  | { readonly _tag: "Unbanned"; readonly peer: PeerId }
  | {
      /**
       * Inbound connections of this known peer were refused after its key was proven (banned, not
       * admitted, wrong network...): at most one event per `refusalEventInterval`, counting the
       * refusals since the last one.
       */
      readonly _tag: "Refused"
      readonly peer: PeerId
      /** The latest refusal's reason (`InboundRefused.reason`) and detail. */
      readonly reason: string
      readonly detail: string
      readonly count: number
    }

export interface PeerRegistryShape {
  readonly get: (peer: PeerId) => Effect.Effect<Option.Option<PeerState>>
  readonly all: Effect.Effect<ReadonlyArray<PeerState>>
  /** Marks exactly these peers as validators (others keep their state, as non-validators). */
  readonly setValidators: (peers: ReadonlyArray<PeerId>) => Effect.Effect<void>
  /** Adds an address (publishing `Discovered` when it is new). */
  readonly addAddress: (peer: PeerId, address: string, source: AddressSource) => Effect.Effect<void>
  /**
   * Makes `addresses` the peer's addresses from `source`: adds the new ones (as `addAddress` does)
   * and forgets those from that source that are not among them (a newer peer record, a new DNS
   * answer). An address another source also gave is kept under that source.
   */
  readonly replaceAddresses: (
    peer: PeerId,
    source: AddressSource,
    addresses: ReadonlyArray<string>
  ) => Effect.Effect<void>
  /** Records a dial's outcome for that address (health used to order addresses). */
  readonly recordDial: (peer: PeerId, address: string, ok: boolean) => Effect.Effect<void>
  /** Addresses to dial, healthiest first: recent success, then fewest failures, then config order. */
  readonly dialOrder: (peer: PeerId) => Effect.Effect<ReadonlyArray<string>>
  readonly setConnection: (
    peer: PeerId,
    state: ConnectionState,
    detail?: {
      readonly address?: string
      readonly direction?: "inbound" | "outbound"
      readonly reason?: string
    }
  ) => Effect.Effect<void>
  /** Folds one RTT sample into the moving average. */
  readonly recordRtt: (peer: PeerId, millis: number) => Effect.Effect<void>
  readonly touch: (peer: PeerId) => Effect.Effect<void>
  /**
   * Applies an event's weight; bans the peer when its score falls to the threshold. `detail` says
   * what the peer did (carried on `ScoreChanged` and in a ban's reason). Returns the new score.
   */
  readonly report: (peer: PeerId, event: ReputationEvent, detail?: string) => Effect.Effect<number>
  /** Bans now: for `duration`, or the escalating duration when omitted; a validator's ban never exceeds `banCap`. */
  readonly ban: (
    peer: PeerId,
    reason: string,
    duration?: import("effect/Duration").DurationInput
  ) => Effect.Effect<void>
  readonly unban: (peer: PeerId) => Effect.Effect<void>
  /**
   * Records an inbound connection of `peer` refused after its key was proven. Only a peer the
   * registry knows is recorded (a flood of fresh keys creates nothing); see the `Refused` event.
   */
  readonly refused: (peer: PeerId, reason: string, detail: string) => Effect.Effect<void>
  readonly isBanned: (peer: PeerId) => Effect.Effect<boolean>
  readonly changes: Stream.Stream<PeerEvent>
}

export class PeerRegistry extends Context.Tag("@hotstuff2/peers/PeerRegistry")<
  PeerRegistry,
  PeerRegistryShape
>() {
  /** A registry; with `config.dataDirectory` it loads and persists bans and addresses there. */
  static readonly layer = (config: PeersConfigInput = {}): Layer.Layer<PeerRegistry, InvalidPeersConfig> =>
    Layer.scoped(PeerRegistry, internal.make(config))
}
