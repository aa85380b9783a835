/**
 * The blocks a replica knows: a tree rooted at the last committed block (the head) holding only the
 * head's descendants, and a window of recently committed blocks for serving block sync. A block
 * enters only when its parent is in the tree, so every node descends from the head; committing moves
 * a chain into the window and drops every branch that does not extend the new head.
 */
import { hex } from "./crypto.js"
import type { CommittedBlock, JustifiedBlock, QuorumCertificate } from "./types.js"

/** Committed blocks kept for `lookup` (block sync) beside the uncommitted tree. */
export const COMMITTED_WINDOW = 256

/** A block in the tree, the view it was proposed in, and a certificate for it once one is known. */
export interface TreeNode extends JustifiedBlock {
  readonly view: bigint
  certificate: QuorumCertificate | undefined
}

export class BlockTree {
  private readonly nodes = new Map<string, TreeNode>()
  /** Committed blocks in ascending height, the head last. */
  private readonly window = new Map<string, CommittedBlock>()
  private headBlock: CommittedBlock

  constructor(
    head: CommittedBlock,
    headView: bigint,
    private readonly windowSize: number = COMMITTED_WINDOW
  ) {
    this.headBlock = head
    this.nodes.set(hex(head.block.hash), { ...head, view: headView, certificate: head.certificate })
    this.window.set(hex(head.block.hash), head)
  }

  /** The last committed block. */
  get head(): CommittedBlock {
    return this.headBlock
  }

  /** A block of the tree (the head or a descendant). */
  get(hash: Uint8Array): TreeNode | undefined {
    return this.nodes.get(hex(hash))
  }

  /** A block of the tree or of the committed window. */
  lookup(hash: Uint8Array): JustifiedBlock | undefined {
    const key = hex(hash)
    const node = this.nodes.get(key) ?? this.window.get(key)
    return node === undefined ? undefined : { block: node.block, justify: node.justify }
  }

  /** Whether a block is committed and still in the window. */
  isCommitted(hash: Uint8Array): boolean {
    return this.window.has(hex(hash))
  }

  /** Adds a block whose parent the caller found in the tree. */
  add(node: TreeNode): void {
    this.nodes.set(hex(node.block.hash), node)
  }

  /**
   * The uncommitted chain from just above the head up to `hash`, ascending: empty when `hash` is
   * already committed, a reason when it is unknown or does not extend the head.
   */
  chainTo(hash: Uint8Array): ReadonlyArray<TreeNode> | string {
    if (this.window.has(hex(hash))) return []
    const chain: Array<TreeNode> = []
    let node = this.nodes.get(hex(hash))
    if (node === undefined) return "the block to commit is not in the tree"
    const headKey = hex(this.headBlock.block.hash)
    while (hex(node.block.hash) !== headKey) {
      chain.push(node)
      const parent: TreeNode | undefined = this.nodes.get(hex(node.block.parent))
      if (parent === undefined) {
        return `block at height ${node.block.height} conflicts with the committed chain (head at height ${this.headBlock.block.height})`
      }
      node = parent
    }
    return chain.reverse()
  }

  /**
   * Commits a chain from `chainTo`: each block's certificate is its child's justify, the last one's
   * is `certificate`. The last block becomes the head; branches not extending it are dropped.
   */
  commit(chain: ReadonlyArray<TreeNode>, certificate: QuorumCertificate): ReadonlyArray<CommittedBlock> {
    const committed = chain.map(
      (node, i): CommittedBlock => ({
        block: node.block,
        justify: node.justify,
        certificate: i + 1 < chain.length ? chain[i + 1]!.justify : certificate
      })
    )
    for (const block of committed) {
      this.window.set(hex(block.block.hash), block)
      const node = this.nodes.get(hex(block.block.hash))
      if (node !== undefined && node.certificate === undefined) node.certificate = block.certificate
    }
    while (this.window.size > this.windowSize) this.window.delete(this.window.keys().next().value!)
    this.headBlock = committed[committed.length - 1]!
    this.prune()
    return committed
  }

  /** Keeps the head and its descendants only. */
  private prune(): void {
    const headHeight = this.headBlock.block.height
    const keep = new Set([hex(this.headBlock.block.hash)])
    const byHeight = [...this.nodes.values()].sort((a, b) =>
      a.block.height < b.block.height ? -1 : a.block.height > b.block.height ? 1 : 0
    )
    for (const node of byHeight) {
      const key = hex(node.block.hash)
      if (node.block.height > headHeight && keep.has(hex(node.block.parent))) keep.add(key)
      else if (!keep.has(key)) this.nodes.delete(key)
    }
  }

  /** Blocks in the tree, head included. */
  get size(): number {
    return this.nodes.size
  }

  /** Committed blocks in the window, head included. */
  get windowLength(): number {
    return this.window.size
  }
}
