// Whole clusters of consensus cores on the seeded simulated network: progress in the good case, after a
// crashed leader, across a healed partition, under loss and reordering, with an equivocating leader,
// and for a validator restarted from its ledger and safety state. Safety (no two blocks committed at
// one height, ledgers chained, no double vote, no conflict alarm) is checked in every scenario.
import { Identity, type Message } from "@hotstuff2/wire"
import { describe, expect, it } from "vitest"
import { encodePayload, hex } from "../src/core/crypto.js"
import type { Output } from "../src/core/types.js"
import { digests } from "./support/coreFixtures.js"
import { Simulation } from "./support/simulation.js"

const expectSafe = (sim: Simulation) => expect(sim.violations).toEqual([])
const tcEntries = (sim: Simulation) =>
  sim.nodes.flatMap((n) => n.entered.filter((e) => e.via === "tc")).length

describe("core on a simulated network", () => {
  it.each([4, 7])("%i replicas commit one chain, every replica at least 20 blocks in 3 s", (n) => {
    const sim = new Simulation({ n, seed: 7 }).start().run(3_000)
    expectSafe(sim)
    expect(sim.minHeight()).toBeGreaterThanOrEqual(20n)
    // Every ledger is a prefix of the longest one (the simulation also checks each height globally).
    const longest = sim.nodes.map((node) => node.ledger).sort((a, b) => b.length - a.length)[0]!
    for (const node of sim.nodes) {
      expect(node.ledger.map((b) => hex(b.block.hash))).toEqual(
        longest.slice(0, node.ledger.length).map((b) => hex(b.block.hash))
      )
    }
  })

  it("a crashed leader's views end in timeout certificates and the others keep committing", () => {
    const sim = new Simulation({ n: 4, seed: 3 })
    sim.filter = (from, to) => from !== 1 && to !== 1
    sim.start().run(10_000)
    expectSafe(sim)
    expect(sim.height(1)).toBe(0n)
    expect(sim.minHeight([0, 2, 3])).toBeGreaterThanOrEqual(10n)
    expect(tcEntries(sim)).toBeGreaterThan(0)
  })

  it("a 2|2 partition stops commits; after healing they resume on the same chain", () => {
    const sim = new Simulation({ n: 4, seed: 11 }).start().run(1_000)
    const before = sim.minHeight()
    expect(before).toBeGreaterThan(5n)
    const side = (i: number) => (i < 2 ? 0 : 1)
    sim.filter = (from, to) => side(from) === side(to)
    sim.run(1_200) // messages already in flight land
    const stalled = sim.nodes.map((node) => sim.height(node.index))
    sim.run(8_000)
    expect(sim.nodes.map((node) => sim.height(node.index))).toEqual(stalled)
    sim.filter = () => true
    sim.run(30_000)
    expectSafe(sim)
    expect(sim.minHeight()).toBeGreaterThan(stalled.reduce((a, b) => (a > b ? a : b)) + 5n)
  })

  it.each([1, 2, 3, 4, 5])(
    "with 10%% loss and delays of 1-80 ms (seed %i) replicas stay safe and commit",
    (seed) => {
      const sim = new Simulation({ n: 4, seed, dropRate: 0.1, maxDelay: 80 }).start().run(30_000)
      expectSafe(sim)
      expect(sim.minHeight()).toBeGreaterThanOrEqual(5n)
    }
  )

  it("a validator restarted from its ledger and safety state catches up by fetching, never voting twice", () => {
    const sim = new Simulation({ n: 4, seed: 5 }).start().run(1_000)
    sim.crash(3)
    sim.run(4_000)
    const atCrash = sim.height(3)
    // Without it every fourth view times out (it leads it) and the view before gets no certificate.
    expect(sim.minHeight([0, 1, 2])).toBeGreaterThan(atCrash + 10n)
    sim.restart(3)
    sim.run(8_000)
    expectSafe(sim) // includes "voted twice in a view" across both lives
    expect(sim.nodes[3]!.fetches).toBeGreaterThan(0)
    expect(sim.nodes[3]!.synced).toBeGreaterThan(0)
    expect(sim.height(3)).toBeGreaterThan(sim.minHeight([0, 1, 2]) - 5n)
    expect(sim.nodes[3]!.ledger.length).toBe(Number(sim.height(3)))
  })
})

/**
 * Byzantine leaders `byzantine` (by index): each proposal they make goes as proposal A to the first
 * half of the honest replicas and as a conflicting proposal B to the others, B extending the
 * certificate `depth` blocks below A's (0: a sibling of A; 1: a sibling of A's parent; 2: a sibling
 * of its grandparent, below the lock of every replica that saw A's parent's proposal and on a branch
 * conflicting with what the replicas seeing A commit). The Byzantine validators vote for B only.
 */
const equivocation = (byzantine: ReadonlyArray<number>, depth: number) => {
  const forks = new Map<bigint, Uint8Array>()
  const intercept = (sim: Simulation, index: number, output: Output): boolean => {
    if (!byzantine.includes(index)) return false
    const honest = sim.nodes.map((n) => n.index).filter((i) => !byzantine.includes(i))
    const half = Math.floor(honest.length / 2)
    if (output._tag === "Broadcast" && output.message._tag === "Proposal") {
      const a = output.message
      const key = sim.keys[index]!
      let justify = a.justify
      for (let d = 0; d < depth; d++) {
        const below = sim.nodes[index]!.replica.lookup(justify.blockHash)
        if (below === undefined || below.block.height === 0n) return false // too close to genesis: honest
        justify = below.justify
      }
      const parent = sim.nodes[index]!.replica.lookup(justify.blockHash)
      if (parent === undefined) return false
      const payload = encodePayload(
        a.view,
        key.peerId,
        justify.view,
        new TextEncoder().encode(`fork ${a.view}`)
      )
      const block = digests.block(justify.blockHash, parent.block.height + 1n, payload)
      const b: Message.Proposal = {
        ...a,
        block,
        justify,
        signature: Identity.sign(key, digests.proposal(a.view, block.hash, justify))
      }
      forks.set(a.view, block.hash)
      for (const i of byzantine) if (i !== index) sim.send(index, i, a)
      for (const [k, i] of honest.entries()) sim.send(index, i, k < half ? a : b)
      return true
    }
    if (output._tag === "Send" && output.message._tag === "Vote") {
      const fork = forks.get(output.message.view)
      if (fork === undefined) return false
      const to = sim.keys.findIndex((k) => k.peerId === output.to)
      const signature = Identity.sign(sim.keys[index]!, digests.vote(output.message.view, fork))
      sim.send(index, to, { ...output.message, blockHash: fork, signature })
      return true
    }
    return false
  }
  return { intercept, forks }
}

describe("core with Byzantine leaders", () => {
  const cases = [
    { n: 4, byzantine: [0], depth: 0, seed: 1 },
    { n: 4, byzantine: [0], depth: 1, seed: 2 },
    { n: 4, byzantine: [0], depth: 2, seed: 3 },
    { n: 7, byzantine: [0, 1], depth: 1, seed: 4 },
    { n: 7, byzantine: [0, 1], depth: 2, seed: 5 }
  ]
  it.each(cases)(
    "n=$n, equivocating leaders $byzantine forking $depth below: no two blocks committed at one height",
    ({ n, byzantine, depth, seed }) => {
      const { intercept, forks } = equivocation(byzantine, depth)
      const sim = new Simulation({ n, seed, intercept }).start().run(20_000)
      expectSafe(sim)
      const honest = sim.nodes.map((node) => node.index).filter((i) => !byzantine.includes(i))
      expect(sim.minHeight(honest)).toBeGreaterThanOrEqual(10n)
      expect(forks.size).toBeGreaterThan(3)
      const forkHashes = new Set([...forks.values()].map(hex))
      const forkVotes = honest.flatMap((i) => sim.nodes[i]!.votes.filter((v) => forkHashes.has(v.hash)))
      // A fork below the lock gets no honest vote; a shallower one may, and is harmless.
      if (depth >= 2) expect(forkVotes).toEqual([])
    }
  )
})

/**
 * The attack the lock stops (n = 4, Byzantine node 0): leading view w after consecutive certificates
 * QC1 (view w-2, block B1) and QC2 (view w-1, block B2), it shows QC2 (in its proposal A) to node 3
 * only, which commits B1; nodes 1 and 2 stay locked on QC1 and never see QC2 (the adversary delays
 * node 3's messages to them). It helps them time out of view w-1, and when they enter view w proposes
 * B there, a sibling of B1 justified by B1's own justify (below their lock), and votes for whatever
 * extends B. Without the lock check nodes 1 and 2 vote for B, certify it and its child, and commit B
 * at B1's height.
 */
const lockAttack = () => {
  const state = { w: 0n, fork: undefined as Message.Proposal | undefined, delivered: new Set<number>() }
  const intercept = (sim: Simulation, index: number, output: Output): boolean => {
    if (index !== 0) return false
    if (state.fork !== undefined) return true // silent once the attack starts
    if (output._tag !== "Broadcast" || output.message._tag !== "Proposal") return false
    const a = output.message
    const b2 = sim.nodes[0]!.replica.lookup(a.justify.blockHash)
    if (b2 === undefined || a.justify.view !== a.view - 1n || b2.justify.view !== a.view - 2n) return false
    const b1 = sim.nodes[0]!.replica.lookup(b2.justify.blockHash)
    if (b1 === undefined || b1.block.height === 0n) return false
    const key = sim.keys[0]!
    const justify = b1.justify
    const payload = encodePayload(a.view, key.peerId, justify.view, new TextEncoder().encode("fork"))
    const block = digests.block(b1.block.parent, b1.block.height, payload)
    state.w = a.view
    state.fork = {
      ...a,
      block,
      justify,
      signature: Identity.sign(key, digests.proposal(a.view, block.hash, justify))
    }
    sim.filter = (from, to) => !((from === 3 && to !== 0) || (to === 3 && from !== 0))
    sim.send(0, 3, a)
    const timeout: Message.Timeout = {
      _tag: "Timeout",
      view: a.view - 1n,
      highQC: b2.justify,
      sender: key.peerId,
      signature: Identity.sign(key, digests.timeout(a.view - 1n))
    }
    sim.send(0, 1, timeout)
    sim.send(0, 2, timeout)
    return true
  }
  const voteFor = (sim: Simulation, view: bigint, blockHash: Uint8Array) => {
    const to = Number(view + 1n) % sim.nodes.length
    const signature = Identity.sign(sim.keys[0]!, digests.vote(view, blockHash))
    sim.send(0, to, { _tag: "Vote", view, blockHash, voter: sim.keys[0]!.peerId, signature })
  }
  const observe = (sim: Simulation, to: number, from: number, message: Message.Message) => {
    const fork = state.fork
    if (to !== 0 || fork === undefined) return
    if (message._tag === "NewView" && message.view === state.w && !state.delivered.has(from)) {
      state.delivered.add(from)
      sim.send(0, from, fork)
      voteFor(sim, fork.view, fork.block.hash)
    }
    if (message._tag === "Proposal" && message.view > state.w) voteFor(sim, message.view, message.block.hash)
  }
  return { intercept, observe, state }
}

it("a Byzantine leader showing its certificate to one replica and then forking below the others' lock commits nothing conflicting", () => {
  const attack = lockAttack()
  const sim = new Simulation({
    n: 4,
    seed: 9,
    intercept: attack.intercept,
    observe: (s, to, from, m) => attack.observe(s, to, from, m)
  }).start()
  sim.run(3_000)
  expect(attack.state.fork).toBeDefined()
  expect([...attack.state.delivered].sort()).toEqual([1, 2]) // B reached both while in view w
  const victim = sim.height(3)
  sim.filter = () => true
  sim.run(15_000)
  expectSafe(sim)
  expect(sim.minHeight([1, 2, 3])).toBeGreaterThan(victim + 5n)
})
