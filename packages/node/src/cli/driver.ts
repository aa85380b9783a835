// Consensus-shaped traffic over one NodeNetwork, for devnets and demos: per view a rotating leader
// (view mod n) broadcasts a signed Proposal justified by the highest QuorumCertificate it knows;
// every validator sends its signed Vote to the next leader, who forms a QC from n - f votes and
// proposes the next view. A view that makes no progress within `viewTimeout` is abandoned: each
// validator moves on and sends a NewView with its highest QC to the next leader, who proposes.
// Not a consensus protocol (no locking, no safety rules): the traffic and the signatures of one.
import * as crypto from "node:crypto"
import { Codec, Identity, Message } from "@hotstuff2/wire"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type { NodeNetworkShape } from "../NodeNetwork.js"

export interface DriverOptions {
  /** The validator set in config order: the leader of view v is `validators[v mod n]`. */
  readonly validators: ReadonlyArray<Identity.PeerId>
  /** This node's key (the one its NodeNetwork runs with): signs proposals, votes and new-views. */
  readonly identity: Identity.Identity
  /** Size of each block's opaque payload. */
  readonly payloadBytes: number
  /** A view with no proposal or certificate for this long is abandoned. */
  readonly viewTimeout: Duration.DurationInput
  /** A leader proposes no sooner than this after entering its view (0: at once). */
  readonly minViewTime: Duration.DurationInput
  /** The first leader waits this long at most for connections to every validator. */
  readonly startTimeout: Duration.DurationInput
}

/** Every counter at zero: a driver's start, and the stats of a node without one. */
export const noCounters = () => ({
  proposalsSent: 0,
  proposalsReceived: 0,
  votesSent: 0,
  votesReceived: 0,
  certificates: 0,
  timeouts: 0,
  bytesIn: 0,
  bytesOut: 0,
  rejected: 0,
  sendFailures: 0,
  duplicates: 0,
  outOfOrder: 0
})

/** Cumulative counters of one validator's driver. */
export interface DriverStats {
  /** The view this validator is in (0 before the first). */
  readonly view: number
  readonly proposalsSent: number
  readonly proposalsReceived: number
  readonly votesSent: number
  readonly votesReceived: number
  /** Quorum certificates this validator formed as leader. */
  readonly certificates: number
  /** Views this validator abandoned. */
  readonly timeouts: number
  /** Message bytes received (as the broadcaster counts them: without frame and TLS overhead). */
  readonly bytesIn: number
  /** Encoded message bytes queued to peers (one copy per recipient). */
  readonly bytesOut: number
  /** Messages whose signature, proposer or certificate did not check out. */
  readonly rejected: number
  /** Sends and broadcast recipients refused (not connected, backpressure). */
  readonly sendFailures: number
  /**
   * Deliveries the network should never make: a broadcast whose origin and sequence number were
   * delivered before, or a vote (same voter, view and block) delivered before. Each is logged.
   */
  readonly duplicates: number
  /** Broadcasts delivered after a later one of the same origin (a lower sequence number). Each is logged. */
  readonly outOfOrder: number
}

export interface Driver {
  readonly stats: Effect.Effect<DriverStats>
}

/** n - f votes make a certificate, f = floor((n - 1) / 3). */
export const quorum = (n: number): number => n - Math.floor((n - 1) / 3)

const ZERO_SIGNATURE = new Uint8Array(Identity.SIGNATURE_BYTES)

/** Views of votes, and broadcasts per origin, remembered to tell a duplicate delivery. */
const DELIVERY_MEMORY = 64n

/** Each kind of delivery violation is logged this many times at most (all are counted). */
const LOGGED_VIOLATIONS = 20

const genesis: Message.QuorumCertificate = Message.QuorumCertificate.make({
  view: 0n,
  blockHash: new Uint8Array(32),
  signers: new Uint8Array(0),
  signatures: []
})

const signingBytes = (message: Message.Message): Uint8Array =>
  Either.getOrThrowWith(Codec.signingBytes(message), (e) => e)

const encodedSize = (message: Message.Message): number =>
  Either.match(Codec.encode(message), { onLeft: () => 0, onRight: (bytes) => bytes.length })

const blockHash = (view: bigint, parent: Uint8Array, payload: Uint8Array): Uint8Array => {
  const header = Buffer.alloc(8)
  header.writeBigUInt64BE(view)
  return new Uint8Array(crypto.createHash("sha256").update(header).update(parent).update(payload).digest())
}

const voteSigningBytes = (view: bigint, hash: Uint8Array, voter: Identity.PeerId) =>
  signingBytes(Message.Vote.make({ view, blockHash: hash, voter, signature: ZERO_SIGNATURE }))

type Event =
  | {
      readonly _tag: "Inbound"
      readonly size: number
      readonly message: Message.Message
      readonly origin: Identity.PeerId
      readonly sequence: bigint | undefined
    }
  | { readonly _tag: "Tick" }
  | { readonly _tag: "Propose"; readonly view: bigint }

/**
 * Starts the driver in the current scope: it consumes `net.messages` (it must be the only consumer)
 * until the scope closes.
 */
export const start = (
  net: NodeNetworkShape,
  options: DriverOptions
): Effect.Effect<Driver, never, Scope.Scope> =>
  Effect.gen(function* () {
    const validators = options.validators
    const n = validators.length
    const q = quorum(n)
    const f = n - q
    const self = options.identity.peerId
    const indexOf = new Map(validators.map((id, i) => [id, i]))
    const leader = (view: bigint) => validators[Number(view % BigInt(n))]!
    const viewTimeout = Duration.toMillis(options.viewTimeout)
    // A set of one certifies its own views without any I/O: wait at least a timer tick per view, so
    // that the event loop (IPC, timers, the scope's end) still gets its turns.
    const minViewTime = Math.max(n === 1 ? 1 : 0, Duration.toMillis(options.minViewTime))
    const startTimeout = Duration.toMillis(options.startTimeout)
    const payload = new Uint8Array(crypto.randomBytes(options.payloadBytes))
    const scope = yield* Effect.scope
    const internal = yield* Queue.unbounded<Event>()

    // Owned by the one fiber that handles events; `stats` only copies it.
    const counters = noCounters()
    let view = 0n
    let viewStartedAt = yield* Clock.currentTimeMillis
    const createdAt = viewStartedAt
    let started = false
    let proposedView = 0n
    let highQC = genesis
    const votes = new Map<bigint, Map<string, Map<number, Uint8Array>>>()
    const certified = new Set<bigint>()
    const newViews = new Map<bigint, Set<Identity.PeerId>>()
    // What the network promises of its deliveries, checked as they come (the chaos tests read the
    // warnings): a broadcast once and in its origin's order (its sequence numbers only go up, across
    // the origin's restarts too), a vote once. Votes carry no sequence number: one per voter and view.
    const highestSequence = new Map<Identity.PeerId, bigint>()
    const recentSequences = new Map<Identity.PeerId, Array<bigint>>()
    const votesDelivered = new Map<bigint, Set<string>>()

    const checkCertificate = (qc: Message.QuorumCertificate): boolean => {
      if (qc.view === 0n) return qc.signers.length === 0
      if (qc.signatures.length < q) return false
      let k = 0
      for (let i = 0; i < qc.signers.length * 8; i++) {
        if ((qc.signers[i >> 3]! & (1 << (i & 7))) === 0) continue
        const voter = validators[i]
        if (voter === undefined) return false
        if (!Identity.verify(voter, voteSigningBytes(qc.view, qc.blockHash, voter), qc.signatures[k++]!)) {
          return false
        }
      }
      return true
    }

    const raiseHighQC = (qc: Message.QuorumCertificate) => {
      if (qc.view > highQC.view) highQC = qc
    }

    const enterView = (next: bigint) =>
      Effect.gen(function* () {
        started = true
        view = next
        viewStartedAt = yield* Clock.currentTimeMillis
        for (const v of votes.keys()) if (v + 1n < view) votes.delete(v)
        for (const v of newViews.keys()) if (v < view) newViews.delete(v)
        for (const v of certified) if (v + 1n < view) certified.delete(v)
        for (const v of votesDelivered.keys()) if (v + DELIVERY_MEMORY < view) votesDelivered.delete(v)
        // Through the event queue, not at once: a leader that certifies its own views (n = 1) must
        // still let other events (and the scope's end) in between.
        if (leader(view) === self) yield* Queue.offer(internal, { _tag: "Propose", view })
      })

    const sendTo = (peer: Identity.PeerId, message: Message.Message, size: number) =>
      net.send(peer, message).pipe(
        Effect.matchEffect({
          onFailure: () =>
            Effect.sync(() => {
              counters.sendFailures++
            }),
          onSuccess: () =>
            Effect.sync(() => {
              counters.bytesOut += size
            })
        })
      )

    const propose = (forView: bigint): Effect.Effect<void> =>
      Effect.gen(function* () {
        if (forView !== view || proposedView >= forView || leader(forView) !== self) return
        const waited = (yield* Clock.currentTimeMillis) - viewStartedAt
        if (waited < minViewTime) {
          yield* Effect.forkIn(
            Effect.sleep(minViewTime - waited).pipe(
              Effect.zipRight(Queue.offer(internal, { _tag: "Propose", view: forView }))
            ),
            scope
          )
          return
        }
        proposedView = forView
        const parent = highQC.blockHash
        const unsigned = Message.Proposal.make({
          view: forView,
          block: { hash: blockHash(forView, parent, payload), parent, height: forView, payload },
          justify: highQC,
          proposer: self,
          signature: ZERO_SIGNATURE
        })
        const proposal = { ...unsigned, signature: Identity.sign(options.identity, signingBytes(unsigned)) }
        const size = encodedSize(proposal)
        const receipt = yield* Effect.either(net.broadcast(proposal))
        counters.proposalsSent++
        if (Either.isRight(receipt)) {
          counters.bytesOut += size * receipt.right.queued.length
          counters.sendFailures += receipt.right.failed.length
        } else {
          counters.sendFailures += n - 1
        }
        yield* vote(proposal)
      })

    const vote = (proposal: Message.Proposal) =>
      Effect.gen(function* () {
        const next = leader(proposal.view + 1n)
        const hash = proposal.block.hash
        const signature = Identity.sign(options.identity, voteSigningBytes(proposal.view, hash, self))
        const message = Message.Vote.make({ view: proposal.view, blockHash: hash, voter: self, signature })
        counters.votesSent++
        if (next === self) yield* onVote(message)
        else yield* sendTo(next, message, encodedSize(message))
      })

    const onProposal = (p: Message.Proposal) =>
      Effect.gen(function* () {
        if (
          p.proposer !== leader(p.view) ||
          !Identity.verify(p.proposer, signingBytes(p), p.signature) ||
          !checkCertificate(p.justify)
        ) {
          counters.rejected++
          return
        }
        counters.proposalsReceived++
        raiseHighQC(p.justify)
        if (p.view < view) return // late: the view has moved on
        if (p.view > view) yield* enterView(p.view)
        yield* vote(p)
      })

    const onVote = (v: Message.Vote) =>
      Effect.gen(function* () {
        const index = indexOf.get(v.voter)
        if (leader(v.view + 1n) !== self || v.view + 1n < view || certified.has(v.view)) return
        if (
          index === undefined ||
          !Identity.verify(v.voter, voteSigningBytes(v.view, v.blockHash, v.voter), v.signature)
        ) {
          counters.rejected++
          return
        }
        if (v.voter !== self) counters.votesReceived++
        const key = Buffer.from(v.blockHash).toString("hex")
        const byBlock = votes.get(v.view) ?? new Map<string, Map<number, Uint8Array>>()
        votes.set(v.view, byBlock)
        const signatures = byBlock.get(key) ?? new Map<number, Uint8Array>()
        byBlock.set(key, signatures)
        signatures.set(index, v.signature)
        if (signatures.size < q) return
        certified.add(v.view)
        const indexes = [...signatures.keys()].sort((a, b) => a - b)
        const signers = new Uint8Array((indexes[indexes.length - 1]! >> 3) + 1)
        for (const i of indexes) signers[i >> 3]! |= 1 << (i & 7)
        const qc = Message.QuorumCertificate.make({
          view: v.view,
          blockHash: v.blockHash,
          signers,
          signatures: indexes.map((i) => signatures.get(i)!)
        })
        counters.certificates++
        yield* Effect.logDebug(`driver: certificate for view ${v.view} (${indexes.length} votes)`)
        raiseHighQC(qc)
        if (v.view + 1n > view) yield* enterView(v.view + 1n)
      })

    const onNewView = (m: Message.NewView) =>
      Effect.gen(function* () {
        if (!indexOf.has(m.sender) || !Identity.verify(m.sender, signingBytes(m), m.signature)) {
          counters.rejected++
          return
        }
        if (!checkCertificate(m.highQC)) {
          counters.rejected++
          return
        }
        raiseHighQC(m.highQC)
        if (leader(m.view) !== self || m.view <= view) return
        const senders = newViews.get(m.view) ?? new Set<Identity.PeerId>()
        newViews.set(m.view, senders)
        senders.add(m.sender)
        // f + 1 validators gave up on the view before: at least one correct one did.
        if (senders.size >= f + 1) yield* enterView(m.view)
      })

    const onTick = Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      if (!started) {
        const peers = yield* net.peers
        const connected = peers.filter((p) => p.state === "connected").length
        if (connected >= n - 1 || now - createdAt >= startTimeout) yield* enterView(1n)
        return
      }
      if (now - viewStartedAt < viewTimeout) return
      counters.timeouts++
      const next = view + 1n
      const to = leader(next)
      if (to !== self) {
        const unsigned = Message.NewView.make({ view: next, highQC, sender: self, signature: ZERO_SIGNATURE })
        const message = { ...unsigned, signature: Identity.sign(options.identity, signingBytes(unsigned)) }
        yield* sendTo(to, message, encodedSize(message))
      }
      yield* enterView(next)
    })

    const violation = (count: number, text: string) =>
      count <= LOGGED_VIOLATIONS ? Effect.logWarning(`driver: ${text}`) : Effect.void

    const checkDelivery = (event: Extract<Event, { _tag: "Inbound" }>): Effect.Effect<void> => {
      const { origin, sequence, message } = event
      if (sequence !== undefined) {
        const highest = highestSequence.get(origin)
        const recent = recentSequences.get(origin) ?? []
        if (highest === undefined || sequence > highest) {
          highestSequence.set(origin, sequence)
          recentSequences.set(origin, recent)
          recent.push(sequence)
          if (recent.length > Number(DELIVERY_MEMORY)) recent.shift()
          return Effect.void
        }
        if (recent.includes(sequence)) {
          counters.duplicates++
          return violation(
            counters.duplicates,
            `broadcast ${sequence} from ${origin.slice(0, 8)} (${message._tag}) delivered again (duplicate ${counters.duplicates})`
          )
        }
        counters.outOfOrder++
        return violation(
          counters.outOfOrder,
          `broadcast ${sequence} from ${origin.slice(0, 8)} (${message._tag}) delivered after ${highest} (out of order ${counters.outOfOrder})`
        )
      }
      if (message._tag !== "Vote") return Effect.void
      const key = `${message.voter}:${Buffer.from(message.blockHash).toString("hex")}`
      const seen = votesDelivered.get(message.view) ?? new Set<string>()
      votesDelivered.set(message.view, seen)
      if (!seen.has(key)) {
        seen.add(key)
        return Effect.void
      }
      counters.duplicates++
      return violation(
        counters.duplicates,
        `vote of ${message.voter.slice(0, 8)} for view ${message.view} delivered again (duplicate ${counters.duplicates})`
      )
    }

    const handle = (event: Event): Effect.Effect<void> => {
      switch (event._tag) {
        case "Tick":
          return onTick
        case "Propose":
          return propose(event.view)
        case "Inbound": {
          counters.bytesIn += event.size
          const m = event.message
          const checked = checkDelivery(event)
          switch (m._tag) {
            case "Proposal":
              return Effect.zipRight(checked, onProposal(m))
            case "Vote":
              return Effect.zipRight(checked, onVote(m))
            case "NewView":
              return Effect.zipRight(checked, onNewView(m))
            default:
              return checked
          }
        }
      }
    }

    const tick = Math.max(10, Math.min(200, Math.floor(viewTimeout / 5)))
    const events = Stream.mergeAll(
      [
        Stream.map(
          net.messages,
          (m): Event => ({
            _tag: "Inbound",
            size: m.size,
            message: m.message,
            origin: m.origin,
            sequence: m.sequence
          })
        ),
        Stream.map(Stream.tick(Duration.millis(tick)), (): Event => ({ _tag: "Tick" })),
        Stream.fromQueue(internal)
      ],
      { concurrency: "unbounded" }
    )
    yield* Effect.forkIn(Stream.runForEach(events, handle), scope)

    return {
      stats: Effect.sync(() => ({ view: Number(view), ...counters }))
    }
  })
