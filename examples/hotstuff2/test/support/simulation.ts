// A deterministic in-memory network of consensus cores: messages delivered after seeded random delays
// (so in a seeded random order), dropped at a seeded rate or by a filter (crashes, partitions), timers
// fired by a simulated clock, fetches answered from another core's `lookup`. No real time, no Effect.
// Every commit, vote and refusal is recorded; `violations` lists what breaks safety.
import type { Identity } from "@hotstuff2/wire"
import * as Replica from "../../src/core/Replica.js"
import type {
  CommittedBlock,
  ConsensusMessage,
  CoreConfig,
  JustifiedBlock,
  Output,
  SafetyState
} from "../../src/core/types.js"
import { coreConfig, identities } from "./coreFixtures.js"

/** mulberry32: a small seeded generator, uniform in [0, 1). */
export const random = (seed: number): (() => number) => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex")

export interface SimulationOptions {
  readonly n: number
  readonly seed: number
  readonly minDelay?: number
  readonly maxDelay?: number
  readonly dropRate?: number
  readonly config?: Partial<CoreConfig>
  /**
   * Called for each output of node `index` before the network carries it out; return true when the
   * hook carried it out itself (a Byzantine node's misbehaviour).
   */
  readonly intercept?: (sim: Simulation, index: number, output: Output) => boolean
  /** Sees every message as it reaches node `to`, before the node does (a Byzantine node's eyes). */
  readonly observe?: (sim: Simulation, to: number, from: number, message: ConsensusMessage) => void
}

export interface SimNode {
  readonly index: number
  readonly identity: Identity.Identity
  replica: Replica.Replica
  /** Committed blocks in order, across restarts (the ledger). */
  readonly ledger: Array<CommittedBlock>
  persisted: SafetyState | undefined
  /** Every vote this validator cast, across restarts. */
  readonly votes: Array<{ readonly view: bigint; readonly hash: string }>
  readonly refused: Array<Extract<Output, { _tag: "Refused" }>>
  readonly entered: Array<Extract<Output, { _tag: "EnteredView" }>>
  crashed: boolean
  timer: number
  /** Fetch outputs, and sync answers delivered. */
  fetches: number
  synced: number
}

type Event =
  | {
      readonly kind: "deliver"
      readonly to: number
      readonly from: number
      readonly message: ConsensusMessage
    }
  | { readonly kind: "timer"; readonly node: number; readonly view: bigint; readonly token: number }
  | {
      readonly kind: "synced"
      readonly to: number
      readonly from: number
      readonly blocks: ReadonlyArray<JustifiedBlock>
    }

interface Scheduled {
  readonly at: number
  readonly seq: number
  readonly event: Event
}

export class Simulation {
  readonly keys: ReadonlyArray<Identity.Identity>
  readonly nodes: Array<SimNode>
  readonly violations: Array<string> = []
  /** Which deliveries happen (partitions, isolated nodes); `undefined` is a block-sync answer. */
  filter: (from: number, to: number, message: ConsensusMessage | undefined) => boolean = () => true
  dropRate: number
  now = 0
  events = 0
  private readonly rand: () => number
  private readonly queue: Array<Scheduled> = []
  private seq = 0
  private readonly committedAt = new Map<bigint, string>()

  constructor(readonly options: SimulationOptions) {
    this.rand = random(options.seed)
    this.dropRate = options.dropRate ?? 0
    this.keys = identities(options.n)
    this.nodes = this.keys.map((identity, index) => ({
      index,
      identity,
      replica: Replica.make(this.config(index), { committed: undefined, safety: undefined }),
      ledger: [],
      persisted: undefined,
      votes: [],
      refused: [],
      entered: [],
      crashed: false,
      timer: 0,
      fetches: 0,
      synced: 0
    }))
  }

  config(index: number): CoreConfig {
    return coreConfig(this.keys, index, this.options.config)
  }

  start(): this {
    for (const node of this.nodes)
      this.step(node.index, { _tag: "Start", now: this.now, resume: emptyResume })
    return this
  }

  /** Runs events until simulated time `until` (ms) or `maxEvents`, whichever comes first. */
  run(until: number, maxEvents = 200_000): this {
    while (this.queue.length > 0 && this.queue[0]!.at <= until && this.events < maxEvents) {
      const next = this.pop()
      this.now = next.at
      this.events++
      this.handle(next.event)
    }
    if (this.queue.length === 0 || this.queue[0]!.at > until) this.now = until
    return this
  }

  /** Stops a node: nothing reaches it or leaves it until `restart`. */
  crash(index: number): void {
    this.nodes[index]!.crashed = true
  }

  /** A fresh core from the node's ledger tip and last persisted safety state, then Start. */
  restart(index: number): void {
    const node = this.nodes[index]!
    const resume = { committed: node.ledger[node.ledger.length - 1], safety: node.persisted }
    node.replica = Replica.make(this.config(index), resume)
    node.crashed = false
    node.timer++
    this.step(index, { _tag: "Start", now: this.now, resume })
  }

  /** Delivers a message to node `to` now, as if from node `from`. */
  inject(to: number, from: number, message: ConsensusMessage): ReadonlyArray<Output> {
    return this.step(to, { _tag: "Received", now: this.now, from: this.keys[from]!.peerId, message })
  }

  /** Sends over the simulated network (subject to drops, the filter and crashes). */
  send(from: number, to: number, message: ConsensusMessage): void {
    if (this.nodes[from]!.crashed || !this.filter(from, to, message) || this.rand() < this.dropRate) return
    this.schedule(this.delay(), { kind: "deliver", to, from, message })
  }

  height(index: number): bigint {
    return this.nodes[index]!.replica.committed.height
  }

  minHeight(among: ReadonlyArray<number> = this.nodes.map((n) => n.index)): bigint {
    return among.map((i) => this.height(i)).reduce((a, b) => (a < b ? a : b))
  }

  private delay(): number {
    const min = this.options.minDelay ?? 1
    const max = this.options.maxDelay ?? 20
    return min + Math.floor(this.rand() * (max - min + 1))
  }

  private step(index: number, input: Parameters<Replica.Replica["step"]>[0]): ReadonlyArray<Output> {
    const outputs = this.nodes[index]!.replica.step(input)
    for (const output of outputs) {
      if (this.options.intercept?.(this, index, output)) continue
      this.carryOut(index, output)
    }
    return outputs
  }

  private handle(event: Event): void {
    if (event.kind === "timer") {
      const node = this.nodes[event.node]!
      if (node.crashed || node.timer !== event.token) return
      this.step(event.node, { _tag: "TimerFired", now: this.now, view: event.view })
    } else if (event.kind === "deliver") {
      if (this.nodes[event.to]!.crashed) return
      this.options.observe?.(this, event.to, event.from, event.message)
      this.inject(event.to, event.from, event.message)
    } else {
      if (this.nodes[event.to]!.crashed) return
      this.nodes[event.to]!.synced++
      this.step(event.to, {
        _tag: "Synced",
        now: this.now,
        from: this.keys[event.from]!.peerId,
        blocks: event.blocks
      })
    }
  }

  private carryOut(index: number, output: Output): void {
    const node = this.nodes[index]!
    switch (output._tag) {
      case "PersistSafety":
        node.persisted = output.safety
        break
      case "Broadcast":
        for (const other of this.nodes)
          if (other.index !== index) this.send(index, other.index, output.message)
        break
      case "Send": {
        const to = this.keys.findIndex((k) => k.peerId === output.to)
        if (to === index) this.violations.push(`node ${index} sent a message to itself`)
        this.send(index, to, output.message)
        break
      }
      case "SetTimer": {
        const token = ++node.timer
        this.schedule(output.after, { kind: "timer", node: index, view: output.view, token })
        break
      }
      case "Commit":
        this.recordCommit(node, output.blocks)
        break
      case "Voted": {
        const view = output.vote.view
        if (node.votes.some((v) => v.view === view))
          this.violations.push(`node ${index} voted twice in view ${view}`)
        node.votes.push({ view, hash: hex(output.vote.blockHash) })
        break
      }
      case "Fetch":
        node.fetches++
        this.answerFetch(index, output)
        break
      case "Refused":
        node.refused.push(output)
        // The core's own alarm: a commit that would not extend its committed chain (a proposal or
        // sync answer conflicting with it is refused as the sender's fault, not counted here).
        if (output.what === "Commit") {
          this.violations.push(`node ${index}: ${output.what}: ${output.reason}`)
        }
        break
      case "EnteredView":
        node.entered.push(output)
        break
      default:
        break
    }
  }

  private recordCommit(node: SimNode, blocks: ReadonlyArray<CommittedBlock>): void {
    for (const committed of blocks) {
      const { block } = committed
      const previous = node.ledger[node.ledger.length - 1]?.block
      const expected = previous === undefined ? 1n : previous.height + 1n
      if (block.height !== expected)
        this.violations.push(`node ${node.index} committed height ${block.height} after ${expected - 1n}`)
      if (previous !== undefined && hex(block.parent) !== hex(previous.hash)) {
        this.violations.push(
          `node ${node.index} committed a block at ${block.height} not extending its previous one`
        )
      }
      const key = hex(block.hash)
      const other = this.committedAt.get(block.height)
      if (other === undefined) this.committedAt.set(block.height, key)
      else if (other !== key) this.violations.push(`two different blocks committed at height ${block.height}`)
      node.ledger.push(committed)
    }
  }

  /** Answers from the hint, else any running node holding the chain, after a network delay. */
  private answerFetch(index: number, fetch: Extract<Output, { _tag: "Fetch" }>): void {
    const order = [this.keys.findIndex((k) => k.peerId === fetch.hint), ...this.nodes.map((n) => n.index)]
    for (const server of order) {
      if (server === index || server < 0 || this.nodes[server]!.crashed) continue
      const blocks: Array<JustifiedBlock> = []
      let hash = fetch.target.hash
      for (;;) {
        const found = this.nodes[server]!.replica.lookup(hash)
        if (found === undefined) break
        blocks.push(found)
        if (found.block.height <= fetch.fromHeight) break
        hash = found.block.parent
      }
      const first = blocks[blocks.length - 1]
      if (first === undefined || first.block.height > fetch.fromHeight) continue
      if (!this.filter(server, index, undefined)) continue
      this.schedule(this.delay(), { kind: "synced", to: index, from: server, blocks: blocks.reverse() })
      return
    }
  }

  private schedule(after: number, event: Event): void {
    const item = { at: this.now + after, seq: this.seq++, event }
    // Binary insertion keeps the queue ordered by time, then by scheduling order.
    let lo = 0
    let hi = this.queue.length
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      const q = this.queue[mid]!
      if (q.at < item.at || (q.at === item.at && q.seq < item.seq)) lo = mid + 1
      else hi = mid
    }
    this.queue.splice(lo, 0, item)
  }

  private pop(): Scheduled {
    return this.queue.shift()!
  }
}

const emptyResume = { committed: undefined, safety: undefined }
