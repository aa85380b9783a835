// One block's life as one trace across validators: the leader's `hotstuff2.propose` is the root; the
// proposal's broadcast carries its context, so each validator's `hotstuff2.proposal` is its child,
// and the vote sent inside it carries that one on to the next leader (`hotstuff2.vote`, then
// `hotstuff2.certificate` when it completes a quorum). Each validator's `hotstuff2.commit` of the
// block is a child of its own proposal span, remembered per block (a bounded map).
import type { Envelope, Message } from "@hotstuff2/wire"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Tracer from "effect/Tracer"
import type { CommittedBlock, PeerId, QuorumCertificate } from "../core/types.js"

const hex = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString("hex")

const fromHex = (text: string, length: number): Uint8Array | undefined =>
  text.length === length * 2 ? new Uint8Array(Buffer.from(text, "hex")) : undefined

/** The current span as a W3C trace context (what a message to this node itself carries). */
export const parentOf: Effect.Effect<Envelope.TraceContext | undefined> = Effect.map(
  Effect.option(Effect.currentSpan),
  Option.match({
    onNone: () => undefined,
    onSome: (span) => {
      const traceId = fromHex(span.traceId, 16)
      const spanId = fromHex(span.spanId, 8)
      return traceId && spanId ? { traceId, spanId, flags: span.sampled ? 1 : 0 } : undefined
    }
  })
)

const external = (trace: Envelope.TraceContext): Tracer.ExternalSpan =>
  Tracer.externalSpan({
    traceId: hex(trace.traceId),
    spanId: hex(trace.spanId),
    sampled: (trace.flags & 1) === 1
  })

/** Blocks whose span this validator remembers for their commit: enough for the blocks in flight. */
const REMEMBERED = 4096

export class BlockSpans {
  private readonly spans = new Map<string, Tracer.AnySpan>()

  private remember(hash: Uint8Array, span: Tracer.AnySpan) {
    const key = hex(hash)
    if (this.spans.has(key)) return
    if (this.spans.size >= REMEMBERED) this.spans.delete(this.spans.keys().next().value!)
    this.spans.set(key, span)
  }

  /** The leader's proposal: a new trace per block. */
  propose<A, E, R>(proposal: Message.Proposal, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> {
    return Effect.withSpan(
      Effect.tap(Effect.currentSpan.pipe(Effect.orDie), (span) =>
        Effect.sync(() => this.remember(proposal.block.hash, span))
      ).pipe(Effect.zipRight(effect)),
      "hotstuff2.propose",
      { root: true, kind: "producer", attributes: blockAttributes(proposal) }
    )
  }

  /** A proposal or vote received (from the network, or from this node itself). */
  received<A, E, R>(
    message: Message.Proposal | Message.Vote,
    from: PeerId,
    trace: Envelope.TraceContext | undefined,
    effect: Effect.Effect<A, E, R>
  ): Effect.Effect<A, E, R> {
    const attributes =
      message._tag === "Proposal"
        ? { ...blockAttributes(message), from: from.slice(0, 8) }
        : {
            view: String(message.view),
            block: hex(message.blockHash).slice(0, 16),
            voter: message.voter.slice(0, 8)
          }
    const body =
      message._tag === "Proposal"
        ? Effect.tap(Effect.currentSpan.pipe(Effect.orDie), (span) =>
            Effect.sync(() => this.remember(message.block.hash, span))
          ).pipe(Effect.zipRight(effect))
        : effect
    return Effect.withSpan(body, message._tag === "Proposal" ? "hotstuff2.proposal" : "hotstuff2.vote", {
      kind: "consumer",
      attributes,
      ...(trace === undefined ? {} : { parent: external(trace) })
    })
  }

  /**
   * Runs `effect`, the sending of this validator's vote for a block, as a child of its span of that
   * block (its `hotstuff2.propose` or `hotstuff2.proposal`), so the vote joins the block's trace. A
   * leader's vote for its own proposal comes out of the step that proposed, after the broadcast and
   * outside `propose`, under whatever span led there (the vote that completed the previous
   * certificate, in the previous block's trace). As it is when the block is not remembered.
   */
  vote<A, E, R>(vote: Message.Vote, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> {
    return Effect.suspend(() => {
      const span = this.spans.get(hex(vote.blockHash))
      return span === undefined ? effect : Effect.withParentSpan(effect, span)
    })
  }

  /** A quorum certificate formed here: a child of the vote that completed it. */
  certified(certificate: QuorumCertificate): Effect.Effect<void> {
    return Effect.withSpan(Effect.void, "hotstuff2.certificate", {
      attributes: {
        view: String(certificate.view),
        block: hex(certificate.blockHash).slice(0, 16),
        signatures: certificate.signatures.length
      }
    })
  }

  /** A block committed here: a child of this validator's span of its proposal, when remembered. */
  commit(block: CommittedBlock): Effect.Effect<void> {
    return Effect.suspend(() => {
      const key = hex(block.block.hash)
      const parent = this.spans.get(key)
      this.spans.delete(key)
      return Effect.withSpan(Effect.void, "hotstuff2.commit", {
        attributes: { height: String(block.block.height), block: key.slice(0, 16) },
        ...(parent === undefined ? { root: true } : { parent })
      })
    })
  }
}

const blockAttributes = (proposal: Message.Proposal) => ({
  view: String(proposal.view),
  height: String(proposal.block.height),
  block: hex(proposal.block.hash).slice(0, 16)
})
