// The record book: the newest verified record of each peer, and the limits that keep it small.
// Validators' records are always kept (the set is bounded by the config). Non-validators' records
// (bootstrap nodes, admitted full nodes) are kept only when asked for, at most
// `maxNonValidatorRecords` in all and `maxNonValidatorsPerSubnet` per subnet, so that a flood of valid
// records from fresh attacker keys fills a bounded corner of memory and never touches validators.
import type { Message } from "@hotstuff2/wire"
import * as Either from "effect/Either"
import type { DiscoveryConfig } from "../DiscoveryConfig.js"
import { RecordRefused } from "../DiscoveryError.js"
import { type AddressPolicy, check, subnetOf } from "./addresses.js"
import { type Accepted, checkRecord, checkSignature, type PeerId } from "./record.js"

export interface Entry {
  readonly record: Message.PeerRecord
  /** Its dialable addresses, as kept. */
  readonly addresses: ReadonlyArray<string>
  /** Clock millis when it was accepted. */
  readonly at: number
  readonly validator: boolean
  /** The subnets its addresses count against (non-validators only). */
  readonly subnets: ReadonlyArray<string>
}

export class Book {
  private readonly entries = new Map<PeerId, Entry>()
  private readonly perSubnet = new Map<string, number>()
  private nonValidators = 0

  constructor(
    private readonly local: PeerId,
    private readonly networkId: string,
    private readonly config: DiscoveryConfig,
    private readonly policy: AddressPolicy,
    /** Whether non-validators' records are kept (this node admits them, or bootstraps from them). */
    private readonly keepNonValidators: boolean
  ) {}

  get size(): number {
    return this.entries.size
  }

  get(peer: PeerId): Entry | undefined {
    return this.entries.get(peer)
  }

  values(): IterableIterator<Entry> {
    return this.entries.values()
  }

  /**
   * Checks `record` (sent by `from`, if a peer sent it) and keeps it when it is newer than the one
   * held and within the limits. `isValidator` says whether its peer is in the tracked validator sets.
   */
  offer(
    record: Message.PeerRecord,
    from: PeerId | undefined,
    now: number,
    isValidator: boolean,
    /** Whether a peer is connected now: a full book makes room by forgetting a disconnected non-validator. */
    isConnected: (peer: PeerId) => boolean = () => false
  ): Either.Either<Accepted, RecordRefused> {
    const held = this.entries.get(record.peer)
    const checked = checkRecord(record, {
      local: this.local,
      networkId: this.networkId,
      nowMillis: now,
      config: this.config,
      policy: this.policy,
      held: held?.record.sequence,
      from
    })
    if (Either.isLeft(checked)) return checked
    const accepted = checked.right
    let subnets: Array<string> = []
    if (!isValidator) {
      const refuse = (detail: string) =>
        Either.left(
          new RecordRefused({
            peer: record.peer,
            ...(from === undefined ? {} : { from }),
            reason: "not-kept",
            detail
          })
        )
      if (!this.keepNonValidators) return refuse("not a validator, and this node keeps no other records")
      subnets = [
        ...new Set(accepted.addresses.map((a) => subnetOf((check(a, this.policy) as { host: string }).host)))
      ]
      const own = new Set(held?.subnets ?? [])
      const full = subnets.find(
        (s) => !own.has(s) && (this.perSubnet.get(s) ?? 0) >= this.config.maxNonValidatorsPerSubnet
      )
      if (full !== undefined)
        return refuse(`subnet ${full} already has ${this.config.maxNonValidatorsPerSubnet} records`)
      if (held === undefined && this.nonValidators >= this.config.maxNonValidatorRecords) {
        // Room goes to the newcomer only at the expense of the oldest record of a peer that is not
        // connected (records of live peers first, as commonware keeps them): a flood of made-up
        // records cannot hold the book for good, nor push out the peers this node talks to.
        const victim = this.oldestEvictable(isConnected)
        if (victim === undefined) {
          return refuse(`the book holds ${this.config.maxNonValidatorRecords} non-validator records`)
        }
        const signed = checkSignature(accepted, from)
        if (Either.isLeft(signed)) return signed
        this.remove(victim)
        return this.keep(record, accepted, now, isValidator, subnets, held)
      }
    }
    // Only now, once the record would be kept: its signature.
    const signed = checkSignature(accepted, from)
    if (Either.isLeft(signed)) return signed
    return this.keep(record, accepted, now, isValidator, subnets, held)
  }

  /** The oldest non-validator record of a peer not connected now, if any. */
  private oldestEvictable(isConnected: (peer: PeerId) => boolean): Entry | undefined {
    let oldest: Entry | undefined
    for (const entry of this.entries.values()) {
      if (entry.validator || isConnected(entry.record.peer)) continue
      if (oldest === undefined || entry.at < oldest.at) oldest = entry
    }
    return oldest
  }

  private keep(
    record: Message.PeerRecord,
    accepted: Accepted,
    now: number,
    isValidator: boolean,
    subnets: Array<string>,
    held: Entry | undefined
  ): Either.Either<Accepted, RecordRefused> {
    if (held !== undefined) this.remove(held)
    const entry: Entry = { record, addresses: accepted.addresses, at: now, validator: isValidator, subnets }
    this.entries.set(record.peer, entry)
    if (!isValidator) {
      this.nonValidators++
      for (const s of subnets) this.perSubnet.set(s, (this.perSubnet.get(s) ?? 0) + 1)
    }
    return Either.right(accepted)
  }

  /** A peer that became a validator, or stopped being one: its entry is counted again. */
  reclassify(isValidator: (peer: PeerId) => boolean): void {
    for (const entry of [...this.entries.values()]) {
      const now = isValidator(entry.record.peer)
      if (now === entry.validator) continue
      this.remove(entry)
      if (now || this.keepNonValidators) {
        const next: Entry = { ...entry, validator: now, subnets: now ? [] : entry.subnets }
        this.entries.set(entry.record.peer, next)
        if (!now) {
          this.nonValidators++
          for (const s of next.subnets) this.perSubnet.set(s, (this.perSubnet.get(s) ?? 0) + 1)
        }
      }
    }
  }

  private remove(entry: Entry): void {
    this.entries.delete(entry.record.peer)
    if (!entry.validator) {
      this.nonValidators--
      for (const s of entry.subnets) {
        const n = (this.perSubnet.get(s) ?? 1) - 1
        if (n === 0) this.perSubnet.delete(s)
        else this.perSubnet.set(s, n)
      }
    }
  }
}
