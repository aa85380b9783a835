// The traffic driver's delivery checks, which the chaos scenarios read from the validators' logs: a
// broadcast delivered twice or behind a later one of its origin, and a vote delivered twice, are
// counted and logged as warnings; in-order deliveries (also a restarted origin's jump ahead) are not.
// Each certificate a leader forms is logged at debug level (the scenarios' measure of progress).
// Driven through a stand-in NodeNetwork whose deliveries the test writes, under TestClock.
import { assert, describe, it } from "@effect/vitest"
import { Codec, Identity, Message } from "@hotstuff2/wire"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Queue from "effect/Queue"
import * as Stream from "effect/Stream"
import * as Driver from "../../src/cli/driver.js"
import type { Inbound, NodeNetworkShape } from "../../src/NodeNetwork.js"
import { identity, peerId } from "../fixtures/cluster.js"
import { waitSimulated } from "../fixtures/wait.js"

const validators = [0, 1, 2, 3].map(peerId)
const ZERO_SIGNATURE = new Uint8Array(Identity.SIGNATURE_BYTES)

/** A NodeNetwork of validator `self` whose inbox is `inbox`; every peer connected, every send taken. */
const standIn = (self: number, inbox: Queue.Queue<Inbound>): NodeNetworkShape => {
  const receipt = Effect.succeed({
    sequence: 1n,
    id: new Uint8Array(32),
    queued: validators.filter((_, i) => i !== self),
    failed: []
  })
  return {
    self: peerId(self),
    address: "stand-in:0",
    metricsAddress: undefined,
    healthAddress: undefined,
    broadcast: () => receipt,
    multicast: () => receipt,
    send: () => Effect.void,
    messages: Stream.fromQueue(inbox),
    peerEvents: Stream.never,
    peers: Effect.succeed(
      validators
        .filter((_, i) => i !== self)
        .map((id) => ({
          id,
          validator: true,
          addresses: [],
          state: "connected" as const,
          score: 0,
          rtt: undefined,
          ban: { _tag: "None" } as never,
          lastSeen: undefined,
          dialFailures: 0
        }))
    )
  } as unknown as NodeNetworkShape
}

const delivery = (from: number, message: Message.Message, sequence?: bigint): Inbound => ({
  from: peerId(from),
  origin: peerId(from),
  message,
  channel: 1,
  sequence,
  trace: undefined,
  size: 100
})

const app = (n: number) => Message.AppMessage.make({ topic: "t", data: new Uint8Array([n]) })

const signed = <M extends Message.Message>(message: M, signer: number): M => ({
  ...message,
  signature: Identity.sign(identity(signer), Either.getOrThrow(Codec.signingBytes(message)))
})

const vote = (view: bigint, hash: Uint8Array, voter: number): Message.Vote =>
  signed(Message.Vote.make({ view, blockHash: hash, voter: peerId(voter), signature: ZERO_SIGNATURE }), voter)

/** Runs `body` with a driver for validator `self`, logging at debug level into `lines`. */
const withDriver = <A, E>(
  self: number,
  body: (inbox: Queue.Queue<Inbound>, driver: Driver.Driver, lines: Array<string>) => Effect.Effect<A, E>
) => {
  const lines: Array<string> = []
  const logger = Logger.make(({ logLevel, message }) => {
    lines.push(`${logLevel.label} ${Array.isArray(message) ? message.join(" ") : String(message)}`)
  })
  return Effect.gen(function* () {
    const inbox = yield* Queue.unbounded<Inbound>()
    const driver = yield* Driver.start(standIn(self, inbox), {
      validators,
      identity: identity(self),
      payloadBytes: 16,
      viewTimeout: "1 hour",
      minViewTime: 0,
      startTimeout: "1 hour"
    })
    return yield* body(inbox, driver, lines)
  }).pipe(
    Effect.scoped,
    Effect.provide(Logger.replace(Logger.defaultLogger, logger)),
    Logger.withMinimumLogLevel(LogLevel.Debug)
  )
}

describe("driver delivery checks", () => {
  it.effect(
    "counts and logs a broadcast delivered twice or behind a later one of its origin, and a vote delivered twice",
    () =>
      withDriver(2, (inbox, driver, lines) =>
        Effect.gen(function* () {
          const hash = new Uint8Array(32).fill(9)
          const other = new Uint8Array(32).fill(8)
          yield* Queue.offerAll(inbox, [
            delivery(1, app(1), 10n),
            delivery(1, app(2), 11n),
            delivery(1, app(3), 13n),
            delivery(1, app(2), 11n), // again
            delivery(1, app(4), 12n), // behind 13
            delivery(1, app(5), 1_000_000n), // a restarted origin starts higher: in order
            delivery(3, app(6), 5n),
            delivery(3, app(6), 5n), // again
            delivery(0, vote(7n, hash, 0)),
            delivery(0, vote(7n, other, 0)), // another block: another vote
            delivery(0, vote(7n, hash, 0)), // again
            delivery(0, app(7)), // point to point, not a vote: no sequence to check
            delivery(0, app(7))
          ])
          const settled = Effect.map(driver.stats, (s) => s.duplicates + s.outOfOrder >= 4)
          yield* waitSimulated("the four violations counted", settled)
          const stats = yield* driver.stats
          assert.strictEqual(stats.duplicates, 3)
          assert.strictEqual(stats.outOfOrder, 1)
          const warnings = lines.filter((l) => l.startsWith("WARN"))
          assert.strictEqual(warnings.length, 4, lines.join("\n"))
          const origin1 = peerId(1).slice(0, 8)
          assert.include(
            warnings[0],
            `broadcast 11 from ${origin1} (AppMessage) delivered again (duplicate 1)`
          )
          assert.include(
            warnings[1],
            `broadcast 12 from ${origin1} (AppMessage) delivered after 13 (out of order 1)`
          )
          assert.include(
            warnings[2],
            `broadcast 5 from ${peerId(3).slice(0, 8)} (AppMessage) delivered again`
          )
          assert.include(
            warnings[3],
            `vote of ${peerId(0).slice(0, 8)} for view 7 delivered again (duplicate 3)`
          )
        })
      )
  )

  it.effect("logs each certificate it forms as the next leader, at debug level", () =>
    withDriver(2, (inbox, driver, lines) =>
      Effect.gen(function* () {
        // Validator 1 leads view 1; validator 2 leads view 2, so it collects the votes of view 1.
        const unsigned = Message.Proposal.make({
          view: 1n,
          block: {
            hash: new Uint8Array(32).fill(1),
            parent: new Uint8Array(32),
            height: 1n,
            payload: new Uint8Array(0)
          },
          justify: Message.QuorumCertificate.make({
            view: 0n,
            blockHash: new Uint8Array(32),
            signers: new Uint8Array(0),
            signatures: []
          }),
          proposer: peerId(1),
          signature: ZERO_SIGNATURE
        })
        const proposal = signed(unsigned, 1)
        yield* Queue.offerAll(inbox, [
          delivery(1, proposal, 1n),
          delivery(0, vote(1n, proposal.block.hash, 0)),
          delivery(3, vote(1n, proposal.block.hash, 3))
        ])
        yield* waitSimulated(
          "a certificate",
          Effect.map(driver.stats, (s) => s.certificates > 0)
        )
        const stats = yield* driver.stats
        assert.strictEqual(stats.certificates, 1)
        assert.strictEqual(stats.rejected, 0)
        assert.strictEqual(stats.duplicates + stats.outOfOrder, 0)
        assert.include(lines, "DEBUG driver: certificate for view 1 (3 votes)")
      })
    )
  )
})
