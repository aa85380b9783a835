// Signed peer records: building this node's own, and checking one that arrived. A record is the
// `PeerRecord` message signed (Ed25519, the wire's signing bytes) by the peer it describes, so a
// relay can pass it on but never change it; identity still comes only from the key a connection
// proves, a record is a dial hint.
import { Codec, Identity, type Message } from "@hotstuff2/wire"
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import type { DiscoveryConfig } from "../DiscoveryConfig.js"
import { RecordRefused } from "../DiscoveryError.js"
import { type AddressPolicy, check } from "./addresses.js"

export type PeerId = Identity.PeerId

const NO_SIGNATURE = new Uint8Array(Identity.SIGNATURE_BYTES)

/** This node's record: these addresses, signed now. Fails only on addresses the wire cannot carry. */
export const sign = (
  identity: Identity.Identity,
  networkId: string,
  addresses: ReadonlyArray<string>,
  sequence: bigint,
  epoch: bigint
): Either.Either<Message.PeerRecord, string> => {
  const unsigned = {
    _tag: "PeerRecord" as const,
    peer: identity.peerId,
    network: networkId,
    addresses: [...addresses],
    sequence,
    epoch,
    signature: NO_SIGNATURE
  }
  return Either.match(Codec.signingBytes(unsigned), {
    onLeft: (e) => Either.left(`own record does not encode: ${e.message}`),
    onRight: (bytes) => Either.right({ ...unsigned, signature: Identity.sign(identity, bytes) })
  })
}

/** Whether the record's signature is its peer's over its signing bytes. */
export const verifySignature = (record: Message.PeerRecord): boolean =>
  Either.match(Codec.signingBytes(record), {
    onLeft: () => false,
    onRight: (bytes) => Identity.verify(record.peer, bytes, record.signature)
  })

export interface CheckContext {
  readonly local: PeerId
  readonly networkId: string
  readonly nowMillis: number
  readonly config: DiscoveryConfig
  readonly policy: AddressPolicy
  /** The sequence of the record held for this peer, if any. */
  readonly held: bigint | undefined
  readonly from: PeerId | undefined
}

/** A record that passed: its dialable addresses (at most `maxRecordAddresses`) and what was dropped. */
export interface Accepted {
  readonly record: Message.PeerRecord
  readonly addresses: ReadonlyArray<string>
  /** Addresses left out (refused, or past `maxRecordAddresses`). */
  readonly dropped: number
}

/**
 * Checks a record without its signature, cheapest checks first: network, own key, freshness against
 * the held record, the future bound, dialable addresses. The caller decides whether it would keep the
 * record, and only then checks the signature (`checkSignature`): a record it would refuse anyway
 * costs no signature check, whoever replays it.
 */
export const checkRecord = (
  record: Message.PeerRecord,
  context: CheckContext
): Either.Either<Accepted, RecordRefused> => {
  const refuse = (reason: RecordRefused["reason"], detail: string) =>
    Either.left(
      new RecordRefused({
        peer: record.peer,
        ...(context.from === undefined ? {} : { from: context.from }),
        reason,
        detail
      })
    )
  if (record.network !== context.networkId) {
    return refuse("wrong-network", `signed for network ${JSON.stringify(record.network)}`)
  }
  if (record.peer === context.local) return refuse("own-record", "a record of this node's own key")
  if (context.held !== undefined && record.sequence <= context.held) {
    return refuse("stale", `sequence ${record.sequence}, held ${context.held}`)
  }
  const aheadMillis = Number(record.sequence) - context.nowMillis
  if (aheadMillis > Duration.toMillis(context.config.maxFutureSkew)) {
    return refuse("future", `sequence ${record.sequence} is ${aheadMillis} ms ahead of this node's clock`)
  }
  const addresses: Array<string> = []
  let dropped = 0
  for (const address of record.addresses) {
    const checked = check(address, context.policy)
    if (
      typeof checked === "string" ||
      addresses.length >= context.config.maxRecordAddresses ||
      addresses.includes(address)
    ) {
      dropped++
      continue
    }
    addresses.push(address)
  }
  if (addresses.length === 0) {
    return refuse("bad-address", `none of its ${record.addresses.length} addresses may be dialled`)
  }
  return Either.right({ record, addresses, dropped })
}

/** The signature check, last: after the caller decided it would keep the record (a check costs ~0.1 ms). */
export const checkSignature = (
  accepted: Accepted,
  from: PeerId | undefined
): Either.Either<Accepted, RecordRefused> =>
  verifySignature(accepted.record)
    ? Either.right(accepted)
    : Either.left(
        new RecordRefused({
          peer: accepted.record.peer,
          ...(from === undefined ? {} : { from }),
          reason: "bad-signature",
          detail: "not signed by the peer it names"
        })
      )
