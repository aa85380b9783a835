/**
 * A HotStuff-2 validator on `NodeNetwork`: the driver around the pure consensus core. One fiber
 * feeds the core what happened (a consensus message from `net.messages`, the view timer, blocks
 * fetched by block sync) with the Clock's time, and carries out what it answers in order: the
 * safety state reaches disk before the vote or timeout it guards leaves, a commit reaches the ledger
 * before it is reported. Every timer is on Effect's Clock, so a whole cluster runs under TestClock.
 */
import { NodeNetwork, type NodeNetworkShape } from "@hotstuff2/node"
import { type Envelope, Identity, type Message } from "@hotstuff2/wire"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as PubSub from "effect/PubSub"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { encodePayload, makeDigests, payloadBody } from "./core/crypto.js"
import * as Replica from "./core/Replica.js"
import type { CommittedBlock, ConsensusMessage, Input, Output, PeerId } from "./core/types.js"
import { body, LatencyWindow, metrics, proposedAt } from "./internal/observe.js"
import { BlockSpans, parentOf } from "./internal/spans.js"
import * as Ledger from "./Ledger.js"
import * as SafetyStore from "./SafetyStore.js"
import * as Sync from "./Sync.js"

export interface ValidatorOptions {
  /** This validator's key: the one its `NodeNetwork` config names. */
  readonly identity: Identity.Identity
  /** The network id of its `NodeNetwork` config: it separates this network's signatures. */
  readonly networkId: string
  /** Where the ledger (`ledger/`) and the safety state (`safety`) live. */
  readonly dataDirectory: string
  /**
   * The ledger and safety store to use instead of files under `dataDirectory`: for simulations, an
   * in-memory pair (`Ledger.makeMemory`, `SafetyStore.layerMemory`) that outlives a simulated crash.
   */
  readonly storage?: { readonly ledger: Ledger.LedgerShape; readonly safety: SafetyStore.SafetyStoreShape }
  /** The view timer after progress, ms. Default 1,000. */
  readonly baseTimeout?: number
  /** The longest view timer (it doubles per failed view), ms. Default 30,000. */
  readonly maxTimeout?: number
  /** Messages for views further ahead are refused. Default 100. */
  readonly viewWindow?: number
  /** Bytes of each proposed block body (the proposer's timestamp, then filler). Default 256. */
  readonly payloadBytes?: number
  /** Largest block body accepted, bytes. Default 1 MiB. */
  readonly maxPayloadBytes?: number
  /** Block sync: blocks per response, per-request timeout. */
  readonly sync?: Partial<Sync.SyncOptions>
  /**
   * Fault injection, for tests of what honest validators withstand; never set it in production.
   * `equivocate`: as leader, send one proposal to half the validators and a different one for the
   * same view to the other half, then each half the other's.
   */
  readonly byzantine?: { readonly equivocate?: boolean }
}

export interface Status {
  readonly view: bigint
  readonly committedHeight: bigint
  /** Hex of the last committed block's hash. */
  readonly committedHash: string
  /** Blocks committed by this run (not those read back from the ledger at start). */
  readonly commits: number
  /** Views this validator timed out in. */
  readonly timeouts: number
  /** Messages and sync answers refused. */
  readonly refused: number
  /** Blocks fetched by block sync. */
  readonly synced: number
  /** Proposal to commit, ms, over the last 1,024 commits. */
  readonly latency: { readonly p50: number | undefined; readonly p99: number | undefined }
}

export interface ConsensusShape {
  readonly status: Effect.Effect<Status>
  /** Blocks as they commit, from the moment of subscription (scoped). */
  readonly commits: Effect.Effect<Stream.Stream<CommittedBlock>, never, Scope.Scope>
  /** A committed block read back from the ledger; undefined above the committed height. */
  readonly block: (height: bigint) => Effect.Effect<CommittedBlock | undefined, Ledger.LedgerError>
}

export class Consensus extends Context.Tag("@hotstuff2/example-hotstuff2/Consensus")<
  Consensus,
  ConsensusShape
>() {}

/** What the consensus loop takes in: a core input, with the sender's trace context when it has one. */
interface Item {
  readonly input: Input
  readonly trace?: Envelope.TraceContext | undefined
}

const consensusTags = new Set(["Proposal", "Vote", "Timeout", "TimeoutCertificate", "NewView"])
const isConsensus = (message: Message.Message): message is ConsensusMessage => consensusTags.has(message._tag)
const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex")

/** The validator order every validator agrees on: the set's PeerIds sorted (signer bit i = index i). */
export const validatorOrder = (validators: ReadonlyArray<PeerId>): ReadonlyArray<PeerId> =>
  [...validators].sort()

export const make = (
  options: ValidatorOptions
): Effect.Effect<
  ConsensusShape,
  Ledger.LedgerError | SafetyStore.SafetyStoreError,
  NodeNetwork | Scope.Scope
> =>
  Effect.gen(function* () {
    const net = yield* NodeNetwork
    const self = net.self
    if (options.identity.peerId !== self) {
      return yield* Effect.dieMessage("Validator: options.identity is not the key of this NodeNetwork")
    }
    const validators = validatorOrder((yield* net.validatorSet).validators)
    const ledger = options.storage?.ledger ?? (yield* Ledger.open({ dataDirectory: options.dataDirectory }))
    const safetyStore =
      options.storage?.safety ?? (yield* SafetyStore.make({ dataDirectory: options.dataDirectory }))
    const resume = { committed: yield* ledger.tip, safety: yield* safetyStore.load }
    const payloadBytes = options.payloadBytes ?? 256
    let now = yield* Clock.currentTimeMillis
    const replica = Replica.make(
      {
        networkId: options.networkId,
        validators,
        identity: options.identity,
        baseTimeout: options.baseTimeout ?? 1_000,
        maxTimeout: options.maxTimeout ?? 30_000,
        viewWindow: options.viewWindow ?? 100,
        payload: () => body(now, payloadBytes),
        maxPayloadBytes: options.maxPayloadBytes ?? 1024 * 1024
      },
      resume
    )

    const node = self.slice(0, 8)
    const tagged = <M extends Metric.Metric<any, any, any>>(metric: M) => Metric.tagged(metric, "node", node)
    const m = {
      committedHeight: tagged(metrics.committedHeight),
      view: tagged(metrics.view),
      commits: tagged(metrics.commits),
      timeouts: tagged(metrics.timeouts),
      synced: tagged(metrics.synced),
      commitLatency: tagged(metrics.commitLatency)
    }
    const stats = { commits: 0, timeouts: 0, refused: 0, lastTimeout: 0n }
    // What the ledger holds: status reports a block committed once it is on disk.
    let durable =
      resume.committed === undefined
        ? { height: 0n, hash: replica.committed.hash }
        : { height: resume.committed.block.height, hash: resume.committed.block.hash }
    const latency = new LatencyWindow()
    const spans = new BlockSpans()
    const committed = yield* PubSub.unbounded<CommittedBlock>()
    // Timer firings, blocks fetched, and this node's own messages: at most one pending timer, one
    // fetch answer at a time and the outputs of one step, so the queue stays small.
    const local = yield* Queue.unbounded<Item>()
    const scope = yield* Effect.scope
    let timer: Fiber.RuntimeFiber<void> | undefined
    const sync = yield* Sync.make(net, {
      self,
      validators,
      lookup: (hash) => replica.lookup(hash),
      committedHeight: () => replica.committed.height,
      ledger,
      options: options.sync ?? {},
      deliver: (from, blocks) =>
        Effect.flatMap(Clock.currentTimeMillis, (at) =>
          local.offer({ input: { _tag: "Synced", now: at, from, blocks } })
        ),
      refused: (from, reason) => refuse({ _tag: "Refused", from, what: "SyncResponse", reason })
    })

    const refuse = (output: Extract<Output, { _tag: "Refused" }>) =>
      Effect.suspend(() => {
        stats.refused++
        return Metric.increment(
          Metric.tagged(Metric.tagged(metrics.refused, "node", node), "what", output.what)
        ).pipe(
          Effect.zipRight(
            Effect.logDebug("refused").pipe(
              Effect.annotateLogs({ from: output.from.slice(0, 8), what: output.what, reason: output.reason })
            )
          )
        )
      })

    /** A send to this node itself goes straight back into the loop (the core makes none today). */
    const toSelf = (message: ConsensusMessage) =>
      Effect.flatMap(parentOf, (trace) =>
        Effect.flatMap(Clock.currentTimeMillis, (at) =>
          local.offer({ input: { _tag: "Received", now: at, from: self, message }, trace })
        )
      )

    const commit = (blocks: ReadonlyArray<CommittedBlock>) =>
      Effect.gen(function* () {
        yield* ledger.append(blocks)
        const last = blocks[blocks.length - 1]!.block
        durable = { height: last.height, hash: last.hash }
        const at = yield* Clock.currentTimeMillis
        for (const b of blocks) {
          stats.commits++
          const proposed = proposedAt(payloadBody(b.block.payload))
          if (proposed !== undefined && at >= proposed) {
            latency.add(at - proposed)
            yield* Metric.update(m.commitLatency, at - proposed)
          }
          yield* spans.commit(b)
          yield* PubSub.publish(committed, b)
        }
        yield* Metric.incrementBy(m.commits, blocks.length)
        yield* Metric.set(m.committedHeight, blocks[blocks.length - 1]!.block.height)
      })

    // The ledger is written beside the loop, not in it: voting on needs only the safety state on
    // disk, so a commit's fsync stays off the critical path. Batches that queue up while one is
    // written go in one append (one fsync). A commit counts, and is published, once on disk.
    const appends = yield* Queue.bounded<ReadonlyArray<CommittedBlock>>(1024)
    yield* Queue.takeBetween(appends, 1, 1024).pipe(
      Effect.flatMap((batches) => commit(Chunk.toReadonlyArray(batches).flat())),
      Effect.forever,
      net.traced,
      Effect.tapErrorCause((cause) => Effect.logError("ledger writer stopped", cause)),
      Effect.forkScoped
    )
    // A clean stop writes what is queued (a crash loses it: those blocks come back through sync).
    yield* Effect.addFinalizer(() =>
      Queue.takeAll(appends).pipe(
        Effect.flatMap((batches) =>
          Chunk.isEmpty(batches) ? Effect.void : commit(Chunk.toReadonlyArray(batches).flat())
        ),
        Effect.ignore
      )
    )

    const digests = makeDigests(options.networkId)
    /** A second proposal for the same view (another body), and both sent to halves, then crossed. */
    const equivocate = (proposal: Message.Proposal) => {
      const original = payloadBody(proposal.block.payload)
      const other = new Uint8Array(original.length + 1)
      other.set(original)
      other[original.length] = 0xee
      const block = digests.block(
        proposal.block.parent,
        proposal.block.height,
        encodePayload(proposal.view, self, proposal.justify.view, other)
      )
      const twin: Message.Proposal = {
        ...proposal,
        block,
        signature: Identity.sign(
          options.identity,
          digests.proposal(proposal.view, block.hash, proposal.justify)
        )
      }
      const others = validators.filter((v) => v !== self)
      const half = others.slice(0, Math.ceil(others.length / 2))
      const rest = others.slice(half.length)
      return Effect.all([
        net.multicast(half, proposal),
        net.multicast(rest, twin),
        net.multicast(half, twin),
        net.multicast(rest, proposal)
      ]).pipe(Effect.ignore)
    }

    const perform = (
      output: Output
    ): Effect.Effect<void, Ledger.LedgerError | SafetyStore.SafetyStoreError> => {
      switch (output._tag) {
        case "PersistSafety":
          return Effect.asVoid(safetyStore.save(output.safety))
        case "Broadcast": {
          // The core handles its own broadcasts inside the step that made them: nothing comes back.
          const message = output.message
          if (message._tag === "Proposal") {
            return spans.propose(
              message,
              options.byzantine?.equivocate ? equivocate(message) : broadcast(net, message)
            )
          }
          if (message._tag === "Timeout" && message.view > stats.lastTimeout) {
            stats.lastTimeout = message.view
            stats.timeouts++
            return Effect.zipRight(Metric.increment(m.timeouts), broadcast(net, message))
          }
          return broadcast(net, message)
        }
        case "Send": {
          const send = output.to === self ? toSelf(output.message) : sendTo(net, output.to, output.message)
          // A vote belongs to its block's trace, whatever span led to it (a leader votes for its own
          // proposal in the step that made it).
          return output.message._tag === "Vote" ? spans.vote(output.message, send) : send
        }
        case "Commit":
          return appends.offer(output.blocks)
        case "SetTimer":
          return Effect.suspend(() => {
            const previous = timer
            const fire = Effect.sleep(output.after).pipe(
              Effect.zipRight(Clock.currentTimeMillis),
              Effect.flatMap((at) =>
                local.offer({ input: { _tag: "TimerFired", now: at, view: output.view } })
              ),
              Effect.asVoid
            )
            return Effect.zipRight(
              previous === undefined ? Effect.void : Fiber.interruptFork(previous),
              Effect.map(Effect.forkIn(fire, scope), (fiber) => {
                timer = fiber
              })
            )
          })
        case "Fetch":
          return sync.fetch(output)
        case "Refused":
          return output.from === self ? Effect.void : refuse(output)
        case "EnteredView":
          return Metric.set(m.view, output.view)
        case "Certified":
          return spans.certified(output.certificate)
        case "Proposed":
        case "Voted":
          return Effect.void
      }
    }

    const step = (item: Item) =>
      Effect.gen(function* () {
        now = yield* Clock.currentTimeMillis
        const outputs = replica.step({ ...item.input, now } as Input)
        for (const output of outputs) yield* perform(output)
      })

    const handle = (item: Item) => {
      const input = item.input
      if (input._tag === "Received" && (input.message._tag === "Proposal" || input.message._tag === "Vote")) {
        return spans.received(input.message, input.from, item.trace, step(item))
      }
      return step(item)
    }

    const fromNetwork = net.messages.pipe(
      Stream.filter((inbound) => isConsensus(inbound.message)),
      Stream.map(
        (inbound): Item => ({
          input: {
            _tag: "Received",
            now: 0,
            from: inbound.from,
            message: inbound.message as ConsensusMessage
          },
          trace: inbound.trace
        })
      )
    )
    // Under the node's tracer: with telemetry exporting, the block-life spans go where the node's go.
    yield* Stream.merge(fromNetwork, Stream.fromQueue(local)).pipe(
      Stream.runForEach(handle),
      net.traced,
      Effect.tapErrorCause((cause) => Effect.logError("consensus loop stopped", cause)),
      Effect.forkScoped
    )
    yield* sync.serve
    // The first view starts once a quorum is connected (or after one view timer): a leader that
    // proposed into a network still forming would only time out.
    const quorum = validators.length - Math.floor((validators.length - 1) / 3)
    const connected = Effect.map(
      net.peers,
      (peers) => peers.filter((p) => p.validator && p.state === "connected").length + 1
    )
    yield* Effect.gen(function* () {
      while ((yield* connected) < quorum) yield* Effect.sleep(20)
    }).pipe(
      Effect.timeout(options.baseTimeout ?? 1_000),
      Effect.ignore,
      Effect.zipRight(Clock.currentTimeMillis),
      Effect.flatMap((at) => local.offer({ input: { _tag: "Start", now: at, resume } })),
      Effect.forkScoped
    )

    return {
      status: Effect.sync(
        (): Status => ({
          view: replica.view,
          committedHeight: durable.height,
          committedHash: hex(durable.hash),
          commits: stats.commits,
          timeouts: stats.timeouts,
          refused: stats.refused,
          synced: sync.synced(),
          latency: { p50: latency.quantile(0.5), p99: latency.quantile(0.99) }
        })
      ),
      commits: PubSub.subscribe(committed).pipe(Effect.map(Stream.fromQueue)),
      block: (height) => ledger.read(height)
    } satisfies ConsensusShape
  })

/** The validator as a layer over the `NodeNetwork` in context; closing it stops the loop and the ledger. */
export const layer = (
  options: ValidatorOptions
): Layer.Layer<Consensus, Ledger.LedgerError | SafetyStore.SafetyStoreError, NodeNetwork> =>
  Layer.scoped(Consensus, make(options))

// A failed send is the network's to count (backpressure, a peer not connected): consensus goes on,
// and the pacemaker covers what did not arrive.
const broadcast = (net: NodeNetworkShape, message: Message.Message) =>
  net.broadcast(message).pipe(
    Effect.catchAll((error) => Effect.logWarning("broadcast failed", error)),
    Effect.asVoid
  )

const sendTo = (net: NodeNetworkShape, to: PeerId, message: Message.Message) =>
  net.send(to, message).pipe(
    Effect.catchAll((error) => Effect.logDebug("send failed", error)),
    Effect.asVoid
  )
