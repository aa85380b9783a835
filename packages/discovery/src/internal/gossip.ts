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
  /** Whether some validator of the tracked sets has no address this node could dial. */
  readonly missingAddresses: () => boolean
  readonly report: (peer: PeerId, event: PeerRegistry.ReputationEvent, detail: string) => Effect.Effect<void>
  /** A record was accepted: its addresses become the peer's gossip addresses. */
  readonly learned: (peer: PeerId, addresses: ReadonlyArray<string>) => Effect.Effect<void>
  readonly refused: (refusal: RecordRefused) => Effect.Effect<void>
  readonly now: () => number
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
  responsesReceived: number
  violations: number
}

interface Window {
  start: number
  count: number
  reported: boolean
}

export class Gossip {
  readonly stats: GossipStats = {
    recordsAccepted: 0,
    recordsRefused: {},
    requestsSent: 0,
    requestsAnswered: 0,
    requestsRefused: 0,
    responsesReceived: 0,
    violations: 0
  }
  private own: Message.PeerRecord | undefined
  private ownBytes: Uint8Array | undefined
  private readonly windows = new Map<PeerId, Window>()
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
    return Either.getOrThrow(Codec.encode(Message.PeerExchangeRequest.make({ max })))
  }

  /** A new connection: this node's record to it, and a request while some validator's address is missing. */
  onConnected(peer: PeerId): void {
    const messages: Array<Uint8Array> = []
    if (this.ownBytes !== undefined) messages.push(this.ownBytes)
    if (this.port.missingAddresses()) {
      messages.push(this.request(this.config.maxRecordsPerReply))
      this.stats.requestsSent++
    }
    if (messages.length > 0) this.port.send(peer, messages)
  }

  /** One round: a request to `peer` (chosen at random by the caller among the connected). */
  ask(peer: PeerId): void {
    this.stats.requestsSent++
    this.port.send(peer, [this.request(this.config.maxRecordsPerReply)])
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
            yield* this.answer(peer, message.max)
            break
          case "PeerExchangeResponse": {
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
          case "PeerRecord":
            yield* this.offer(message, peer)
            break
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
      const result = this.book.offer(record, from, this.port.now(), this.port.isValidator(record.peer))
      if (Either.isRight(result)) {
        this.stats.recordsAccepted++
        yield* this.port.learned(record.peer, result.right.addresses)
        return true
      }
      const refusal = result.left
      this.stats.recordsRefused[refusal.reason] = (this.stats.recordsRefused[refusal.reason] ?? 0) + 1
      yield* this.port.refused(refusal)
      const event = penalty[refusal.reason]
      if (from !== undefined && event !== undefined) yield* this.port.report(from, event, refusal.message)
      return false
    })
  }

  /** Answers a request, at most `requestsPerInterval` per peer per interval; more are refused. */
  private answer(peer: PeerId, max: number): Effect.Effect<void> {
    return Effect.gen(this, function* () {
      const now = this.port.now()
      let window = this.windows.get(peer)
      if (window === undefined || now - window.start >= this.intervalMillis) {
        window = { start: now, count: 0, reported: false }
        this.windows.set(peer, window)
      }
      if (++window.count > this.config.requestsPerInterval) {
        this.stats.requestsRefused++
        if (!window.reported) {
          window.reported = true
          yield* this.port.report(
            peer,
            "RateLimitExceeded",
            `more than ${this.config.requestsPerInterval} peer exchange requests in ${this.intervalMillis} ms`
          )
        }
        return
      }
      this.stats.requestsAnswered++
      const limit = Math.min(Math.max(0, max), this.config.maxRecordsPerReply)
      const records: Array<Message.PeerRecord> = []
      if (this.own !== undefined && this.own.addresses.length > 0 && limit > 0) records.push(this.own)
      records.push(...this.book.pick(limit - records.length, new Set(this.port.connected()), peer))
      const reply = Codec.encode(Message.PeerExchangeResponse.make({ records }))
      if (Either.isRight(reply)) this.port.send(peer, [reply.right])
    })
  }

  /** A peer gone for good: its request window is forgotten. */
  forget(peer: PeerId): void {
    this.windows.delete(peer)
  }
}
