/**
 * The checks a block passes before it enters the tree, whether it came in a proposal or a sync
 * answer: its hash recomputes, its payload header names its view, the view's leader and its
 * justify's view, it extends the block its justify certifies, and its body fits the limit. Each
 * failure is a sentence for a `Refused` output.
 */
import { bytesEqual, type Digests, decodePayload, type PayloadHeader } from "./crypto.js"
import { leaderOf } from "./pacemaker.js"
import type { Block, CoreConfig, QuorumCertificate } from "./types.js"

/** The block's payload header, or why the block is malformed (signatures and certificates aside). */
export const checkBlock = (
  config: CoreConfig,
  digests: Digests,
  block: Block,
  justify: QuorumCertificate
): PayloadHeader | string => {
  if (block.height < 1n) return `block height ${block.height}: only genesis has height 0`
  const header = decodePayload(block.payload)
  if (typeof header === "string") return header
  if (header.bodyBytes > config.maxPayloadBytes) {
    return `block body has ${header.bodyBytes} bytes, more than maxPayloadBytes ${config.maxPayloadBytes}`
  }
  if (!bytesEqual(digests.blockHash(block.parent, block.height, block.payload), block.hash)) {
    return "block hash does not match its contents"
  }
  const leader = leaderOf(config.validators, header.view)
  if (header.proposer !== leader)
    return `block names proposer ${header.proposer.slice(0, 8)}, not the leader of view ${header.view}`
  if (header.justifyView !== justify.view) {
    return `block names justify view ${header.justifyView}, its certificate is of view ${justify.view}`
  }
  if (justify.view >= header.view)
    return `block of view ${header.view} carries a certificate of view ${justify.view}, not an earlier one`
  if (!bytesEqual(block.parent, justify.blockHash))
    return "block's parent is not the block its certificate certifies"
  return header
}
