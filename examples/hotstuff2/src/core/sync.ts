/**
 * Checks a block-sync answer before any of it enters the tree: a chain of well-formed blocks (see
 * `validation.ts`), each the parent of the next at the next height, each justify a valid certificate
 * of its parent's view, starting from blocks we hold and continuing from a block of the tree. The
 * caller checks that the last block is a target it asked for.
 */
import { Message } from "@hotstuff2/wire"
import type { BlockTree } from "./blockTree.js"
import type { Certificates } from "./certificates.js"
import { bytesEqual, type Digests } from "./crypto.js"
import type { CoreConfig, JustifiedBlock } from "./types.js"
import { checkBlock } from "./validation.js"

/** Most blocks one sync answer may carry (the wire's own limit). */
export const MAX_SYNC_BLOCKS = Message.MAX_SYNC_BLOCKS

/** A verified chain: the blocks not yet held (justify replaced by its verified instance) and their views. */
export interface VerifiedChain {
  readonly blocks: ReadonlyArray<JustifiedBlock>
  readonly views: ReadonlyArray<bigint>
}

export const verifyChain = (
  config: CoreConfig,
  digests: Digests,
  certificates: Certificates,
  tree: BlockTree,
  blocks: ReadonlyArray<JustifiedBlock>
): VerifiedChain | string => {
  if (blocks.length === 0) return "sync answer carries no blocks"
  if (blocks.length > MAX_SYNC_BLOCKS)
    return `sync answer carries ${blocks.length} blocks, at most ${MAX_SYNC_BLOCKS}`
  const fresh: Array<JustifiedBlock> = []
  const views: Array<bigint> = []
  let previousView = 0n
  for (let i = 0; i < blocks.length; i++) {
    const { block, justify } = blocks[i]!
    const where = `block ${i} (height ${block.height})`
    const header = checkBlock(config, digests, block, justify)
    if (typeof header === "string") return `${where}: ${header}`
    if (i > 0) {
      const previous = blocks[i - 1]!.block
      if (!bytesEqual(block.parent, previous.hash)) return `${where}: its parent is not the block before it`
      if (block.height !== previous.height + 1n) return `${where}: height does not follow ${previous.height}`
      if (justify.view !== previousView) {
        return `${where}: its certificate is of view ${justify.view}, its parent was proposed in view ${previousView}`
      }
    }
    previousView = header.view
    if (tree.lookup(block.hash) !== undefined) {
      if (fresh.length > 0) return `${where}: known block after unknown ones`
      continue
    }
    if (fresh.length === 0) {
      const parent = tree.get(block.parent)
      if (parent === undefined) {
        return block.height <= tree.head.block.height + 1n || tree.isCommitted(block.parent)
          ? `${where} conflicts with the committed chain (head at height ${tree.head.block.height})`
          : `${where}: its parent is unknown (the chain must continue from a block we hold)`
      }
      if (block.height !== parent.block.height + 1n) return `${where}: height does not follow its parent's`
      if (justify.view !== parent.view) {
        return `${where}: its certificate is of view ${justify.view}, its parent was proposed in view ${parent.view}`
      }
    }
    const qc = certificates.verifyQC(justify)
    if (typeof qc === "string") return `${where}: ${qc}`
    fresh.push({ block, justify: qc })
    views.push(header.view)
  }
  return { blocks: fresh, views }
}
