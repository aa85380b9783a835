// The dissemination tree of one tree broadcast (slot kind 0x03, WIRE.md 7.6): which validator relays
// an origin's message to which. Every node computes it on its own from the signed tree header, so the
// layout is a pure function of public inputs: a hash-derived permutation, not a random one (Effect's
// Random would give each node a different tree).
import * as crypto from "node:crypto"
import type { Identity } from "@hotstuff2/wire"

type PeerId = Identity.PeerId

/** Domain of the permutation seed; a layout change takes a new one (`.../v2/`). */
export const TREE_DOMAIN = "hotstuff2/tree/v1/"

/** Everything a tree is a function of. */
export interface TreeInput {
  /** The epoch's validator set, in any order; positions refer to it sorted ascending (as strings). */
  readonly members: ReadonlyArray<PeerId>
  /** The root. It takes no position, whether or not it is a member. */
  readonly origin: PeerId
  readonly networkId: string
  readonly epoch: bigint
  readonly round: bigint
  /** Children per node, at least 2. */
  readonly fanout: number
  /** Indices into the sorted members placed last, so they are leaves (slow or suspect relays). */
  readonly demoted?: Iterable<number> | undefined
}

/** The 32-byte seed: SHA-256 of the domain, u32 BE length and UTF-8 network id, origin, epoch, round. */
export const treeSeed = (networkId: string, origin: PeerId, epoch: bigint, round: bigint): Buffer => {
  if (!/^[0-9a-f]{64}$/.test(origin)) throw new RangeError(`tree: origin ${origin} is not a PeerId`)
  const id = Buffer.from(networkId, "utf8")
  const buf = Buffer.alloc(TREE_DOMAIN.length + 4 + id.length + 32 + 16)
  let at = buf.write(TREE_DOMAIN, 0, "latin1")
  at = buf.writeUInt32BE(id.length, at)
  at += id.copy(buf, at)
  at += buf.write(origin, at, 32, "hex")
  at = buf.writeBigUInt64BE(epoch, at)
  buf.writeBigUInt64BE(round, at)
  return crypto.hash("sha256", buf, "buffer")
}

/**
 * Unbiased integers from the stream SHA-256(seed || 0) || SHA-256(seed || 1) || ... (counter u32 BE),
 * read as u32 BE words: `below(k)` rejects words at or above 2^32 - (2^32 mod k), then takes the rest mod k.
 */
class HashStream {
  private readonly input: Buffer
  private block: Buffer = Buffer.alloc(0)
  private at = 32
  private counter = 0

  constructor(seed: Uint8Array) {
    this.input = Buffer.alloc(36)
    this.input.set(seed, 0)
  }

  private word(): number {
    if (this.at === 32) {
      this.input.writeUInt32BE(this.counter++, 32)
      // One-shot hashing: about twice as fast as createHash for 36 bytes.
      this.block = crypto.hash("sha256", this.input, "buffer")
      this.at = 0
    }
    const word = this.block.readUInt32BE(this.at)
    this.at += 4
    return word
  }

  below(k: number): number {
    const limit = 0x1_0000_0000 - (0x1_0000_0000 % k)
    for (;;) {
      const word = this.word()
      if (word < limit) return word % k
    }
  }
}

/**
 * The non-origin members' order, as indices into the sorted members: Fisher-Yates (for i from the
 * last down to 1, swap i with `below(i + 1)`) over them in sorted order, then the demoted ones moved
 * to the end, keeping their shuffled order.
 */
const shuffled = (count: number, originIndex: number, seed: Uint8Array, demoted: Uint8Array): Uint32Array => {
  const m = originIndex >= 0 ? count - 1 : count
  const order = new Uint32Array(m)
  for (let i = 0, p = 0; i < count; i++) if (i !== originIndex) order[p++] = i
  const stream = new HashStream(seed)
  for (let i = m - 1; i > 0; i--) {
    const j = stream.below(i + 1)
    const t = order[i]!
    order[i] = order[j]!
    order[j] = t
  }
  let demotedCount = 0
  for (let p = 0; p < m; p++) demotedCount += demoted[order[p]!]!
  if (demotedCount === 0) return order
  const out = new Uint32Array(m)
  let front = 0
  let back = m - demotedCount
  for (let p = 0; p < m; p++) {
    const index = order[p]!
    if (demoted[index] === 1) out[back++] = index
    else out[front++] = index
  }
  return out
}

/**
 * One broadcast's tree. Positions 0..size-1 follow the order above; the root's children are positions
 * 0..fanout-1, those of position p are fanout + p * fanout .. fanout + p * fanout + fanout - 1 (those
 * below size), so the parent of q >= fanout is floor((q - fanout) / fanout). Built in O(n).
 */
export class Tree {
  /** Number of levels below the root (0 when the origin is alone). */
  readonly depth: number
  /** Number of positions: the members other than the origin. */
  readonly size: number

  private readonly positions: Map<PeerId, number>
  private readonly levels: Uint8Array

  private constructor(
    readonly origin: PeerId,
    readonly fanout: number,
    /** Peers by position. */
    readonly order: ReadonlyArray<PeerId>
  ) {
    const size = order.length
    this.size = size
    this.positions = new Map()
    for (let p = 0; p < size; p++) this.positions.set(order[p]!, p)
    // fanout >= 2 keeps the levels under log2(size) + 1, well inside a byte.
    this.levels = new Uint8Array(size)
    for (let q = 0; q < size; q++)
      this.levels[q] = q < fanout ? 1 : this.levels[((q - fanout) / fanout) | 0]! + 1
    this.depth = size === 0 ? 0 : this.levels[size - 1]!
  }

  /**
   * Lays out the tree. Throws a RangeError for arguments no header can carry (a fanout under 2, a
   * demoted index outside the members, a repeated member, an origin that is not a PeerId): callers
   * check received headers with `decodeTreeHeader(payload, members.length)` first.
   */
  static make(input: TreeInput): Tree {
    const { fanout, origin } = input
    if (!Number.isSafeInteger(fanout) || fanout < 2) throw new RangeError(`tree: fanout ${fanout} is under 2`)
    const sorted = [...input.members].sort()
    const count = sorted.length
    for (let i = 1; i < count; i++) {
      if (sorted[i] === sorted[i - 1]) throw new RangeError(`tree: member ${sorted[i]} appears twice`)
    }
    const demoted = new Uint8Array(count)
    for (const index of input.demoted ?? []) {
      if (!Number.isInteger(index) || index < 0 || index >= count) {
        throw new RangeError(`tree: demoted index ${index} outside 0..${count - 1}`)
      }
      demoted[index] = 1
    }
    const seed = treeSeed(input.networkId, origin, input.epoch, input.round)
    const order = shuffled(count, sorted.indexOf(origin), seed, demoted)
    const peers = new Array<PeerId>(order.length)
    for (let p = 0; p < order.length; p++) peers[p] = sorted[order[p]!]!
    return new Tree(origin, fanout, peers)
  }

  /** The peer's position, or undefined for the origin and non-members. */
  position(peer: PeerId): number | undefined {
    return this.positions.get(peer)
  }

  /** Levels below the root: 0 for the origin, 1 for its children; undefined for non-members. */
  level(peer: PeerId): number | undefined {
    if (peer === this.origin) return 0
    const p = this.positions.get(peer)
    return p === undefined ? undefined : this.levels[p]
  }

  /** Who relays to the peer: the origin for level 1; undefined for the origin and non-members. */
  parent(peer: PeerId): PeerId | undefined {
    const q = this.positions.get(peer)
    if (q === undefined) return undefined
    return q < this.fanout ? this.origin : this.order[((q - this.fanout) / this.fanout) | 0]
  }

  /** Whom the peer relays to (the origin's children for the origin); empty for leaves and non-members. */
  children(peer: PeerId): ReadonlyArray<PeerId> {
    const [start, end] = this.childRange(peer)
    return this.order.slice(start, end)
  }

  /** Everyone below the peer, nearest levels first: whom to reach when the peer fails as a relay. */
  descendants(peer: PeerId): ReadonlyArray<PeerId> {
    const out: Array<PeerId> = []
    let [start, end] = this.childRange(peer)
    // The children of a contiguous range of positions are a contiguous range.
    while (start < end) {
      for (let p = start; p < end; p++) out.push(this.order[p]!)
      start = this.fanout + start * this.fanout
      end = Math.min(this.size, this.fanout + end * this.fanout)
    }
    return out
  }

  /** The positions [start, end) of the peer's children. */
  private childRange(peer: PeerId): readonly [number, number] {
    if (peer === this.origin) return [0, Math.min(this.fanout, this.size)]
    const p = this.positions.get(peer)
    if (p === undefined) return [0, 0]
    const start = Math.min(this.size, this.fanout + p * this.fanout)
    return [start, Math.min(this.size, start + this.fanout)]
  }
}

/**
 * The fanout used when configuration sets none: ceil(sqrt(n)) for n validators, clamped to [2, 64],
 * which keeps the tree two levels deep up to 4,096 validators while no relay sends more than 64
 * copies. A placeholder until measurements choose the real default.
 */
export const defaultFanout = (n: number): number => Math.min(64, Math.max(2, Math.ceil(Math.sqrt(n))))

/**
 * The trees of recent views, least recently used evicted past `maxTrees`, so a node lays out each
 * (origin, epoch, round, fanout, demoted) once. The key leaves out the members: they are the
 * epoch's, so callers pass the same set for the same epoch.
 */
export class TreeCache {
  private readonly trees = new Map<string, Tree>()

  constructor(readonly maxTrees: number) {
    if (!Number.isSafeInteger(maxTrees) || maxTrees < 1)
      throw new RangeError(`TreeCache: maxTrees ${maxTrees}`)
  }

  get size(): number {
    return this.trees.size
  }

  /** The cached tree for these inputs, or a new one (cached). */
  get(input: TreeInput): Tree {
    const demoted = input.demoted === undefined ? "" : [...input.demoted].sort((a, b) => a - b).join(",")
    const key = `${input.networkId}|${input.origin}|${input.epoch}|${input.round}|${input.fanout}|${demoted}`
    const cached = this.trees.get(key)
    if (cached !== undefined) {
      this.trees.delete(key)
      this.trees.set(key, cached)
      return cached
    }
    const tree = Tree.make(input)
    this.trees.set(key, tree)
    if (this.trees.size > this.maxTrees) this.trees.delete(this.trees.keys().next().value!)
    return tree
  }
}
