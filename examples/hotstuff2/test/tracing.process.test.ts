// One block's life as one trace across validator processes: four devnet validators over TLS on
// 127.0.0.1 export their spans to an OTLP/HTTP receiver (the devnet's `otlpEndpoint`), commit a few
// blocks and stop cleanly, which flushes what they had not sent yet. Then, from the received spans:
// a block whose trace (one traceId) holds the leader's `hotstuff2.propose` root, `hotstuff2.proposal`
// spans on other validators whose parent is a span recorded by another process, a `hotstuff2.vote`
// and a `hotstuff2.commit`, from at least three validators. Every wait is for an event (a status
// report, an exit), with a generous deadline.
import * as fs from "node:fs"
import { assert, it } from "@effect/vitest"
import { OtlpReceiver } from "@hotstuff2/testing"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { prepare, STOP_TIMEOUT } from "../src/devnet/Devnet.js"
import { spawn, type ValidatorProcess } from "../src/devnet/ValidatorProcess.js"

const VALIDATORS = 4
/** Blocks every validator commits before the stop. */
const COMMITS = 5
/** Tsx compiling the sources in four processes beside other suites: generous, never asserted. */
const DEADLINE = Duration.seconds(150)

type Span = OtlpReceiver.ReceivedSpan

/** What one block's trace holds, judged from the spans of its traceId. */
interface BlockTrace {
  readonly block: string
  readonly traceId: string
  readonly leader: string | undefined
  readonly services: ReadonlySet<string>
  /** `hotstuff2.proposal` spans of other validators whose parent is a span another service recorded. */
  readonly crossProcessProposals: ReadonlyArray<Span>
  readonly votes: ReadonlyArray<Span>
  readonly certificates: ReadonlyArray<Span>
  readonly commits: ReadonlyArray<Span>
  readonly spans: ReadonlyArray<Span>
}

const blockTraces = (spans: ReadonlyArray<Span>): Array<BlockTrace> => {
  const serviceOfSpan = new Map(spans.map((s) => [`${s.traceId}/${s.spanId}`, s.service]))
  const byTrace = new Map<string, Array<Span>>()
  for (const s of spans) {
    const list = byTrace.get(s.traceId)
    if (list === undefined) byTrace.set(s.traceId, [s])
    else list.push(s)
  }
  return spans
    .filter((s) => s.name === "hotstuff2.propose")
    .map((root): BlockTrace => {
      const trace = byTrace.get(root.traceId) ?? []
      const block = String(root.attributes.block)
      const named = (name: string) => trace.filter((s) => s.name === name && s.attributes.block === block)
      const parentService = (s: Span) =>
        s.parentSpanId === undefined ? undefined : serviceOfSpan.get(`${s.traceId}/${s.parentSpanId}`)
      return {
        block,
        traceId: root.traceId,
        leader: root.parentSpanId === undefined ? root.service : undefined,
        services: new Set(trace.map((s) => s.service).filter((s) => s !== undefined)),
        crossProcessProposals: named("hotstuff2.proposal").filter(
          (s) =>
            s.service !== root.service && parentService(s) !== undefined && parentService(s) !== s.service
        ),
        votes: named("hotstuff2.vote"),
        certificates: named("hotstuff2.certificate"),
        commits: named("hotstuff2.commit"),
        spans: trace
      }
    })
}

const complete = (t: BlockTrace) =>
  t.leader !== undefined &&
  t.services.size >= 3 &&
  t.crossProcessProposals.length > 0 &&
  t.votes.length > 0 &&
  t.commits.length > 0

const count = (spans: ReadonlyArray<Span>, by: (s: Span) => string) => {
  const counts: Record<string, number> = {}
  for (const s of spans) counts[by(s)] = (counts[by(s)] ?? 0) + 1
  return counts
}

/** Block-life spans outside their block's trace (whose root is another block's proposal, or none), by name. */
const strays = (spans: ReadonlyArray<Span>) => {
  const blockOfTrace = new Map(
    spans.filter((s) => s.name === "hotstuff2.propose").map((s) => [s.traceId, s.attributes.block])
  )
  return count(
    spans.filter(
      (s) =>
        s.name.startsWith("hotstuff2.") &&
        s.attributes.block !== undefined &&
        blockOfTrace.get(s.traceId) !== s.attributes.block
    ),
    (s) => s.name
  )
}

it.scopedLive(
  "one block's life (proposal, votes, certificate, commit) is one trace holding spans from 3+ validator processes, linked across them",
  () =>
    Effect.gen(function* () {
      const receiver = yield* OtlpReceiver.make
      const prepared = yield* prepare({
        validators: VALIDATORS,
        statusInterval: 250,
        otlpEndpoint: receiver.endpoint
      })
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => fs.rmSync(prepared.root, { recursive: true, force: true }))
      )
      // Each release stops its process (and so flushes its spans), also when the test fails.
      const processes: ReadonlyArray<ValidatorProcess> = yield* Effect.forEach(
        prepared.setups,
        (setup) => Effect.acquireRelease(spawn(setup), (p) => p.stop(STOP_TIMEOUT)),
        { concurrency: "unbounded" }
      )
      const failureOf = (p: ValidatorProcess) =>
        new Error(`validator ${p.index} failed: ${p.failure()}\n${p.output().join("\n")}`)
      const peerIds = yield* Effect.forEach(processes, (p) =>
        Deferred.await(p.ready).pipe(Effect.mapError(() => failureOf(p)))
      )
      const nameOf = new Map(peerIds.map((id, i) => [`hotstuff2-${id.slice(0, 8)}`, `v${i}`]))

      // Status reports are the events: each validator reports its committed height every 250 ms.
      const height = (p: ValidatorProcess) => p.latest()?.status.committedHeight ?? 0n
      while (!processes.every((p) => height(p) >= COMMITS)) {
        const bad = processes.find((p) => p.failure() !== undefined)
        if (bad !== undefined) return yield* Effect.fail(failureOf(bad))
        yield* Effect.sleep(Duration.millis(100))
      }
      const heights = processes.map(height)

      // A clean stop closes each validator's layers: its tracer provider flushes before it exits, and
      // the receiver records a batch before it answers, so every exported span is here after the exits.
      const exits = yield* Effect.forEach(processes, (p) => p.stop(STOP_TIMEOUT), {
        concurrency: "unbounded"
      })
      for (const p of processes) assert.isUndefined(p.failure(), `v${p.index}: ${p.failure()}`)
      for (const exit of exits) assert.deepStrictEqual(exit, { code: 0, signal: null })

      const spans = yield* receiver.spans
      assert.deepStrictEqual(yield* receiver.errors, [])
      const traces = blockTraces(spans)
      const good = traces.filter(complete)
      const summary = {
        heights: heights.map(String),
        spans: spans.length,
        byService: count(spans, (s) => nameOf.get(s.service ?? "") ?? String(s.service)),
        blockLife: count(
          spans.filter((s) => s.name.startsWith("hotstuff2.")),
          (s) => s.name
        ),
        proposeRoots: traces.length,
        complete: good.length,
        // A commit is a child of its validator's proposal span: one in a trace of its own is a broken link.
        commitRoots: spans.filter((s) => s.name === "hotstuff2.commit" && s.parentSpanId === undefined)
          .length,
        strays: strays(spans)
      }
      process.stderr.write(`[tracing] ${JSON.stringify(summary)}\n`)

      assert.isAbove(traces.length, 0, `no hotstuff2.propose span received: ${JSON.stringify(summary)}`)
      const chosen = good[0]
      assert.isDefined(chosen, `no block's trace is complete: ${JSON.stringify(summary)}`)
      process.stderr.write(
        `[tracing] block ${chosen.block} trace ${chosen.traceId}: ${chosen.spans.length} spans from ` +
          `${[...chosen.services].map((s) => nameOf.get(s) ?? s).join(", ")}; ` +
          `${JSON.stringify(count(chosen.spans, (s) => `${nameOf.get(s.service ?? "") ?? s.service} ${s.name}`))}\n`
      )
      // The trace is the block's: every service in it is a validator of this devnet, and its root is
      // the leader's proposal.
      for (const service of chosen.services) assert.isTrue(nameOf.has(service), `unknown service ${service}`)
      const roots = chosen.spans.filter((s) => s.parentSpanId === undefined)
      assert.deepStrictEqual(
        roots.map((s) => s.name),
        ["hotstuff2.propose"]
      )
      assert.isAtLeast(chosen.services.size, 3)
      for (const proposal of chosen.crossProcessProposals)
        assert.notStrictEqual(proposal.service, chosen.leader)
      // Not one lucky block: half the blocks every validator had committed before the stop, at least.
      const committedByAll = heights.reduce((a, b) => (a < b ? a : b))
      assert.isAtLeast(good.length, Math.ceil(Number(committedByAll) / 2), JSON.stringify(summary))
    }).pipe(
      Effect.timeoutFail({
        duration: DEADLINE,
        onTimeout: () => new Error(`no traced commits within ${Duration.format(DEADLINE)}`)
      })
    ),
  240_000
)
