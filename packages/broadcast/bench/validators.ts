// The bench's validators: the fixture's node (registry, peer manager over MemoryTransport,
// broadcaster) on one simulated network, except that nothing delivered is kept. Each node notes, on
// the Clock, when it last got a Proposal and counts what it relayed, so a 1,000-node run does not
// hold a copy of every 256 KiB proposal per node; the leader counts the Votes it gets back.
// Keys, addresses and the proposal are the test fixture's (test/fixtures/cluster.ts).
import { PeerManager, PeerRegistry } from "@hotstuff2/peers"
import { MemoryTransport, type SimulatedNetwork } from "@hotstuff2/transport"
import { type Identity, Message } from "@hotstuff2/wire"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type { BroadcastConfigInput } from "../src/BroadcastConfig.js"
import { Broadcaster } from "../src/index.js"
import { addressOf, NETWORK } from "../test/fixtures/cluster.js"

/** What one validator saw since the last `reset`. */
export interface Tally {
  /** Clock millis of the last Proposal delivered, and how many were. */
  proposalAt: number | undefined
  proposals: number
  /** Votes delivered (the leader's), and the Clock millis of the last. */
  votes: number
  voteAt: number | undefined
  /** Copies relayed (tree envelopes forwarded to children). */
  relayed: number
  /** Slot bytes this node queued as an origin (`sent`, repairs included) and as a relay. */
  sentBytes: number
  relayedBytes: number
  /** Copies the origin sent itself to validators whose receipt had not come. */
  repaired: number
  chose: Array<"direct" | "tree">
  rejected: number
}

const emptyTally = (): Tally => ({
  proposalAt: undefined,
  proposals: 0,
  votes: 0,
  voteAt: undefined,
  relayed: 0,
  sentBytes: 0,
  relayedBytes: 0,
  repaired: 0,
  chose: [],
  rejected: 0
})

export interface Validator {
  readonly id: Identity.Identity
  readonly broadcaster: Broadcaster.BroadcasterShape
  readonly manager: PeerManager.PeerManagerShape
  tally: Tally
  /** Sent to the leader when a Proposal is delivered, while set (the round with votes back). */
  voteTo: Identity.PeerId | undefined
}

export const reset = (validators: ReadonlyArray<Validator>) => {
  for (const v of validators) v.tally = emptyTally()
}

/** A Vote for `view` from `voter` (the signature is not this layer's to check). */
export const vote = (view: bigint, voter: Identity.PeerId) =>
  Message.Vote.make({ view, blockHash: new Uint8Array(32).fill(7), voter, signature: new Uint8Array(64) })

export const startValidator = (
  id: Identity.Identity,
  all: ReadonlyArray<Identity.Identity>,
  options: { readonly broadcast: BroadcastConfigInput; readonly peers: Record<string, unknown> }
): Effect.Effect<Validator, unknown, Scope.Scope | SimulatedNetwork.SimulatedNetwork> =>
  Effect.gen(function* () {
    const self: { v?: Validator } = {}
    const tally = () => self.v!.tally
    const peersConfig = { dialGrace: 0, ...options.peers }
    const layer = Broadcaster.Broadcaster.layer({
      identity: id,
      networkId: NETWORK,
      validators: all.map((m) => m.peerId),
      config: options.broadcast,
      observer: {
        sent: (_peer, _channel, _tag, bytes) => {
          tally().sentBytes += bytes
        },
        relayed: (_peer, _channel, bytes) => {
          tally().relayed++
          tally().relayedBytes += bytes
        },
        repaired: (n) => {
          tally().repaired += n
        },
        chose: (s) => void tally().chose.push(s),
        rejected: () => void tally().rejected++
      }
    }).pipe(
      Layer.provideMerge(
        PeerManager.PeerManager.layer({
          identity: id,
          listen: addressOf(id),
          validators: all.map((m) => ({ id: m.peerId, addresses: [addressOf(m)] })),
          config: peersConfig
        })
      ),
      Layer.provideMerge(MemoryTransport.layer({ identity: id, config: { networkId: NETWORK } })),
      Layer.provideMerge(PeerRegistry.PeerRegistry.layer(peersConfig))
    )
    const context = yield* Layer.build(layer)
    const broadcaster = Context.get(context, Broadcaster.Broadcaster)
    const validator: Validator = {
      id,
      broadcaster,
      manager: Context.get(context, PeerManager.PeerManager),
      tally: emptyTally(),
      voteTo: undefined
    }
    self.v = validator
    yield* Effect.forkScoped(
      Stream.runForEach(broadcaster.inbound, (d) =>
        Effect.flatMap(Clock.currentTimeMillis, (now) => {
          const t = validator.tally
          if (d.message._tag === "Proposal") {
            t.proposals++
            t.proposalAt = now
            const leader = validator.voteTo
            if (leader !== undefined) {
              return Effect.ignore(broadcaster.send(leader, vote(d.message.view, id.peerId)))
            }
          } else if (d.message._tag === "Vote") {
            t.votes++
            t.voteAt = now
          }
          return Effect.void
        })
      )
    )
    return validator
  })
