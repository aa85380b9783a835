/**
 * Every message validators exchange, as Effect Schemas (`TaggedStruct`s). The field order below is
 * the order on the wire; WIRE.md specifies the bytes. Block contents are opaque bytes.
 */
import * as Arbitrary from "effect/Arbitrary"
import * as Schema from "effect/Schema"
import * as F from "./internal/field.js"

/** Largest validator set a certificate can describe (its signer bitmap is at most 512 bytes). */
export const MAX_VALIDATORS = 4096
/** Largest block payload the codec accepts; frame limits usually bind first. */
export const MAX_PAYLOAD_BYTES = 64 * 1024 * 1024
export const MAX_SYNC_BLOCKS = 1024
export const MAX_ADDRESSES = 16
export const MAX_ADDRESS_BYTES = 256
export const MAX_PEER_RECORDS = 256
/** A network id is at most 64 bytes (the transport's and the envelope's rule). */
export const MAX_NETWORK_ID_BYTES = 64
export const MAX_TOPIC_BYTES = 128
/**
 * Largest `data` of an `RpcRequest` or `RpcResponse`: 16 MiB less 1 KiB, so that one of them, with
 * its message slot, type byte, length prefixes and frame header (under 32 bytes), always fits in one
 * frame under the default `maxFrameBytes` (16 MiB).
 */
export const MAX_RPC_DATA_BYTES = 16 * 1024 * 1024 - 1024

const { hash, peerId, signature } = F
const view = F.u64

const popcount = (bitmap: Uint8Array): number => {
  let n = 0
  for (let i = 0; i < bitmap.length; i++) {
    let b = bitmap[i]!
    while (b !== 0) {
      b &= b - 1
      n++
    }
  }
  return n
}

/** A signer bitmap is canonical and names exactly as many signers as there are signatures. */
const certificateSigners = (c: { signers: Uint8Array; signatures: ReadonlyArray<Uint8Array> }) => {
  if (c.signers.length > 0 && c.signers[c.signers.length - 1] === 0) {
    return "signer bitmap must not end in a zero byte (one encoding per signer set)"
  }
  const count = popcount(c.signers)
  return (
    count === c.signatures.length ||
    `signer bitmap names ${count} signers but carries ${c.signatures.length} signatures`
  )
}

/**
 * A refined TaggedStruct validates in `make` but no longer fills in `_tag`; give it back, so that
 * `QuorumCertificate.make({ view, ... })` works like every other message's `make`.
 */
const withTaggedMake = <S extends Schema.Schema.Any & { make: (a: any, options?: any) => any }>(
  schema: S,
  tag: string
): S & {
  readonly make: (
    props: Omit<Schema.Schema.Type<S>, "_tag">,
    options?: Schema.MakeOptions
  ) => Schema.Schema.Type<S>
} => {
  const make = schema.make
  ;(schema as { make: unknown }).make = (props: object, options?: Schema.MakeOptions) =>
    make({ _tag: tag, ...props }, options)
  return schema as any
}

/** Test values for certificates: as many signer bits as signatures, at a random offset. */
const certificateArbitrary = (from: (fc: any) => any) => (fc: any) =>
  fc.tuple(from(fc), fc.nat(40)).map(([c, offset]: [any, number]) => {
    const bits = c.signatures.length
    const signers = new Uint8Array(bits === 0 ? 0 : ((offset + bits - 1) >> 3) + 1)
    for (let i = offset; i < offset + bits; i++) signers[i >> 3]! |= 1 << (i & 7)
    return { ...c, signers }
  })

// Signer bitmaps: bit i (byte i >> 3, bit i & 7, least significant first) is the validator at index i.
const signers = F.bytes(MAX_VALIDATORS / 8)
const signatures = F.list(signature, MAX_VALIDATORS)

const QuorumCertificateField = F.message(
  "QuorumCertificate",
  0x03,
  { view, blockHash: hash, signers, signatures },
  (s) =>
    s.pipe(
      Schema.filter(certificateSigners, {
        arbitrary: () => certificateArbitrary(Arbitrary.makeLazy(s))
      })
    )
)

const BlockField = F.struct("Block", {
  hash,
  parent: hash,
  height: F.u64,
  payload: F.bytes(MAX_PAYLOAD_BYTES)
})

const ProposalField = F.message("Proposal", 0x01, {
  view,
  block: BlockField,
  justify: QuorumCertificateField,
  proposer: peerId,
  signature
})

const VoteField = F.message("Vote", 0x02, { view, blockHash: hash, voter: peerId, signature })

const NewViewField = F.message("NewView", 0x04, {
  view,
  highQC: QuorumCertificateField,
  sender: peerId,
  signature
})

const TimeoutField = F.message("Timeout", 0x05, {
  view,
  highQC: QuorumCertificateField,
  sender: peerId,
  signature
})

const TimeoutCertificateField = F.message(
  "TimeoutCertificate",
  0x06,
  { view, signers, signatures, highQC: QuorumCertificateField },
  (s) =>
    s.pipe(
      Schema.filter(certificateSigners, {
        arbitrary: () => certificateArbitrary(Arbitrary.makeLazy(s))
      })
    )
)

const SyncRequestField = F.message("SyncRequest", 0x10, {
  requestId: F.u64,
  fromHeight: F.u64,
  maxBlocks: F.u32
})

const SyncResponseField = F.message("SyncResponse", 0x11, {
  requestId: F.u64,
  blocks: F.list(BlockField, MAX_SYNC_BLOCKS, 4),
  highQC: F.option(QuorumCertificateField)
})

// Request/response (@effect/rpc) frames, point to point on the sync channel: opaque to this codec.
const RpcRequestField = F.message("RpcRequest", 0x12, { data: F.bytes(MAX_RPC_DATA_BYTES) })
const RpcResponseField = F.message("RpcResponse", 0x13, { data: F.bytes(MAX_RPC_DATA_BYTES) })

const PingField = F.message("Ping", 0x20, { nonce: F.u64 })
const PongField = F.message("Pong", 0x21, { nonce: F.u64 })

/** Most ranges of received-but-undelivered sequence numbers one `Ack` lists. */
export const MAX_ACK_RANGES = 32

const AckRangeField = F.struct("AckRange", { first: F.u64, last: F.u64 })

const AckField = F.message("Ack", 0x22, {
  incarnation: F.u64,
  cumulative: F.u64,
  ranges: F.list(AckRangeField, MAX_ACK_RANGES, 4)
})

const PeerRecordField = F.message("PeerRecord", 0x30, {
  peer: peerId,
  network: F.utf8(MAX_NETWORK_ID_BYTES),
  addresses: F.list(F.utf8(MAX_ADDRESS_BYTES), MAX_ADDRESSES, 4),
  sequence: F.u64,
  epoch: F.u64,
  signature
})

const PeerExchangeRequestField = F.message("PeerExchangeRequest", 0x31, {
  max: F.u32,
  epoch: F.u64,
  connected: F.bytes(MAX_VALIDATORS / 8)
})
const PeerExchangeResponseField = F.message("PeerExchangeResponse", 0x32, {
  records: F.list(PeerRecordField, MAX_PEER_RECORDS, 4)
})

const AppMessageField = F.message("AppMessage", 0x40, {
  topic: F.utf8(MAX_TOPIC_BYTES),
  data: F.bytes(MAX_PAYLOAD_BYTES)
})

/** A block: its hash, its parent's hash, its height and its opaque contents. */
export const Block = BlockField.schema
export interface Block extends Schema.Schema.Type<typeof Block> {}

/** n - f votes for one block in one view, as a signer bitmap and the signatures in bitmap order. */
export const QuorumCertificate = withTaggedMake(QuorumCertificateField.schema, "QuorumCertificate")
export interface QuorumCertificate extends Schema.Schema.Type<typeof QuorumCertificate> {}

/** The leader's proposal of a block for a view, justified by the highest QC it knows. */
export const Proposal = ProposalField.schema
export interface Proposal extends Schema.Schema.Type<typeof Proposal> {}

/** A validator's vote for a block in a view. */
export const Vote = VoteField.schema
export interface Vote extends Schema.Schema.Type<typeof Vote> {}

/** Sent to the next leader on entering a view, carrying the sender's highest QC. */
export const NewView = NewViewField.schema
export interface NewView extends Schema.Schema.Type<typeof NewView> {}

/** A validator gives up on a view. */
export const Timeout = TimeoutField.schema
export interface Timeout extends Schema.Schema.Type<typeof Timeout> {}

/** n - f timeouts for one view. */
export const TimeoutCertificate = withTaggedMake(TimeoutCertificateField.schema, "TimeoutCertificate")
export interface TimeoutCertificate extends Schema.Schema.Type<typeof TimeoutCertificate> {}

/** Asks a peer for up to `maxBlocks` blocks from `fromHeight` on. */
export const SyncRequest = SyncRequestField.schema
export interface SyncRequest extends Schema.Schema.Type<typeof SyncRequest> {}

/** Answers a `SyncRequest` with blocks and the QC that certifies the last of them, if any. */
export const SyncResponse = SyncResponseField.schema
export interface SyncResponse extends Schema.Schema.Type<typeof SyncResponse> {}

/**
 * One frame from an RPC client to a server (a request, an ack, an interrupt, an end of input, a
 * ping), point to point on the sync channel: `data` is WIRE.md's RPC data (a stream id, then
 * MessagePack). Sent and read by `NodeRpc` in `@hotstuff2/node`; never in an envelope.
 */
export const RpcRequest = RpcRequestField.schema
export interface RpcRequest extends Schema.Schema.Type<typeof RpcRequest> {}

/** One frame from an RPC server back to a client (a chunk, an exit, a refusal), as `RpcRequest`. */
export const RpcResponse = RpcResponseField.schema
export interface RpcResponse extends Schema.Schema.Type<typeof RpcResponse> {}

/** Liveness probe on the heartbeat channel (internal). */
export const Ping = PingField.schema
export interface Ping extends Schema.Schema.Type<typeof Ping> {}

/** Answer to a `Ping` with the same nonce (internal). */
export const Pong = PongField.schema
export interface Pong extends Schema.Schema.Type<typeof Pong> {}

/**
 * Reliable delivery's acknowledgement (internal, on the heartbeat channel): the sender has delivered
 * (or skipped) every reliable message of the receiver's stream `incarnation` up to `cumulative`, and
 * holds the runs in `ranges` (ascending, above `cumulative`) without having finished with them yet:
 * held above a gap, or (a first run from `cumulative + 1`) delivered to a consumer still at work.
 */
export const Ack = AckField.schema
export interface Ack extends Schema.Schema.Type<typeof Ack> {}

/**
 * Where a peer of network `network` can be reached, signed by that peer over its signing bytes; a
 * higher `sequence` replaces a lower one. `epoch` is the newest validator-set epoch the signer knew.
 */
export const PeerRecord = PeerRecordField.schema
export interface PeerRecord extends Schema.Schema.Type<typeof PeerRecord> {}

/**
 * Asks a peer for up to `max` peer records it knows (internal). `connected` is a bitmap over the
 * validator set of `epoch` sorted by PeerId (bit i of byte i >> 3 is validator i, least significant
 * first): the validators the asker is connected to, whose records it does not need.
 */
export const PeerExchangeRequest = PeerExchangeRequestField.schema
export interface PeerExchangeRequest extends Schema.Schema.Type<typeof PeerExchangeRequest> {}

/** Answer to a `PeerExchangeRequest` (internal). */
export const PeerExchangeResponse = PeerExchangeResponseField.schema
export interface PeerExchangeResponse extends Schema.Schema.Type<typeof PeerExchangeResponse> {}

/** Anything else the application needs to send, under a topic of its choosing. */
export const AppMessage = AppMessageField.schema
export interface AppMessage extends Schema.Schema.Type<typeof AppMessage> {}

/** Every message type. */
export const Message = Schema.Union(
  Proposal,
  Vote,
  QuorumCertificate,
  NewView,
  Timeout,
  TimeoutCertificate,
  SyncRequest,
  SyncResponse,
  RpcRequest,
  RpcResponse,
  Ping,
  Pong,
  Ack,
  PeerRecord,
  PeerExchangeRequest,
  PeerExchangeResponse,
  AppMessage
)
export type Message = typeof Message.Type

/** A message type's name, e.g. `"Vote"`. */
export type MessageTag = Message["_tag"]

/** @internal The wire definition of every message type, in type-code order: the codec compiles these. */
export const definitions = [
  ProposalField,
  VoteField,
  QuorumCertificateField,
  NewViewField,
  TimeoutField,
  TimeoutCertificateField,
  SyncRequestField,
  SyncResponseField,
  RpcRequestField,
  RpcResponseField,
  PingField,
  PongField,
  AckField,
  PeerRecordField,
  PeerExchangeRequestField,
  PeerExchangeResponseField,
  AppMessageField
] as ReadonlyArray<F.MessageField<MessageTag, F.Fields, Schema.Schema.Any>>

/** @internal The Block wire form, reused by WIRE.md's generator and tests. */
export const blockDefinition = BlockField
