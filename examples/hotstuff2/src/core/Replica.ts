/**
 * The HotStuff-2 consensus core: a pure, synchronous state machine (see `types.ts` for its inputs and
 * outputs). One lock, the highest quorum certificate seen; a vote for a proposal of the current view
 * only if its certificate is at least as high as the lock; the two-chain commit rule; a pacemaker of
 * timeouts, timeout certificates and new-view messages. It never reads a clock, draws randomness or
 * does I/O.
 *
 * What the driver must know: messages this replica sends to itself (its vote when it leads the next
 * view, its new-view when it leads the view it enters) are handled inside and never appear as
 * `Send`; its own broadcasts are handled inside too (a proposal or timeout delivered back is ignored,
 * its timeout certificate is refused as stale). Proposals of the last `PAST_VIEWS` views still enter
 * the block tree (without a vote), so a leader that formed a certificate before the block arrived
 * can still extend it.
 */
import { Identity, type Message } from "@hotstuff2/wire"
import { BlockTree, type TreeNode } from "./blockTree.js"
import { Certificates, faults, signerBitmap, ViewCollector } from "./certificates.js"
import { decodePayload, encodePayload, hex, makeDigests } from "./crypto.js"
import { leaderOf, resumeView, timerDuration } from "./pacemaker.js"
import { verifyChain } from "./sync.js"
import type {
  CommittedBlock,
  CoreConfig,
  Input,
  JustifiedBlock,
  Output,
  PeerId,
  QuorumCertificate,
  Resume,
  SafetyState,
  TimeoutCertificate
} from "./types.js"
import { checkBlock } from "./validation.js"

/** Views below the current one whose votes, proposals and equivocation records are still kept. */
export const PAST_VIEWS = 2n
/** Outstanding fetch targets remembered (a sync answer must end at one of them). */
export const FETCH_LIMIT = 64
/** Equivocation records kept, newest last. */
export const EQUIVOCATION_LIMIT = 64

/** Refusals of messages that an honest but late peer sends; reasons start with this. */
export const STALE = "stale: "
/** Whether a refusal reason is benign (lateness) rather than evidence of a fault. */
export const isBenignRefusal = (reason: string): boolean => reason.startsWith(STALE)

/** Two valid proposals signed by one leader for one view. */
export interface Equivocation {
  readonly view: bigint
  readonly proposer: PeerId
  readonly first: string
  readonly second: string
}

/** Sizes of every bounded structure, for tests and metrics. */
export interface ReplicaDebug {
  readonly votes: number
  readonly timeouts: number
  readonly newViews: number
  readonly pending: number
  readonly proposalsSeen: number
  readonly blocks: number
  readonly committedWindow: number
  readonly verifiedCertificates: number
  readonly fetches: number
  readonly equivocations: ReadonlyArray<Equivocation>
}

export interface Replica {
  /** Feeds one input; returns what to do, in order (persist before what follows it). */
  readonly step: (input: Input) => ReadonlyArray<Output>
  readonly view: bigint
  readonly highQC: QuorumCertificate
  /** The lock; this core locks on the highest certificate, so it is `highQC`. */
  readonly lockedQC: QuorumCertificate
  readonly safety: SafetyState
  readonly committed: { readonly height: bigint; readonly hash: Uint8Array }
  /** A block of the uncommitted tree or of the last committed ones (for serving block sync). */
  readonly lookup: (hash: Uint8Array) => JustifiedBlock | undefined
  readonly leader: (view: bigint) => PeerId
  readonly debug: () => ReplicaDebug
}

interface Pending {
  readonly from: PeerId
  readonly proposal: Message.Proposal
  readonly view: bigint
}

/**
 * A replica resuming from `resume` (nothing: genesis). `Start` arms its first timer; `Start`'s own
 * `resume` is not read (this one is). Throws only on a resume that is not one (a broken ledger).
 */
export const make = (config: CoreConfig, resume: Resume): Replica => {
  const digests = makeDigests(config.networkId)
  const certificates = new Certificates(config.validators, digests)
  const self = config.identity.peerId
  const selfIndex = config.validators.indexOf(self)
  const window = BigInt(config.viewWindow)
  const head: CommittedBlock = resume.committed ?? {
    block: digests.genesis,
    justify: digests.genesisQC,
    certificate: digests.genesisQC
  }
  const headHeader = head.block.height === 0n ? undefined : decodePayload(head.block.payload)
  if (typeof headHeader === "string") throw new Error(`resume's committed block is malformed: ${headHeader}`)
  const tree = new BlockTree(head, headHeader?.view ?? 0n)

  const restored = resume.safety
  let highQC: QuorumCertificate =
    restored !== undefined && restored.locked.view >= head.certificate.view
      ? restored.locked
      : head.certificate
  let lastVoted = restored?.lastVoted ?? 0n
  let lastTimedOut = restored?.lastTimedOut ?? 0n
  let view = resumeView({ lastVoted, lastTimedOut, locked: highQC })
  let failures = 0
  let started = false
  let lastTC: TimeoutCertificate | undefined

  const votes = new ViewCollector<{ readonly key: string; readonly signature: Uint8Array }>()
  const timeouts = new ViewCollector<{ readonly signature: Uint8Array; readonly highQC: QuorumCertificate }>()
  const newViews = new ViewCollector<QuorumCertificate>()
  const formedQC = new Set<bigint>()
  const formedTC = new Set<bigint>()
  const proposalsSeen = new Map<bigint, string>()
  const pending = new Map<bigint, Pending>()
  const fetches = new Map<string, bigint>()
  const equivocations: Array<Equivocation> = []

  let out: Array<Output> = []
  const safety = (): SafetyState => ({ lastVoted, lastTimedOut, locked: highQC })
  const persist = () => out.push({ _tag: "PersistSafety", safety: safety() })
  const refuse = (from: PeerId, what: string, reason: string) =>
    out.push({ _tag: "Refused", from, what, reason })
  const indexOf = (peer: PeerId) => config.validators.indexOf(peer)
  const leader = (v: bigint) => leaderOf(config.validators, v)
  const tooFar = (v: bigint) => `view ${v} too far ahead of our view ${view} (window ${window})`

  // --- certificates, commits and views -----------------------------------------------------------

  /** Takes in a verified certificate: lock, commit rule, view. Idempotent. */
  const learnQC = (qc: QuorumCertificate) => {
    if (qc.view > highQC.view) {
      highQC = qc
      failures = 0
      persist()
    }
    const node = tree.get(qc.blockHash)
    if (node !== undefined) {
      if (node.certificate === undefined) node.certificate = qc
      checkCommit(node)
    }
    if (qc.view >= view) enterView(qc.view + 1n, "qc")
  }

  /** Two-chain rule: a certified block whose justify is of the view just before commits its parent. */
  const checkCommit = (node: TreeNode) => {
    const qc2 = node.certificate
    if (qc2 === undefined || qc2.view !== node.justify.view + 1n) return
    if (node.block.height <= tree.head.block.height) return // its parent is committed already
    const chain = tree.chainTo(node.justify.blockHash)
    if (typeof chain === "string") return refuse(self, "Commit", chain)
    if (chain.length === 0) return
    out.push({ _tag: "Commit", blocks: tree.commit(chain, node.justify) })
    failures = 0
  }

  const enterView = (next: bigint, via: "qc" | "tc", tc?: TimeoutCertificate) => {
    if (next <= view) return
    view = next
    const low = view - PAST_VIEWS
    votes.prune(low, view + window)
    timeouts.prune(view, view + window)
    newViews.prune(view, view + window)
    for (const set of [formedQC, formedTC]) for (const v of set) if (v < low) set.delete(v)
    for (const map of [proposalsSeen, pending]) for (const v of map.keys()) if (v < low) map.delete(v)
    out.push({ _tag: "EnteredView", view, via })
    out.push({ _tag: "SetTimer", view, after: timerDuration(config, failures) })
    if (tc !== undefined) {
      lastTC = tc
      const signature = Identity.sign(config.identity, digests.newView(view, highQC))
      const message: Message.NewView = { _tag: "NewView", view, highQC, sender: self, signature }
      if (leader(view) === self) newViews.add(view, selfIndex, highQC)
      else out.push({ _tag: "Send", to: leader(view), message })
    }
  }

  // --- blocks ------------------------------------------------------------------------------------

  const addBlock = (block: JustifiedBlock, blockView: bigint) => {
    const node: TreeNode = { ...block, view: blockView, certificate: undefined }
    if (hex(highQC.blockHash) === hex(block.block.hash)) node.certificate = highQC
    tree.add(node)
    learnQC(block.justify)
    checkCommit(node)
    const key = hex(block.block.hash)
    fetches.delete(key)
    for (const [v, entry] of pending) {
      if (hex(entry.proposal.block.parent) !== key) continue
      pending.delete(v)
      placeProposal(entry)
    }
  }

  const fetch = (hash: Uint8Array, height: bigint, hint: PeerId) => {
    const key = hex(hash)
    const askedIn = fetches.get(key)
    if (askedIn !== undefined && askedIn >= view) return
    fetches.delete(key)
    if (fetches.size >= FETCH_LIMIT) fetches.delete(fetches.keys().next().value!)
    fetches.set(key, view)
    out.push({ _tag: "Fetch", target: { hash, height }, fromHeight: tree.head.block.height + 1n, hint })
  }

  // --- proposals and votes -----------------------------------------------------------------------

  const onProposal = (from: PeerId, p: Message.Proposal) => {
    const what = `Proposal for view ${p.view}`
    if (p.view + PAST_VIEWS < view) return refuse(from, what, `${STALE}we are in view ${view}`)
    if (p.view > view + window) return refuse(from, what, tooFar(p.view))
    if (p.proposer !== leader(p.view))
      return refuse(from, what, `proposer is not the leader of view ${p.view}`)
    const key = hex(p.block.hash)
    const seen = proposalsSeen.get(p.view)
    if (seen === key) return
    const header = checkBlock(config, digests, p.block, p.justify)
    if (typeof header === "string") return refuse(from, what, header)
    if (header.view !== p.view) return refuse(from, what, `its block names view ${header.view}`)
    if (!Identity.verify(p.proposer, digests.proposal(p.view, p.block.hash, p.justify), p.signature)) {
      return refuse(from, what, "proposal signature does not verify")
    }
    const justify = certificates.verifyQC(p.justify)
    if (typeof justify === "string") return refuse(from, what, justify)
    if (seen !== undefined) {
      if (equivocations.length >= EQUIVOCATION_LIMIT) equivocations.shift()
      equivocations.push({ view: p.view, proposer: p.proposer, first: seen, second: key })
      return refuse(from, what, `equivocation: the leader proposed two different blocks in view ${p.view}`)
    }
    proposalsSeen.set(p.view, key)
    learnQC(justify)
    placeProposal({ from, proposal: { ...p, justify }, view: p.view })
  }

  /** A verified proposal: into the tree (and a vote) if its parent is known, else pending and fetched. */
  const placeProposal = (entry: Pending) => {
    const p = entry.proposal
    const what = `Proposal for view ${p.view}`
    if (tree.isCommitted(p.block.hash)) return
    const parent = tree.get(p.block.parent)
    if (parent === undefined) {
      if (p.block.height <= tree.head.block.height + 1n || tree.isCommitted(p.block.parent)) {
        return refuse(
          entry.from,
          what,
          `its block conflicts with the committed chain (head at height ${tree.head.block.height})`
        )
      }
      pending.set(p.view, entry)
      return fetch(p.block.parent, p.block.height - 1n, p.proposer)
    }
    if (p.block.height !== parent.block.height + 1n) {
      return refuse(
        entry.from,
        what,
        `block height ${p.block.height} does not follow its parent's ${parent.block.height}`
      )
    }
    if (p.justify.view !== parent.view) {
      return refuse(
        entry.from,
        what,
        `its certificate is of view ${p.justify.view}, the parent was proposed in view ${parent.view}`
      )
    }
    if (tree.get(p.block.hash) === undefined) addBlock({ block: p.block, justify: p.justify }, p.view)
    // The vote rule: once per view, in the current view, never against the lock.
    if (p.view === view && p.view > lastVoted && p.justify.view >= highQC.view) {
      lastVoted = p.view
      persist()
      castVote(p.view, p.block.hash)
    }
  }

  const castVote = (v: bigint, blockHash: Uint8Array) => {
    const signature = Identity.sign(config.identity, digests.vote(v, blockHash))
    const vote: Message.Vote = { _tag: "Vote", view: v, blockHash, voter: self, signature }
    out.push({ _tag: "Voted", vote })
    const to = leader(v + 1n)
    if (to === self) onVote(self, vote)
    else out.push({ _tag: "Send", to, message: vote })
  }

  const onVote = (from: PeerId, vote: Message.Vote) => {
    const what = `Vote for view ${vote.view}`
    const index = indexOf(vote.voter)
    if (index < 0) return refuse(from, what, "the voter is not a validator")
    if (leader(vote.view + 1n) !== self) return refuse(from, what, `we do not lead view ${vote.view + 1n}`)
    if (vote.view + PAST_VIEWS < view) return refuse(from, what, `${STALE}we are in view ${view}`)
    if (vote.view > view + window) return refuse(from, what, tooFar(vote.view))
    if (formedQC.has(vote.view)) return
    const key = hex(vote.blockHash)
    const existing = votes.entries(vote.view).find(([i]) => i === index)?.[1]
    if (existing?.key === key) return
    if (!Identity.verify(vote.voter, digests.vote(vote.view, vote.blockHash), vote.signature)) {
      return refuse(from, what, "vote signature does not verify")
    }
    if (existing !== undefined)
      return refuse(from, what, `the voter voted for two blocks in view ${vote.view}`)
    votes.add(vote.view, index, { key, signature: vote.signature })
    const forBlock = votes.entries(vote.view).filter(([, v]) => v.key === key)
    if (forBlock.length < certificates.quorum) return
    formedQC.add(vote.view)
    const qc: QuorumCertificate = {
      _tag: "QuorumCertificate",
      view: vote.view,
      blockHash: vote.blockHash,
      signers: signerBitmap(forBlock.map(([i]) => i)),
      signatures: forBlock.map(([, v]) => v.signature)
    }
    out.push({ _tag: "Certified", certificate: qc })
    learnQC(qc)
  }

  const tryPropose = () => {
    if (leader(view) !== self || view <= lastVoted) return
    if (highQC.view + 1n !== view && newViews.count(view) < certificates.quorum) return
    const parent = tree.get(highQC.blockHash)
    if (parent === undefined) return
    const height = parent.block.height + 1n
    const payload = encodePayload(view, self, highQC.view, config.payload(view, height))
    const block = digests.block(parent.block.hash, height, payload)
    const signature = Identity.sign(config.identity, digests.proposal(view, block.hash, highQC))
    const proposal: Message.Proposal = {
      _tag: "Proposal",
      view,
      block,
      justify: highQC,
      proposer: self,
      signature
    }
    lastVoted = view // reserved before the proposal leaves: a restart never proposes twice in a view
    persist()
    proposalsSeen.set(view, hex(block.hash))
    out.push({ _tag: "Broadcast", message: proposal })
    out.push({ _tag: "Proposed", proposal })
    addBlock({ block, justify: highQC }, view)
    castVote(view, block.hash)
  }

  // --- timeouts and new views --------------------------------------------------------------------

  const sendTimeout = (v: bigint) => {
    if (v > lastTimedOut) {
      lastTimedOut = v
      persist()
    }
    const signature = Identity.sign(config.identity, digests.timeout(v))
    out.push({ _tag: "Broadcast", message: { _tag: "Timeout", view: v, highQC, sender: self, signature } })
    timeouts.add(v, selfIndex, { signature, highQC })
    checkTimeouts(v)
  }

  /** f + 1 timeouts for a view: join them; n - f: form the timeout certificate and move on. */
  const checkTimeouts = (v: bigint) => {
    if (v < view) return
    const count = timeouts.count(v)
    if (count >= faults(config.validators.length) + 1 && !timeouts.has(v, selfIndex)) return sendTimeout(v)
    if (count < certificates.quorum || formedTC.has(v)) return
    formedTC.add(v)
    const entries = timeouts.entries(v)
    let high = entries[0]![1].highQC
    for (const [, t] of entries) if (t.highQC.view > high.view) high = t.highQC
    const tc: TimeoutCertificate = {
      _tag: "TimeoutCertificate",
      view: v,
      signers: signerBitmap(entries.map(([i]) => i)),
      signatures: entries.map(([, t]) => t.signature),
      highQC: high
    }
    out.push({ _tag: "Broadcast", message: tc })
    enterView(v + 1n, "tc", tc)
  }

  /** What Timeout, TimeoutCertificate and NewView share: a view in range, then a signature, then a certificate below it. */
  const checkViewChange = (
    from: PeerId,
    what: string,
    v: bigint,
    qc: QuorumCertificate,
    signatureFailure: () => string | undefined
  ): QuorumCertificate | undefined => {
    if (v < view) return void refuse(from, what, `${STALE}we are in view ${view}`)
    if (v > view + window) return void refuse(from, what, tooFar(v))
    if (qc.view >= v)
      return void refuse(from, what, `it carries a certificate of view ${qc.view}, not below ${v}`)
    const failure = signatureFailure()
    if (failure !== undefined) return void refuse(from, what, failure)
    const verified = certificates.verifyQC(qc)
    if (typeof verified === "string") return void refuse(from, what, verified)
    learnQC(verified)
    return verified
  }

  const onTimeout = (from: PeerId, t: Message.Timeout) => {
    const index = indexOf(t.sender)
    if (index < 0) return refuse(from, `Timeout for view ${t.view}`, "the sender is not a validator")
    if (timeouts.has(t.view, index)) return
    const qc = checkViewChange(from, `Timeout for view ${t.view}`, t.view, t.highQC, () =>
      Identity.verify(t.sender, digests.timeout(t.view), t.signature)
        ? undefined
        : "timeout signature does not verify"
    )
    if (qc === undefined || t.view < view) return
    timeouts.add(t.view, index, { signature: t.signature, highQC: qc })
    checkTimeouts(t.view)
  }

  const onTimeoutCertificate = (from: PeerId, tc: TimeoutCertificate) => {
    const qc = checkViewChange(from, `TimeoutCertificate for view ${tc.view}`, tc.view, tc.highQC, () =>
      certificates.verifyTCSignatures(tc)
    )
    if (qc !== undefined) enterView(tc.view + 1n, "tc", { ...tc, highQC: qc })
  }

  const onNewView = (from: PeerId, nv: Message.NewView) => {
    const what = `NewView for view ${nv.view}`
    const index = indexOf(nv.sender)
    if (index < 0) return refuse(from, what, "the sender is not a validator")
    if (leader(nv.view) !== self) return refuse(from, what, `we do not lead view ${nv.view}`)
    if (newViews.has(nv.view, index)) return
    const qc = checkViewChange(from, what, nv.view, nv.highQC, () =>
      Identity.verify(nv.sender, digests.newView(nv.view, nv.highQC), nv.signature)
        ? undefined
        : "new-view signature does not verify"
    )
    if (qc !== undefined && nv.view >= view) newViews.add(nv.view, index, qc)
  }

  // --- inputs ------------------------------------------------------------------------------------

  const onTimer = (v: bigint) => {
    if (v !== view) return
    failures++
    sendTimeout(v)
    // A peer that missed the certificate we entered this view by gets it again with our timeout.
    if (lastTC !== undefined && lastTC.view + 1n === view) out.push({ _tag: "Broadcast", message: lastTC })
    out.push({ _tag: "SetTimer", view, after: timerDuration(config, failures) })
  }

  const onSynced = (from: PeerId, blocks: ReadonlyArray<JustifiedBlock>) => {
    const last = blocks[blocks.length - 1]
    const what = `Synced ${blocks.length} blocks`
    // An answer bounded short of its target is a prefix of the way there: each of its blocks but the
    // last is certified by the next one's justify, so those enter the tree; the last comes again as
    // the first of the next answer.
    const partial = last !== undefined && !fetches.has(hex(last.block.hash))
    if (partial) {
      if (tree.lookup(last.block.hash) !== undefined)
        return refuse(from, what, `${STALE}we have its last block`)
      if (blocks.length < 2) return refuse(from, what, "its last block is no target we asked for")
    }
    const chain = verifyChain(config, digests, certificates, tree, blocks)
    if (typeof chain === "string") return refuse(from, what, chain)
    const keep = partial ? chain.blocks.length - 1 : chain.blocks.length
    for (let i = 0; i < keep; i++) addBlock(chain.blocks[i]!, chain.views[i]!)
  }

  const step = (input: Input): ReadonlyArray<Output> => {
    out = []
    switch (input._tag) {
      case "Start":
        if (started) {
          refuse(self, "Start", "the replica is already started")
          break
        }
        started = true
        out.push({ _tag: "EnteredView", view, via: "start" })
        out.push({ _tag: "SetTimer", view, after: timerDuration(config, failures) })
        break
      case "TimerFired":
        onTimer(input.view)
        break
      case "Synced":
        onSynced(input.from, input.blocks)
        break
      case "Received": {
        const m = input.message
        if (m._tag === "Proposal") onProposal(input.from, m)
        else if (m._tag === "Vote") onVote(input.from, m)
        else if (m._tag === "Timeout") onTimeout(input.from, m)
        else if (m._tag === "TimeoutCertificate") onTimeoutCertificate(input.from, m)
        else onNewView(input.from, m)
      }
    }
    if (started) tryPropose()
    return out
  }

  return {
    step,
    get view() {
      return view
    },
    get highQC() {
      return highQC
    },
    get lockedQC() {
      return highQC
    },
    get safety() {
      return safety()
    },
    get committed() {
      return { height: tree.head.block.height, hash: tree.head.block.hash }
    },
    lookup: (hash) => tree.lookup(hash),
    leader,
    debug: () => ({
      votes: votes.size,
      timeouts: timeouts.size,
      newViews: newViews.size,
      pending: pending.size,
      proposalsSeen: proposalsSeen.size,
      blocks: tree.size,
      committedWindow: tree.windowLength,
      verifiedCertificates: certificates.cacheSize,
      fetches: fetches.size,
      equivocations: [...equivocations]
    })
  }
}
