import * as crypto from "node:crypto"
import { assert, describe, it } from "@effect/vitest"
import type { Identity } from "@hotstuff2/wire"
import * as fc from "effect/FastCheck"
import { defaultFanout, Tree, TreeCache, type TreeInput } from "../src/internal/tree/layout.js"

type PeerId = Identity.PeerId

/** `n` distinct PeerIds, reproducible from `salt`. */
const peers = (n: number, salt = 0): Array<PeerId> =>
  Array.from(
    { length: n },
    (_, i) => crypto.createHash("sha256").update(`peer-${salt}-${i}`).digest("hex") as PeerId
  )

const stranger = "ff".repeat(32) as PeerId

const input = (members: ReadonlyArray<PeerId>, overrides: Partial<TreeInput> = {}): TreeInput => ({
  members,
  origin: members[0]!,
  networkId: "hotstuff2-test",
  epoch: 2n,
  round: 42n,
  fanout: 4,
  ...overrides
})

/** Random tree inputs: 1 to 300 members, an origin inside or outside them, some demoted. */
const treeInputs = fc
  .record({
    n: fc.integer({ min: 1, max: 300 }),
    salt: fc.nat(),
    fanout: fc.integer({ min: 2, max: 20 }),
    originOutside: fc.boolean(),
    epoch: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
    round: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
    demotedShare: fc.double({ min: 0, max: 1, noNaN: true })
  })
  .map(({ n, salt, fanout, originOutside, epoch, round, demotedShare }) => {
    const members = peers(n, salt)
    const origin = originOutside ? (peers(1, salt + 1_000_000)[0] as PeerId) : members[salt % n]!
    const demoted: Array<number> = []
    for (let i = 0; i < n; i++) if ((i * 7919 + salt) % 1000 < demotedShare * 1000) demoted.push(i)
    return { members, origin, networkId: "hotstuff2-test", epoch, round, fanout, demoted } satisfies TreeInput
  })

const interiorPositions = (m: number, fanout: number): number => Math.max(0, Math.ceil(m / fanout) - 1)

describe("Tree", () => {
  it.prop("places every member but the origin exactly once", [treeInputs], ([tree]) => {
    const t = Tree.make(tree)
    const others = tree.members.filter((p) => p !== tree.origin)
    assert.strictEqual(t.size, others.length)
    assert.deepStrictEqual([...t.order].sort(), [...others].sort())
    assert.strictEqual(new Set(t.order).size, t.order.length)
    for (const [p, peer] of t.order.entries()) assert.strictEqual(t.position(peer), p)
    assert.isUndefined(t.position(tree.origin))
  })

  it.prop("every parent chain reaches the origin in level(peer) <= depth steps", [treeInputs], ([tree]) => {
    const t = Tree.make(tree)
    for (const peer of t.order) {
      let steps = 0
      let at: PeerId | undefined = peer
      while (at !== tree.origin && at !== undefined && steps <= t.depth) {
        at = t.parent(at)
        steps++
      }
      assert.strictEqual(at, tree.origin)
      assert.strictEqual(steps, t.level(peer))
      assert.isAtMost(steps, t.depth)
    }
    assert.strictEqual(t.depth, t.size === 0 ? 0 : Math.max(...t.order.map((p) => t.level(p)!)))
  })

  it.prop("children and parent agree, and descendants are the children's closure", [treeInputs], ([tree]) => {
    const t = Tree.make(tree)
    let reached = 0
    for (const node of [tree.origin, ...t.order]) {
      const children = t.children(node)
      assert.isAtMost(children.length, tree.fanout)
      for (const child of children) assert.strictEqual(t.parent(child), node)
      reached += children.length
      const closure: Array<PeerId> = []
      const queue = [...children]
      while (queue.length > 0) {
        const next = queue.shift()!
        closure.push(next)
        queue.push(...t.children(next))
      }
      assert.deepStrictEqual(t.descendants(node), closure)
    }
    assert.strictEqual(reached, t.size, "every position is someone's child")
    assert.deepStrictEqual(t.descendants(tree.origin), t.order)
  })

  it.prop("is a function of its inputs, whatever order the members come in", [treeInputs], ([tree]) => {
    const again = Tree.make({ ...tree, members: [...tree.members].reverse() })
    assert.deepStrictEqual(again.order, Tree.make(tree).order)
  })

  it.prop(
    "puts the demoted members last, in their shuffled order, as leaves when the others fill the interior",
    [treeInputs],
    ([tree]) => {
      const t = Tree.make(tree)
      const plain = Tree.make({ ...tree, demoted: [] })
      const sorted = [...tree.members].sort()
      const isDemoted = new Set(tree.demoted.map((i) => sorted[i]!).filter((p) => p !== tree.origin))
      const tail = t.order.slice(t.size - isDemoted.size)
      assert.deepStrictEqual(
        tail,
        plain.order.filter((p) => isDemoted.has(p))
      )
      assert.deepStrictEqual(
        t.order.slice(0, t.size - isDemoted.size),
        plain.order.filter((p) => !isDemoted.has(p))
      )
      if (t.size - isDemoted.size >= interiorPositions(t.size, tree.fanout)) {
        for (const peer of isDemoted) assert.deepStrictEqual(t.children(peer), [], "a demoted member relays")
      }
    }
  )

  it("lays out a different order for another round, origin or network", () => {
    for (let n = 8; n <= 64; n++) {
      const members = peers(n, n)
      // Compared without the two origins, so that only the order can differ.
      const others = (t: Tree) => t.order.filter((p) => p !== members[0] && p !== members[1])
      const base = others(Tree.make(input(members)))
      for (const other of [
        { round: 43n },
        { epoch: 3n },
        { origin: members[1]! },
        { networkId: "hotstuff2-other" }
      ]) {
        assert.notDeepEqual(others(Tree.make(input(members, other))), base, `n ${n}, ${Object.keys(other)}`)
      }
    }
  })

  it("is two levels deep for 16, 100 and 1,000 validators with the default fanout, three for 5,000", () => {
    const depths = [16, 100, 1000, 5000].map((n) => {
      const fanout = defaultFanout(n)
      return [n, fanout, Tree.make(input(peers(n), { fanout })).depth]
    })
    assert.deepStrictEqual(depths, [
      [16, 4, 2],
      [100, 10, 2],
      [1000, 32, 2],
      [5000, 64, 3]
    ])
  })

  it("clamps the default fanout to 2..64", () => {
    assert.deepStrictEqual(
      [0, 1, 2, 4, 5, 17, 4096, 4097, 100_000].map(defaultFanout),
      [2, 2, 2, 2, 3, 5, 64, 64, 64]
    )
  })

  it("places the first fanout positions under the origin and q under floor((q - fanout) / fanout)", () => {
    const t = Tree.make(input(peers(30), { fanout: 3 }))
    assert.deepStrictEqual(t.children(t.origin), t.order.slice(0, 3))
    for (let q = 3; q < t.size; q++)
      assert.strictEqual(t.parent(t.order[q]!), t.order[Math.floor((q - 3) / 3)])
    assert.deepStrictEqual(t.children(t.order[1]!), t.order.slice(6, 9))
    // 29 positions: 3 on level 1, 9 on level 2, 17 on level 3 (of 27).
    assert.deepStrictEqual(
      [t.depth, t.level(t.order[2]!), t.level(t.order[11]!), t.level(t.order[12]!), t.level(t.origin)],
      [3, 1, 2, 3, 0]
    )
  })

  it("answers nothing for a non-member, and an origin alone has an empty tree", () => {
    const t = Tree.make(input(peers(10)))
    assert.isUndefined(t.position(stranger))
    assert.isUndefined(t.parent(stranger))
    assert.isUndefined(t.level(stranger))
    assert.isUndefined(t.parent(t.origin))
    assert.deepStrictEqual(t.children(stranger), [])
    assert.deepStrictEqual(t.descendants(stranger), [])
    const alone = Tree.make(input(peers(1)))
    assert.deepStrictEqual([alone.size, alone.depth, alone.children(alone.origin)], [0, 0, []])
  })

  it("refuses arguments no header can carry", () => {
    const members = peers(5)
    assert.throws(() => Tree.make(input(members, { fanout: 1 })), /fanout 1 is under 2/)
    assert.throws(() => Tree.make(input(members, { demoted: [5] })), /demoted index 5 outside 0..4/)
    assert.throws(() => Tree.make(input([...members, members[2]!])), /appears twice/)
    assert.throws(() => Tree.make(input(members, { origin: "xyz" as PeerId })), /not a PeerId/)
  })
})

describe("TreeCache", () => {
  it("returns the same tree for the same view, and lays out another for another view", () => {
    const cache = new TreeCache(4)
    const members = peers(20)
    const first = cache.get(input(members, { demoted: [3, 1] }))
    assert.strictEqual(cache.get(input(members, { demoted: [1, 3] })), first)
    assert.notStrictEqual(cache.get(input(members, { demoted: [1] })), first)
    assert.notStrictEqual(cache.get(input(members, { fanout: 5 })), first)
    assert.strictEqual(cache.size, 3)
  })

  it("holds at most maxTrees, forgetting the least recently used", () => {
    const cache = new TreeCache(3)
    const members = peers(20)
    const view = (round: bigint) => input(members, { round })
    const [r1, r2] = [cache.get(view(1n)), cache.get(view(2n))]
    cache.get(view(3n))
    assert.strictEqual(cache.get(view(1n)), r1) // now the most recent
    cache.get(view(4n)) // evicts round 2
    assert.strictEqual(cache.size, 3)
    assert.strictEqual(cache.get(view(1n)), r1)
    const r2again = cache.get(view(2n))
    assert.notStrictEqual(r2again, r2)
    assert.deepStrictEqual(r2again.order, r2.order)
  })
})
