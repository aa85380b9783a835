// Block sync's client over the real NodeRpc, against a peer that answers wrongly: its answer is
// refused with the reason, and the next peer is asked, whose answer is delivered.

import { describe, expect, it } from "@effect/vitest"
import { NodeNetwork, NodeRpc } from "@hotstuff2/node"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type { JustifiedBlock, PeerId } from "../src/core/types.js"
import * as Ledger from "../src/Ledger.js"
import * as Sync from "../src/Sync.js"
import { validatorOrder } from "../src/Validator.js"
import * as ConsensusCluster from "./support/cluster.js"

describe("block sync", () => {
  it.scoped("a peer answering with the wrong blocks is refused, and the next peer's answer delivered", () =>
    Effect.gen(function* () {
      // Validators 0-2 run consensus (a quorum of 4); validator 3 only serves GetChain, wrongly: the
      // real chain shifted by one height.
      const c = yield* ConsensusCluster.make({
        size: 4,
        seed: 5,
        link: { latency: 5 },
        validator: { baseTimeout: 400, payloadBytes: 64 },
        without: [3]
      })
      const shifted = (request: Sync.GetChainRequest) =>
        Effect.forEach(
          Array.from(
            { length: Number(request.toHeight - request.fromHeight) + 1 },
            (_, i) => request.fromHeight + 1n + BigInt(i)
          ),
          (h) =>
            Effect.map(
              c.consensus(1).block(h),
              (b): JustifiedBlock => ({ block: b!.block, justify: b!.justify })
            )
        ).pipe(Effect.orDie)
      yield* Layer.build(
        NodeRpc.layerServer(Sync.SyncRpcs).pipe(
          Layer.provide(Sync.SyncRpcs.toLayer({ GetChain: shifted })),
          Layer.provide(Layer.succeed(NodeNetwork, c.cluster.node(3)))
        )
      )
      yield* c.until(
        "12 blocks",
        Effect.map(c.minHeight([0, 1, 2]), (h) => h >= 12n),
        30_000
      )

      const ids = c.cluster.validators.map((v) => v.identity.peerId)
      const refused: Array<{ from: PeerId; reason: string }> = []
      const delivered: Array<{ from: PeerId; blocks: ReadonlyArray<JustifiedBlock> }> = []
      const sync = yield* Sync.make(c.cluster.node(0), {
        self: ids[0]!,
        validators: validatorOrder(ids),
        lookup: () => undefined,
        committedHeight: () => 0n,
        ledger: yield* Ledger.makeMemory(),
        options: {},
        deliver: (from, blocks) => Effect.sync(() => delivered.push({ from, blocks })),
        refused: (from, reason) => Effect.sync(() => refused.push({ from, reason }))
      })
      const target = (yield* c.consensus(1).block(8n))!.block
      yield* sync.fetch({
        _tag: "Fetch",
        target: { hash: target.hash, height: 8n },
        fromHeight: 1n,
        hint: ids[3]!
      })
      yield* c.until(
        "an answer delivered",
        Effect.sync(() => delivered.length > 0),
        20_000
      )

      expect(refused).toEqual([{ from: ids[3], reason: "block 0 has height 2, expected 1" }])
      expect(delivered).toHaveLength(1)
      expect([ids[1], ids[2]]).toContain(delivered[0]!.from)
      const blocks = delivered[0]!.blocks
      expect(blocks.map((b) => b.block.height)).toEqual([1n, 2n, 3n, 4n, 5n, 6n, 7n, 8n])
      for (const b of blocks) {
        expect(Buffer.from(b.block.hash)).toEqual(
          Buffer.from((yield* c.consensus(1).block(b.block.height))!.block.hash)
        )
      }
      expect(sync.synced()).toBe(8)
    })
  )
})
