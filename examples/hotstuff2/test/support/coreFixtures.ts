// Keys, a core config and hand-made consensus messages for testing the core directly: validators from
// fixed seeds, proposals, votes, certificates and timeouts signed as a correct (or a Byzantine)
// validator would sign them.

import type { Message } from "@hotstuff2/wire"
import { Identity } from "@hotstuff2/wire"
import * as Either from "effect/Either"
import { signerBitmap } from "../../src/core/certificates.js"
import { encodePayload, makeDigests } from "../../src/core/crypto.js"
import type {
  Block,
  CoreConfig,
  JustifiedBlock,
  PeerId,
  QuorumCertificate,
  TimeoutCertificate
} from "../../src/core/types.js"

export const NETWORK_ID = "hotstuff2-core-test"
export const digests = makeDigests(NETWORK_ID)

/** `n` validators from fixed seeds, in signer-bit order. */
export const identities = (n: number): ReadonlyArray<Identity.Identity> =>
  Array.from({ length: n }, (_, i) => Either.getOrThrow(Identity.fromSeed(new Uint8Array(32).fill(i + 1))))

export const body = (view: bigint, height: bigint): Uint8Array =>
  new TextEncoder().encode(`v${view} h${height}`)

export const coreConfig = (
  keys: ReadonlyArray<Identity.Identity>,
  index: number,
  overrides: Partial<CoreConfig> = {}
): CoreConfig => ({
  networkId: NETWORK_ID,
  validators: keys.map((k) => k.peerId),
  identity: keys[index]!,
  baseTimeout: 200,
  maxTimeout: 3_200,
  viewWindow: 20,
  payload: body,
  maxPayloadBytes: 1024,
  ...overrides
})

/** A block the leader of `view` would build on `parent` (a JustifiedBlock or genesis) with `justify`. */
export const blockOn = (
  leader: PeerId,
  view: bigint,
  parent: Block,
  justify: QuorumCertificate,
  content: Uint8Array = body(view, parent.height + 1n)
): Block => digests.block(parent.hash, parent.height + 1n, encodePayload(view, leader, justify.view, content))

export const proposal = (
  leader: Identity.Identity,
  view: bigint,
  block: Block,
  justify: QuorumCertificate
): Message.Proposal => ({
  _tag: "Proposal",
  view,
  block,
  justify,
  proposer: leader.peerId,
  signature: Identity.sign(leader, digests.proposal(view, block.hash, justify))
})

export const vote = (voter: Identity.Identity, view: bigint, blockHash: Uint8Array): Message.Vote => ({
  _tag: "Vote",
  view,
  blockHash,
  voter: voter.peerId,
  signature: Identity.sign(voter, digests.vote(view, blockHash))
})

/** A certificate signed by the validators at `signers` (indices into `keys`). */
export const qc = (
  keys: ReadonlyArray<Identity.Identity>,
  view: bigint,
  blockHash: Uint8Array,
  signers: ReadonlyArray<number>
): QuorumCertificate => ({
  _tag: "QuorumCertificate",
  view,
  blockHash,
  signers: signerBitmap(signers),
  signatures: signers.map((i) => Identity.sign(keys[i]!, digests.vote(view, blockHash)))
})

export const timeout = (
  sender: Identity.Identity,
  view: bigint,
  highQC: QuorumCertificate
): Message.Timeout => ({
  _tag: "Timeout",
  view,
  highQC,
  sender: sender.peerId,
  signature: Identity.sign(sender, digests.timeout(view))
})

export const tc = (
  keys: ReadonlyArray<Identity.Identity>,
  view: bigint,
  signers: ReadonlyArray<number>,
  highQC: QuorumCertificate
): TimeoutCertificate => ({
  _tag: "TimeoutCertificate",
  view,
  signers: signerBitmap(signers),
  signatures: signers.map((i) => Identity.sign(keys[i]!, digests.timeout(view))),
  highQC
})

/**
 * A certified chain on genesis with one block per view 1..length (each proposed by its view's leader,
 * each justified by a certificate of all validators): the blocks with their justifies, and the
 * certificate of the last one.
 */
export const chain = (
  keys: ReadonlyArray<Identity.Identity>,
  length: number
): { readonly blocks: ReadonlyArray<JustifiedBlock>; readonly last: QuorumCertificate } => {
  const all = keys.map((_, i) => i)
  const blocks: Array<JustifiedBlock> = []
  let parent = digests.genesis
  let justify = digests.genesisQC
  for (let v = 1n; v <= BigInt(length); v++) {
    const leader = keys[Number(v % BigInt(keys.length))]!
    const block = blockOn(leader.peerId, v, parent, justify)
    blocks.push({ block, justify })
    parent = block
    justify = qc(keys, v, block.hash, all)
  }
  return { blocks, last: justify }
}
