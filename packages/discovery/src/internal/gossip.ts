// Gossip of signed peer records on the discovery channel. Each node holds its own record (signed,
// re-signed when its addresses or epoch change) and a book of others'. It pushes its record to every
// new connection, asks one random connected peer for records every `gossipInterval` (and a new
// connection at once while some validator has no address yet), and answers requests with at most
// `maxRecordsPerReply` records, validators' and connected peers' first. Everything a peer sends that
// breaks the rules is refused with a typed reason, counted, and charged to that peer where it shows
// bad faith; nothing it sends can remove what is known.
import type { PeerRegistry } from "@hotstuff2/peers"
import { Codec, Message } from "@hotstuff2/wire"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Random from "effect/Random"
import type { DiscoveryConfig } from "../DiscoveryConfig.js"
import type { RecordRefusal, RecordRefused } from "../DiscoveryError.js"
import type { Book } from "./book.js"
import type { PeerId } from "./record.js"

/** What gossip needs of the node around it. */
export interface Port {
  /** Queues messages to `peer` on the discovery channel (a drop channel: a full queue drops them). */
  readonly send: (peer: PeerId, messages: ReadonlyArray<Uint8Array>) => void
  readonly connected: () => ReadonlyArray<PeerId>
  readonly isValidator: (peer: PeerId) => boolean
  readonly isConnected: (peer: PeerId) => boolean
  /** Whether some validator of the tracked sets has no address this node could dial. */
  readonly missingAddresses: () => boolean
  readonly report: (peer: PeerId, event: PeerRegistry.ReputationEvent, detail: string) => Effect.Effect<void>
  /** A record was accepted: its addresses become the peer's gossip addresses. */
  readonly learned: (peer: PeerId, addresses: ReadonlyArray<string>) => Effect.Effect<void>
  readonly refused: (refusal: RecordRefused) => Effect.Effect<void>
  readonly now: () => number
  /** What a request tells: the newest epoch, and the bitmap of its validators this node is connected to. */
  readonly hint: () => { readonly epoch: bigint; readonly connected: Uint8Array }
  /** The validators a request's bitmap names (none when its epoch is not this node's newest). */
  readonly hinted: (epoch: bigint, connected: Uint8Array) => ReadonlySet<PeerId>
}

/** What a refusal costs the peer that sent the record (none: honest peers send it too). */
const penalty: Record<RecordRefusal, PeerRegistry.ReputationEvent | undefined> = {
  malformed: "InvalidMessage",
  "wrong-network": "ProtocolViolation",
  "bad-signature": "BadSignature",
  // An older copy, a peer's record that ran out of room, an address this node will not dial, this
  // node's own old record: an honest peer that relays what it holds sends these.
  stale: undefined,
  "not-kept": undefined,
  "bad-address": undefined,
  "own-record": undefined,
  // Five minutes ahead of this node: no honest clock signs that.
  future: "InvalidMessage"
}

export interface GossipStats {
  recordsAccepted: number
  recordsRefused: Partial<Record<RecordRefusal, number>>
  requestsSent: number
  requestsAnswered: number
  requestsRefused: number
  /** Pushed records past `requestsPerInterval` in an interval, not read. */
  pushesRefused: number
  responsesReceived: number
  violations: number
}

/** One peer's requests and pushed records in the current interval. */
interface Window {
  start: number
  requests: number
  pushes: number
  reported: boolean
}

/** Replies this node waits for from one peer, at most: one per request it sent. */
const MAX_OUTSTANDING = 4

export class Gossip {
  readonly stats: GossipStats = {
    recordsAccepted: 0,
    recordsRefused: {},
    requestsSent: 0,
    requestsAnswered: 0,
    requestsRefused: 0,
    pushesRefused: 0,
    responsesReceived: 0,
    violations: 0
  }
  private own: Message.PeerRecord | undefined
  private ownBytes: Uint8Array | undefined
  private readonly windows = new Map<PeerId, Window>()
  /** Requests sent to each peer not yet answered: a reply nobody asked for is refused unread. */
  private readonly outstanding = new Map<PeerId, number>()
  private readonly intervalMillis: number

  constructor(
    private readonly config: DiscoveryConfig,
    private readonly book: Book,
    private readonly port: Port,
    intervalMillis: number
  ) {
    this.intervalMillis = intervalMillis
  }

  get ownRecord(): Message.PeerRecord | undefined {
    return this.own
  }

  /** Replaces this node's own record (signed by the caller); it is pushed to the connected peers. */
  setOwn(record: Message.PeerRecord): void {
    this.own = record
    this.ownBytes = record.addresses.length === 0 ? undefined : Either.getOrThrow(Codec.encode(record))
    if (this.ownBytes !== undefined)
      for (const peer of this.port.connected()) this.port.send(peer, [this.ownBytes])
  }

  private request(max: number): Uint8Array {
    return Either.getOrThrow(Codec.encode(Message.PeerExchangeRequest.make({ max, ...this.port.hint() })))
  }

  /** A new connection: this node's record to it, and a request while some validator's address is missing. */
  onConnected(peer: PeerId): void {
    const messages: Array<Uint8Array> = []
    if (this.ownBytes !== undefined) messages.push(this.ownBytes)
    if (this.port.missingAddresses()) {
      messages.push(this.request(this.config.maxRecordsPerReply))
      this.expect(peer)
    }
    if (messages.length > 0) this.port.send(peer, messages)
  }

  /** One round: a request to `peer` (chosen at random by the caller among the connected). */
  ask(peer: PeerId): void {
    this.expect(peer)
    this.port.send(peer, [this.request(this.config.maxRecordsPerReply)])
  }

  private expect(peer: PeerId): void {
    this.stats.requestsSent++
    this.outstanding.set(peer, Math.min(MAX_OUTSTANDING, (this.outstanding.get(peer) ?? 0) + 1))
  }

  /** The peer's window for this interval (a new one when the last is over). */
  private windowOf(peer: PeerId): Window {
    const now = this.port.now()
    let window = this.windows.get(peer)
    if (window === undefined || now - window.start >= this.intervalMillis) {
      window = { start: now, requests: 0, pushes: 0, reported: false }
      this.windows.set(peer, window)
    }
    return window
  }

  /** Past its budget in this interval: refused, and charged once per interval. */
  private overBudget(peer: PeerId, window: Window, what: string): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (window.reported) return Effect.void
      window.reported = true
      return this.port.report(
        peer,
        "RateLimitExceeded",
        `more than ${this.config.requestsPerInterval} ${what} in ${this.intervalMillis} ms`
      )
    })
  }

  /** Messages from `peer` on the discovery channel. */
  onFrame(peer: PeerId, messages: ReadonlyArray<Uint8Array>): Effect.Effect<void> {
    return Effect.gen(this, function* () {
      for (const bytes of messages) {
        const decoded = Codec.decode(bytes)
        if (Either.isLeft(decoded)) {
          this.stats.violations++
          yield* this.port.report(peer, "InvalidMessage", `discovery message: ${decoded.left.message}`)
          continue
        }
        const message = decoded.right
        switch (message._tag) {
          case "PeerExchangeRequest":
            yield* this.answer(peer, message.max, this.port.hinted(message.epoch, message.connected))
            break
          case "PeerExchangeResponse": {
            const waiting = this.outstanding.get(peer) ?? 0
            if (waiting === 0) {
              // Records nobody asked for would cost this node a signature check each, at the
              // sender's pace: refused unread.
              this.stats.violations++
              yield* this.port.report(peer, "ProtocolViolation", "a peer exchange reply nobody asked for")
              break
            }
            if (waiting === 1) this.outstanding.delete(peer)
            else this.outstanding.set(peer, waiting - 1)
            this.stats.responsesReceived++
            let records = message.records
            if (records.length > this.config.maxRecordsPerReply) {
              this.stats.violations++
              yield* this.port.report(
                peer,
                "ProtocolViolation",
                `a reply of ${records.length} records (at most ${this.config.maxRecordsPerReply} are asked for)`
              )
              records = records.slice(0, this.config.maxRecordsPerReply)
            }
            for (const record of records) yield* this.offer(record, peer)
            break
          }
          case "PeerRecord": {
            // A peer pushes its own record when it connects or its record changes: a few per
            // interval at most.
            const window = this.windowOf(peer)
            if (++window.pushes > this.config.requestsPerInterval) {
              this.stats.pushesRefused++
              yield* this.overBudget(peer, window, "pushed peer records")
              break
            }
            yield* this.offer(message, peer)
            break
          }
          default:
            this.stats.violations++
            yield* this.port.report(peer, "ProtocolViolation", `a ${message._tag} on the discovery channel`)
        }
      }
    })
  }

  /** A record from `from` (a peer, or undefined for one read elsewhere): kept, or refused and counted. */
  offer(record: Message.PeerRecord, from: PeerId | undefined): Effect.Effect<boolean> {
    return Effect.gen(this, function* () {
      const result = this.book.offer(
        record,
        from,
        this.port.now(),
        this.port.isValidator(record.peer),
        this.port.isConnected
      )
      if (Either.isRight(result)) {
        this.stats.recordsAccepted++
        yield* this.port.learned(record.peer, result.right.addresses)
        return true
      }
      const refusal = result.left
      this.stats.recordsRefused[refusal.reason] = (this.stats.recordsRefused[refusal.reason] ?? 0) + 1
      yield* this.port.refused(refusal)
      // A record dated ahead is its signer's doing: a relay whose clock runs a little ahead of this
      // node's accepted it in good faith, so only the signer pays.
      const event = refusal.reason === "future" && from !== record.peer ? undefined : penalty[refusal.reason]
      if (from !== undefined && event !== undefined) yield* this.port.report(from, event, refusal.message)
      return false
    })
  }

  /**
   * Answers a request, at most `requestsPerInterval` per peer per interval; more are refused. The
   * records the asker needs, at most `max`: not those of validators it is connected to (`skip`),
   * validators' first, each group in a random order (every asker of one node gets a different
   * sample, so a node learning from several peers does not hear the same records from each).
   */
  private answer(peer: PeerId, max: number, skip: ReadonlySet<PeerId>): Effect.Effect<void> {
    return Effect.gen(this, function* () {
      const window = this.windowOf(peer)
      if (++window.requests > this.config.requestsPerInterval) {
        this.stats.requestsRefused++
        return yield* this.overBudget(peer, window, "peer exchange requests")
      }
      this.stats.requestsAnswered++
      const limit = Math.min(Math.max(0, max), this.config.maxRecordsPerReply)
      const records: Array<Message.PeerRecord> = []
      if (this.own !== undefined && this.own.addresses.length > 0 && limit > 0 && !skip.has(this.own.peer)) {
        records.push(this.own)
      }
      const eligible = [...this.book.values()].filter(
        (e) => e.record.peer !== peer && !skip.has(e.record.peer)
      )
      const validators = yield* Random.shuffle(eligible.filter((e) => e.validator))
      const others = yield* Random.shuffle(eligible.filter((e) => !e.validator))
      for (const entry of [...validators, ...others]) {
        if (records.length >= limit) break
        records.push(entry.record)
      }
      const reply = Codec.encode(Message.PeerExchangeResponse.make({ records }))
      if (Either.isRight(reply)) this.port.send(peer, [reply.right])
    })
  }

  /** A peer disconnected: no reply is awaited from it any more (its window stays until it is over). */
  forget(peer: PeerId): void {
    this.outstanding.delete(peer)
  }

  /** Forgets the windows of intervals that are over (each gossip round): the map holds recent senders only. */
  prune(): void {
    const now = this.port.now()
    for (const [peer, window] of this.windows) {
      if (now - window.start >= this.intervalMillis) this.windows.delete(peer)
    }
  }
}
