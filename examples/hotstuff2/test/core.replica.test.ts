// One consensus core fed by hand: the vote rule and its persistence order, equivocation, the two-chain
// commit rule, the lock, the pacemaker's timeouts and certificates, restarts, and refusals of bad
// input (each leaving the state unchanged), with the bounds of every view-keyed map under a flood.
import { Identity, type Message } from "@hotstuff2/wire"
import { describe, expect, it } from "vitest"
import { signerBitmap, VERIFIED_CACHE_LIMIT } from "../src/core/certificates.js"
import { encodePayload, hex } from "../src/core/crypto.js"
import * as Replica from "../src/core/Replica.js"
import type { ConsensusMessage, Input, JustifiedBlock, Output, QuorumCertificate } from "../src/core/types.js"
import {
  blockOn,
  chain,
  coreConfig,
  digests,
  identities,
  proposal,
  qc,
  tc,
  timeout,
  vote
} from "./support/coreFixtures.js"

const keys = identities(4)
const all = [0, 1, 2, 3]
const genesis = digests.genesis
const genesisQC = digests.genesisQC
const leaderKey = (view: bigint) => keys[Number(view % 4n)]!

const started = (
  index: number,
  resume: Parameters<typeof Replica.make>[1] = { committed: undefined, safety: undefined }
) => {
  const replica = Replica.make(coreConfig(keys, index), resume)
  replica.step({ _tag: "Start", now: 0, resume })
  return replica
}
const receive = (replica: Replica.Replica, message: ConsensusMessage, from = 0) =>
  replica.step({ _tag: "Received", now: 0, from: keys[from]!.peerId, message })
const tags = (outputs: ReadonlyArray<Output>) => outputs.map((o) => o._tag)
const only = <T extends Output["_tag"]>(outputs: ReadonlyArray<Output>, tag: T) =>
  outputs.filter((o): o is Extract<Output, { _tag: T }> => o._tag === tag)
const reasons = (outputs: ReadonlyArray<Output>) => only(outputs, "Refused").map((r) => r.reason)

/** Everything a refused message must leave as it was. */
const snapshot = (replica: Replica.Replica) =>
  JSON.stringify(
    {
      view: replica.view,
      high: [replica.highQC.view, hex(replica.highQC.blockHash)],
      safety: [replica.safety.lastVoted, replica.safety.lastTimedOut],
      committed: [replica.committed.height, hex(replica.committed.hash)],
      debug: { ...replica.debug(), verifiedCertificates: 0 }
    },
    (_, v) => (typeof v === "bigint" ? v.toString() : v)
  )

/** The blocks of views 1, 2, 3 on genesis, each certified by everyone. */
const { blocks: certified } = chain(keys, 3)
const [b1, b2, b3] = certified.map((b) => b.block) as [typeof genesis, typeof genesis, typeof genesis]
const qc1 = qc(keys, 1n, b1.hash, all)
const qc2 = qc(keys, 2n, b2.hash, all)
const qc3 = qc(keys, 3n, b3.hash, all)
const p1 = proposal(keys[1]!, 1n, b1, genesisQC)
const p2 = proposal(keys[2]!, 2n, b2, qc1)
const p3 = proposal(keys[3]!, 3n, b3, qc2)

describe("voting", () => {
  it("votes once for a proposal of its view, persisting lastVoted before the vote leaves, to the next leader", () => {
    const replica = started(3)
    const outputs = receive(replica, p1, 1)
    expect(tags(outputs)).toEqual(["PersistSafety", "Voted", "Send"])
    expect(only(outputs, "PersistSafety")[0]!.safety.lastVoted).toBe(1n)
    const send = only(outputs, "Send")[0]!
    expect(send.to).toBe(keys[2]!.peerId)
    expect(
      Identity.verify(keys[3]!.peerId, digests.vote(1n, b1.hash), (send.message as Message.Vote).signature)
    ).toBe(true)
    expect(receive(replica, p1, 2)).toEqual([]) // the same proposal relayed again
  })

  it("refuses a second proposal by the leader for one view, records the equivocation and does not vote again", () => {
    const replica = started(3)
    receive(replica, p1, 1)
    const other = blockOn(keys[1]!.peerId, 1n, genesis, genesisQC, new TextEncoder().encode("other"))
    const outputs = receive(replica, proposal(keys[1]!, 1n, other, genesisQC), 1)
    expect(reasons(outputs)).toEqual(["equivocation: the leader proposed two different blocks in view 1"])
    expect(only(outputs, "Voted")).toEqual([])
    expect(replica.debug().equivocations).toEqual([
      { view: 1n, proposer: keys[1]!.peerId, first: hex(b1.hash), second: hex(other.hash) }
    ])
  })

  it("the next leader forms a certificate from n - f votes (a voter counted once) and proposes on it at once", () => {
    const replica = started(2) // leads view 2: collects the votes of view 1
    receive(replica, p1, 1)
    expect(receive(replica, vote(keys[0]!, 1n, b1.hash), 0)).toEqual([])
    expect(receive(replica, vote(keys[0]!, 1n, b1.hash), 0)).toEqual([])
    const outputs = receive(replica, vote(keys[3]!, 1n, b1.hash), 3)
    const certificate = only(outputs, "Certified")[0]!.certificate
    expect(certificate.signers).toEqual(signerBitmap([0, 2, 3]))
    expect(only(outputs, "EnteredView")[0]).toEqual({ _tag: "EnteredView", view: 2n, via: "qc" })
    const proposed = only(outputs, "Proposed")[0]!.proposal
    expect(proposed.justify).toBe(certificate)
    expect(proposed.block.parent).toEqual(b1.hash)
    // lastVoted is persisted before the proposal is broadcast, so a restart never proposes again.
    const order = tags(outputs)
    expect(order.lastIndexOf("PersistSafety")).toBeLessThan(order.indexOf("Broadcast"))
  })

  it("does not vote for a proposal whose certificate is below its lock, and does for one at or above it", () => {
    const replica = started(0)
    for (const [p, from] of [
      [p1, 1],
      [p2, 2],
      [p3, 3]
    ] as const)
      receive(replica, p, from)
    expect(replica.lockedQC.view).toBe(2n)
    receive(replica, tc(keys, 3n, [1, 2, 3], qc2), 1) // into view 4
    receive(replica, tc(keys, 4n, [1, 2, 3], qc2), 1) // into view 5
    expect(replica.view).toBe(5n)
    const fork = blockOn(keys[1]!.peerId, 5n, b1, qc1) // a sibling of b2, justified by QC1 < lock QC2
    const outputs = receive(replica, proposal(keys[1]!, 5n, fork, qc1), 1)
    expect(tags(outputs)).toEqual([]) // a valid block, kept, but no vote
    expect(replica.lookup(fork.hash)).toBeDefined()
    receive(replica, tc(keys, 5n, [1, 2, 3], qc2), 1) // into view 6
    const b6 = blockOn(keys[2]!.peerId, 6n, b3, qc3)
    expect(
      only(receive(replica, proposal(keys[2]!, 6n, b6, qc3), 2), "Voted").map((v) => v.vote.view)
    ).toEqual([6n])
  })
})

describe("the commit rule", () => {
  it("commits a block once its child is certified in the very next view, with each block's certificate", () => {
    const replica = started(0)
    expect(only(receive(replica, p1, 1), "Commit")).toEqual([])
    expect(only(receive(replica, p2, 2), "Commit")).toEqual([]) // QC1 only
    const commits = only(receive(replica, p3, 3), "Commit") // QC2 certifies b2, whose justify QC1 is of view 1
    expect(commits.map((c) => c.blocks.map((b) => [b.block.height, b.certificate.view]))).toEqual([
      [[1n, 1n]]
    ])
    expect(replica.committed.height).toBe(1n)
  })

  it("does not commit across a gap in views, then commits the whole chain in height order", () => {
    const replica = started(0)
    const c2 = blockOn(keys[3]!.peerId, 3n, b1, qc1) // view 3 on b1: QC1 (view 1) then QC3 (view 3)
    const qcC2 = qc(keys, 3n, c2.hash, all)
    const c3 = blockOn(keys[1]!.peerId, 5n, c2, qcC2)
    const qcC3 = qc(keys, 5n, c3.hash, all)
    const c4 = blockOn(keys[2]!.peerId, 6n, c3, qcC3)
    const fed = [
      proposal(keys[1]!, 1n, b1, genesisQC),
      proposal(keys[3]!, 3n, c2, qc1),
      proposal(keys[1]!, 5n, c3, qcC2)
    ]
    for (const p of fed) expect(only(receive(replica, p, 1), "Commit")).toEqual([])
    expect(replica.committed.height).toBe(0n)
    const qcC4 = qc(keys, 6n, c4.hash, all)
    const c5 = blockOn(keys[3]!.peerId, 7n, c4, qcC4)
    receive(replica, proposal(keys[2]!, 6n, c4, qcC3), 2) // QC5 for c3, c3's justify of view 3: no commit
    const commits = only(receive(replica, proposal(keys[3]!, 7n, c5, qcC4), 3), "Commit")
    expect(commits.flatMap((c) => c.blocks.map((b) => [b.block.height, b.certificate.view]))).toEqual([
      [1n, 1n],
      [2n, 3n],
      [3n, 5n]
    ])
  })
})

describe("the pacemaker", () => {
  it("on its timer persists lastTimedOut, broadcasts a timeout and re-arms with a doubled timer", () => {
    const replica = started(3)
    const outputs = replica.step({ _tag: "TimerFired", now: 200, view: 1n })
    expect(tags(outputs)).toEqual(["PersistSafety", "Broadcast", "SetTimer"])
    expect(only(outputs, "PersistSafety")[0]!.safety.lastTimedOut).toBe(1n)
    expect(only(outputs, "SetTimer")[0]).toEqual({ _tag: "SetTimer", view: 1n, after: 400 })
    expect(replica.step({ _tag: "TimerFired", now: 600, view: 0n })).toEqual([]) // not our view
  })

  it("joins f + 1 timeouts, forms the timeout certificate at n - f and sends a new-view to the next leader", () => {
    const replica = started(3)
    expect(receive(replica, timeout(keys[0]!, 1n, genesisQC), 0)).toEqual([])
    const outputs = receive(replica, timeout(keys[1]!, 1n, genesisQC), 1)
    const broadcasts = only(outputs, "Broadcast").map((b) => b.message)
    expect(broadcasts.map((m) => [m._tag, m.view])).toEqual([
      ["Timeout", 1n],
      ["TimeoutCertificate", 1n]
    ])
    expect((broadcasts[1] as Message.TimeoutCertificate).signers).toEqual(signerBitmap([0, 1, 3]))
    expect(only(outputs, "EnteredView")[0]).toEqual({ _tag: "EnteredView", view: 2n, via: "tc" })
    const newView = only(outputs, "Send")[0]!
    expect([newView.to, newView.message._tag]).toEqual([keys[2]!.peerId, "NewView"])
  })

  it("a leader entered by timeout certificate proposes once it holds n - f new-views, extending the highest", () => {
    const replica = started(2)
    receive(replica, p1, 1) // b1 known; highQC stays genesis
    const outputs = receive(replica, tc(keys, 1n, [0, 1, 3], genesisQC), 0)
    expect(only(outputs, "Proposed")).toEqual([])
    const newView = (i: number, high: QuorumCertificate): Message.NewView => ({
      _tag: "NewView",
      view: 2n,
      highQC: high,
      sender: keys[i]!.peerId,
      signature: Identity.sign(keys[i]!, digests.newView(2n, high))
    })
    expect(only(receive(replica, newView(0, genesisQC), 0), "Proposed")).toEqual([])
    const proposed = only(receive(replica, newView(3, qc1), 3), "Proposed")
    expect(proposed.map((p) => [p.proposal.view, p.proposal.justify.view])).toEqual([[2n, 1n]])
  })

  it("a certificate resets the timer to its base after failed views", () => {
    const replica = started(0)
    replica.step({ _tag: "TimerFired", now: 200, view: 1n })
    const viaTC = receive(replica, tc(keys, 1n, [0, 1, 2], genesisQC), 1)
    expect(only(viaTC, "SetTimer").map((t) => t.after)).toEqual([400])
    const outputs = receive(replica, p3, 3) // its justify QC2 is a new certificate: view 3
    expect(only(outputs, "SetTimer").map((t) => [t.view, t.after])).toEqual([[3n, 200]])
  })
})

describe("restarts", () => {
  it("a replica resumed from its safety state never votes again in a view it voted in", () => {
    const first = started(3)
    const persisted = only(receive(first, p1, 1), "PersistSafety").at(-1)!.safety
    const again = started(3, { committed: undefined, safety: persisted })
    expect(again.view).toBe(1n)
    expect(only(receive(again, p1, 1), "Voted")).toEqual([])
    const other = blockOn(keys[1]!.peerId, 1n, genesis, genesisQC, new TextEncoder().encode("other"))
    expect(only(receive(again, proposal(keys[1]!, 1n, other, genesisQC), 1), "Voted")).toEqual([])
    expect(only(receive(again, p2, 2), "Voted").map((v) => v.vote.view)).toEqual([2n])
  })

  it("a leader resumed in the view it proposed in does not propose again", () => {
    const resume = { committed: undefined, safety: undefined }
    const leader = Replica.make(coreConfig(keys, 1), resume) // leads view 1
    const first = leader.step({ _tag: "Start", now: 0, resume })
    expect(only(first, "Proposed")).toHaveLength(1)
    const safety = only(first, "PersistSafety").at(-1)!.safety
    const again = Replica.make(coreConfig(keys, 1), { committed: undefined, safety })
    const outputs = again.step({ _tag: "Start", now: 0, resume })
    expect(again.view).toBe(1n)
    expect(tags(outputs)).toEqual(["EnteredView", "SetTimer"])
  })
})

describe("refusals leave the state unchanged", () => {
  const refusedUnchanged = (replica: Replica.Replica, input: Input, reason: string | RegExp) => {
    const before = snapshot(replica)
    const outputs = replica.step(input)
    expect(tags(outputs)).toEqual(["Refused"])
    expect(reasons(outputs)[0]).toMatch(reason)
    expect(snapshot(replica)).toBe(before)
  }
  const received = (message: ConsensusMessage, from = 0): Input => ({
    _tag: "Received",
    now: 0,
    from: keys[from]!.peerId,
    message
  })
  const corrupt = (signature: Uint8Array) => signature.map((b, i) => (i === 0 ? b ^ 1 : b))

  it("bad signatures on proposals, votes, timeouts, certificates and new-views", () => {
    const leader2 = started(2)
    receive(leader2, p1, 1)
    refusedUnchanged(
      leader2,
      received({ ...p2, signature: corrupt(p2.signature) }),
      "proposal signature does not verify"
    )
    const v = vote(keys[0]!, 1n, b1.hash)
    refusedUnchanged(
      leader2,
      received({ ...v, signature: corrupt(v.signature) }),
      "vote signature does not verify"
    )
    const t = timeout(keys[0]!, 1n, genesisQC)
    refusedUnchanged(
      leader2,
      received({ ...t, signature: corrupt(t.signature) }),
      "timeout signature does not verify"
    )
    const badQC = {
      ...qc1,
      signatures: [qc1.signatures[0]!, qc1.signatures[1]!, corrupt(qc1.signatures[2]!), qc1.signatures[3]!]
    }
    refusedUnchanged(
      leader2,
      received(proposal(keys[2]!, 2n, b2, badQC)),
      /signature of validator 2 .* does not verify/
    )
    const badTC = tc(keys, 1n, [0, 1, 3], genesisQC)
    refusedUnchanged(
      leader2,
      received({
        ...badTC,
        signatures: [badTC.signatures[0]!, corrupt(badTC.signatures[1]!), badTC.signatures[2]!]
      }),
      /timeout certificate for view 1 signature of validator 1/
    )
  })

  it("certificates with too few signers or signer bits beyond n", () => {
    const replica = started(3)
    receive(replica, p1, 1)
    const few = qc(keys, 1n, b1.hash, [0, 1])
    refusedUnchanged(
      replica,
      received(proposal(keys[2]!, 2n, b2, few)),
      "certificate for view 1 has 2 signers, needs 3"
    )
    const beyond: QuorumCertificate = {
      ...qc1,
      signers: signerBitmap([0, 1, 5]),
      signatures: qc1.signatures.slice(0, 3)
    }
    refusedUnchanged(
      replica,
      received(proposal(keys[2]!, 2n, b2, beyond)),
      "signer bit 5 is beyond the 4 validators"
    )
    const fewTC = tc(keys, 1n, [0, 1], genesisQC)
    refusedUnchanged(replica, received(fewTC), "timeout certificate for view 1 has 2 signers, needs 3")
  })

  it("far-future views, stale views and malformed blocks", () => {
    const replica = started(3)
    const far = 1n + 20n + 1n
    const farBlock = blockOn(leaderKey(far).peerId, far, genesis, genesisQC)
    refusedUnchanged(
      replica,
      received(proposal(leaderKey(far), far, farBlock, genesisQC)),
      /view 22 too far ahead/
    )
    refusedUnchanged(replica, received(timeout(keys[0]!, far, genesisQC)), /view 22 too far ahead/)
    const wrongHash = { ...b1, payload: encodePayload(1n, keys[1]!.peerId, 0n, new Uint8Array([9])) }
    refusedUnchanged(
      replica,
      received(proposal(keys[1]!, 1n, wrongHash, genesisQC), 1),
      "block hash does not match its contents"
    )
    const notLeader = blockOn(keys[2]!.peerId, 1n, genesis, genesisQC)
    refusedUnchanged(
      replica,
      received(proposal(keys[2]!, 1n, notLeader, genesisQC), 2),
      "proposer is not the leader of view 1"
    )
    const big = blockOn(keys[1]!.peerId, 1n, genesis, genesisQC, new Uint8Array(2048))
    refusedUnchanged(
      replica,
      received(proposal(keys[1]!, 1n, big, genesisQC), 1),
      /more than maxPayloadBytes 1024/
    )
    receive(replica, tc(keys, 5n, [0, 1, 2], genesisQC)) // into view 6
    const stale = Replica.isBenignRefusal
    const outputs = receive(replica, timeout(keys[0]!, 2n, genesisQC))
    expect(reasons(outputs).map(stale)).toEqual([true])
    expect(reasons(receive(replica, proposal(keys[1]!, 1n, b1, genesisQC), 1)).map(stale)).toEqual([true])
  })

  it("forged sync answers, then the real chain: commits and votes for the proposal that waited", () => {
    const replica = started(0)
    const waiting = receive(replica, p3, 3) // its parent b2 is unknown
    expect(only(waiting, "Fetch")).toEqual([
      { _tag: "Fetch", target: { hash: b2.hash, height: 2n }, fromHeight: 1n, hint: keys[3]!.peerId }
    ])
    expect(replica.view).toBe(3n) // its justify QC2 moved the view on
    const synced = (blocks: ReadonlyArray<JustifiedBlock>): Input => ({
      _tag: "Synced",
      now: 0,
      from: keys[1]!.peerId,
      blocks
    })
    const real: ReadonlyArray<JustifiedBlock> = [
      { block: b1, justify: genesisQC },
      { block: b2, justify: qc1 }
    ]
    const forgedQC = { ...qc1, signatures: qc1.signatures.map((s, i) => (i === 1 ? corrupt(s) : s)) }
    refusedUnchanged(
      replica,
      synced([real[0]!, { block: b2, justify: forgedQC }]),
      /block 1 \(height 2\): certificate for view 1 signature/
    )
    const fewQC = qc(keys, 1n, b1.hash, [1, 2])
    refusedUnchanged(replica, synced([real[0]!, { block: b2, justify: fewQC }]), /has 2 signers, needs 3/)
    const tampered = { ...b1, payload: encodePayload(1n, keys[1]!.peerId, 0n, new Uint8Array([7])) }
    refusedUnchanged(
      replica,
      synced([{ block: tampered, justify: genesisQC }, real[1]!]),
      /block 0 \(height 1\): block hash does not match/
    )
    const sibling = blockOn(keys[1]!.peerId, 1n, genesis, genesisQC, new TextEncoder().encode("sibling"))
    refusedUnchanged(
      replica,
      synced([{ block: sibling, justify: genesisQC }, real[1]!]),
      /its parent is not the block before it/
    )
    refusedUnchanged(replica, synced([real[0]!]), "its last block is no target we asked for")
    refusedUnchanged(replica, synced([]), "sync answer carries no blocks")
    const outputs = replica.step(synced(real))
    expect(reasons(outputs)).toEqual([])
    expect(only(outputs, "Commit").flatMap((c) => c.blocks.map((b) => b.block.height))).toEqual([1n])
    expect(only(outputs, "Voted").map((v) => v.vote.view)).toEqual([3n])
    expect(replica.lookup(b2.hash)?.justify.view).toBe(1n)
  })
})

describe("bounds", () => {
  const window = 20
  const perView = window + 1 + Number(Replica.PAST_VIEWS)

  it("a flood of signed timeouts and votes for 5,000 views and of unsigned proposals keeps maps bounded", () => {
    const replica = started(2)
    let refused = 0
    for (let view = 1n; view <= 5_000n; view++) {
      refused += reasons(receive(replica, timeout(keys[0]!, view, genesisQC))).length
      refused += reasons(receive(replica, vote(keys[0]!, view, b1.hash))).length
      const garbage = blockOn(leaderKey(view).peerId, view, b3, qc3)
      refused += reasons(
        receive(replica, { ...proposal(leaderKey(view), view, garbage, qc3), signature: new Uint8Array(64) })
      ).length
    }
    const debug = replica.debug()
    expect(debug.timeouts).toBeLessThanOrEqual(perView)
    expect(debug.votes).toBeLessThanOrEqual(perView)
    expect(debug.proposalsSeen).toBe(0)
    expect(refused).toBeGreaterThan(3 * 5_000 - 2 * perView)
    expect(replica.view).toBe(1n) // nothing in the flood could move it
  })

  it("valid proposals on unknown parents for many views: pending proposals and fetches stay bounded", () => {
    const replica = started(2)
    for (let view = 2n; view <= 300n; view++) {
      const parent = { ...b3, hash: new Uint8Array(32).fill(Number(view % 250n)), height: 9n }
      const justify = qc(keys, 1n, parent.hash, all)
      const block = blockOn(leaderKey(view).peerId, view, parent, justify)
      receive(replica, proposal(leaderKey(view), view, block, justify))
    }
    const debug = replica.debug()
    expect(debug.pending).toBeGreaterThan(0)
    expect(debug.pending).toBeLessThanOrEqual(perView)
    expect(debug.proposalsSeen).toBeLessThanOrEqual(perView)
    expect(debug.fetches).toBeLessThanOrEqual(Replica.FETCH_LIMIT)
    expect(debug.verifiedCertificates).toBeLessThanOrEqual(VERIFIED_CACHE_LIMIT)
    expect(debug.blocks).toBe(1) // genesis only
  })
})
