/**
 * The bytes the core hashes and signs: block hashes, the block payload header, and one
 * domain-separated digest per signed message kind. Every digest starts with its own domain string and
 * the network id (u32 big-endian length, then UTF-8), so a signature for one purpose or one network
 * is never valid for another.
 */
import { createHash } from "node:crypto"
import { Identity } from "@hotstuff2/wire"
import type { Block, PeerId, QuorumCertificate } from "./types.js"

const utf8 = (text: string): Uint8Array => new TextEncoder().encode(text)

const DOMAIN_BLOCK = utf8("hotstuff2/block/v1")
const DOMAIN_PROPOSAL = utf8("hotstuff2/proposal/v1")
const DOMAIN_VOTE = utf8("hotstuff2/vote/v1")
const DOMAIN_TIMEOUT = utf8("hotstuff2/timeout/v1")
const DOMAIN_NEW_VIEW = utf8("hotstuff2/newview/v1")

/** The genesis block's payload. */
export const GENESIS_PAYLOAD = utf8("genesis")
/** Bytes before the body in every non-genesis payload: view, proposer, justify view. */
export const PAYLOAD_HEADER_BYTES = 8 + Identity.PEER_ID_BYTES + 8

export const u64 = (value: bigint): Uint8Array => {
  const out = new Uint8Array(8)
  new DataView(out.buffer).setBigUint64(0, value)
  return out
}

const sha256 = (...parts: ReadonlyArray<Uint8Array>): Uint8Array => {
  const h = createHash("sha256")
  for (const part of parts) h.update(part)
  return new Uint8Array(h.digest())
}

const lengthPrefixed = (bytes: Uint8Array): Uint8Array => {
  const out = new Uint8Array(4 + bytes.length)
  new DataView(out.buffer).setUint32(0, bytes.length)
  out.set(bytes, 4)
  return out
}

export const bytesEqual = (a: Uint8Array, b: Uint8Array): boolean => {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

/** Map keys for hashes. */
export const hex = (bytes: Uint8Array): string =>
  Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex")

/** What a payload header says about its block. */
export interface PayloadHeader {
  readonly view: bigint
  readonly proposer: PeerId
  readonly justifyView: bigint
  readonly bodyBytes: number
}

export const encodePayload = (
  view: bigint,
  proposer: PeerId,
  justifyView: bigint,
  body: Uint8Array
): Uint8Array => {
  const out = new Uint8Array(PAYLOAD_HEADER_BYTES + body.length)
  out.set(u64(view), 0)
  out.set(Identity.peerIdToBytes(proposer), 8)
  out.set(u64(justifyView), 8 + Identity.PEER_ID_BYTES)
  out.set(body, PAYLOAD_HEADER_BYTES)
  return out
}

/** Reads a payload header, or says why it is not one. */
export const decodePayload = (payload: Uint8Array): PayloadHeader | string => {
  if (payload.length < PAYLOAD_HEADER_BYTES) {
    return `payload has ${payload.length} bytes, shorter than its ${PAYLOAD_HEADER_BYTES}-byte header`
  }
  const data = new DataView(payload.buffer, payload.byteOffset, payload.byteLength)
  return {
    view: data.getBigUint64(0),
    proposer: Identity.peerIdFromPublicKey(payload.subarray(8, 8 + Identity.PEER_ID_BYTES)),
    justifyView: data.getBigUint64(8 + Identity.PEER_ID_BYTES),
    bodyBytes: payload.length - PAYLOAD_HEADER_BYTES
  }
}

/** The body a leader put in a block (empty for genesis). */
export const payloadBody = (payload: Uint8Array): Uint8Array =>
  payload.length < PAYLOAD_HEADER_BYTES ? new Uint8Array(0) : payload.subarray(PAYLOAD_HEADER_BYTES)

/** Digests and block hashes for one network id, with its prefix encoded once. */
export interface Digests {
  readonly blockHash: (parent: Uint8Array, height: bigint, payload: Uint8Array) => Uint8Array
  readonly block: (parent: Uint8Array, height: bigint, payload: Uint8Array) => Block
  readonly proposal: (view: bigint, blockHash: Uint8Array, justify: QuorumCertificate) => Uint8Array
  readonly vote: (view: bigint, blockHash: Uint8Array) => Uint8Array
  /** Over the view alone, so that every validator's timeout for a view signs the same bytes. */
  readonly timeout: (view: bigint) => Uint8Array
  readonly newView: (view: bigint, highQC: QuorumCertificate) => Uint8Array
  readonly genesis: Block
  /** The one certificate without signatures: view 0, certifying genesis. */
  readonly genesisQC: QuorumCertificate
}

export const makeDigests = (networkId: string): Digests => {
  const network = lengthPrefixed(utf8(networkId))
  const blockHash = (parent: Uint8Array, height: bigint, payload: Uint8Array) =>
    sha256(DOMAIN_BLOCK, network, parent, u64(height), payload)
  const block = (parent: Uint8Array, height: bigint, payload: Uint8Array): Block => ({
    hash: blockHash(parent, height, payload),
    parent,
    height,
    payload
  })
  const genesis = block(new Uint8Array(32), 0n, GENESIS_PAYLOAD)
  return {
    blockHash,
    block,
    proposal: (view, hash, justify) =>
      sha256(DOMAIN_PROPOSAL, network, u64(view), hash, u64(justify.view), justify.blockHash),
    vote: (view, hash) => sha256(DOMAIN_VOTE, network, u64(view), hash),
    timeout: (view) => sha256(DOMAIN_TIMEOUT, network, u64(view)),
    newView: (view, highQC) =>
      sha256(DOMAIN_NEW_VIEW, network, u64(view), u64(highQC.view), highQC.blockHash),
    genesis,
    genesisQC: {
      _tag: "QuorumCertificate",
      view: 0n,
      blockHash: genesis.hash,
      signers: new Uint8Array(0),
      signatures: []
    }
  }
}
