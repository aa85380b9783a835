/**
 * Block sync: a validator missing blocks (restarted, healed from a partition, or simply behind) asks
 * a peer for the chain ending at a certified block, over `@effect/rpc` on the sync channel of
 * `NodeNetwork` (`NodeRpc`). The answer is bounded in blocks and bytes; a validator far behind asks
 * again from where the last answer ended. A peer that does not answer in time, or answers wrongly, is
 * passed over for the next one. The core verifies every block it is given as it verifies proposals:
 * hashes, parent links, and each block's certificate.
 */
import * as Rpc from "@effect/rpc/Rpc"
import type * as RpcClient from "@effect/rpc/RpcClient"
import * as RpcGroup from "@effect/rpc/RpcGroup"
import { NodeNetwork, type NodeNetworkShape, NodeRpc } from "@hotstuff2/node"
import { Codec, Message } from "@hotstuff2/wire"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as ParseResult from "effect/ParseResult"
import * as Random from "effect/Random"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import type { JustifiedBlock, Output, PeerId } from "./core/types.js"
import { metrics } from "./internal/observe.js"
import type * as Ledger from "./Ledger.js"

export interface SyncOptions {
  /** Most blocks one answer carries (and one request may ask for). Default 128. */
  readonly maxBlocks: number
  /** Most bytes of blocks one answer carries. Default 4 MiB. */
  readonly maxBytes: number
  /** How long one request may take before the next peer is asked, ms. Default 5,000. */
  readonly requestTimeout: number
}

const defaults: SyncOptions = { maxBlocks: 128, maxBytes: 4 * 1024 * 1024, requestTimeout: 5_000 }

/** Why a peer could not answer a request. */
export class SyncError extends Schema.TaggedError<SyncError>()("SyncError", { reason: Schema.String }) {}

const Bytes = Schema.Uint8ArrayFromSelf

/** A certificate travels in the wire's own encoding. */
const Certificate = Schema.transformOrFail(Bytes, Schema.typeSchema(Message.QuorumCertificate), {
  strict: true,
  decode: (bytes, _, ast) => {
    const decoded = Codec.decode(bytes)
    return Either.isRight(decoded) && decoded.right._tag === "QuorumCertificate"
      ? ParseResult.succeed(decoded.right)
      : ParseResult.fail(new ParseResult.Type(ast, bytes, "not a wire-encoded QuorumCertificate"))
  },
  encode: (qc, _, ast) =>
    Either.match(Codec.encode(qc), {
      onLeft: (error) => ParseResult.fail(new ParseResult.Type(ast, qc, error.message)),
      onRight: ParseResult.succeed
    })
})

const JustifiedBlockSchema = Schema.Struct({
  block: Schema.Struct({ hash: Bytes, parent: Bytes, height: Schema.BigInt, payload: Bytes }),
  justify: Certificate
})

export const GetChainRequest = Schema.Struct({
  to: Bytes,
  toHeight: Schema.BigInt,
  fromHeight: Schema.BigInt,
  max: Schema.Number
})
export type GetChainRequest = typeof GetChainRequest.Type

/** The chain ending at block `to` (at height `toHeight`), its lowest `max` blocks from `fromHeight`. */
export const GetChain = Rpc.make("GetChain", {
  payload: GetChainRequest,
  success: Schema.Array(JustifiedBlockSchema),
  error: SyncError
})

export class SyncRpcs extends RpcGroup.make(GetChain) {}

type SyncClient = RpcClient.RpcClient<RpcGroup.Rpcs<typeof SyncRpcs>, NodeRpc.RpcClientFailure>

export interface SyncDeps {
  readonly self: PeerId
  readonly validators: ReadonlyArray<PeerId>
  /** A block the core holds (its tree and its recently committed window). */
  readonly lookup: (hash: Uint8Array) => JustifiedBlock | undefined
  readonly committedHeight: () => bigint
  readonly ledger: Ledger.LedgerShape
  readonly options: Partial<SyncOptions>
  /** Hands fetched blocks to the consensus loop. */
  readonly deliver: (from: PeerId, blocks: ReadonlyArray<JustifiedBlock>) => Effect.Effect<unknown>
  /** A peer's answer was refused (the core refuses what it cannot verify; this, what it cannot use). */
  readonly refused: (from: PeerId, reason: string) => Effect.Effect<void>
}

export interface Sync {
  /** Serves `GetChain` to every peer (forked into the validator's scope). */
  readonly serve: Effect.Effect<void, never, Scope.Scope>
  /** Carries out the core's `Fetch`: one fetch at a time; a newer target waits for the next Fetch. */
  readonly fetch: (output: Extract<Output, { _tag: "Fetch" }>) => Effect.Effect<void>
  /** Blocks fetched so far. */
  readonly synced: () => number
}

const equal = (a: Uint8Array, b: Uint8Array) => Buffer.compare(a, b) === 0

export const make = (net: NodeNetworkShape, deps: SyncDeps): Effect.Effect<Sync, never, Scope.Scope> =>
  Effect.gen(function* () {
    const options = { ...defaults, ...deps.options }
    const scope = yield* Effect.scope
    const node = deps.self.slice(0, 8)
    let synced = 0
    let fetching = false

    /** The server's side: walk back from `to` through the core's blocks, then the ledger by height. */
    const getChain = (request: GetChainRequest) =>
      Effect.gen(function* () {
        const max = Math.max(0, Math.min(request.max, options.maxBlocks))
        if (request.fromHeight > request.toHeight || max === 0) return []
        const recent: Array<JustifiedBlock> = []
        let cursor = deps.lookup(request.to)
        let below = request.toHeight + 1n
        if (cursor === undefined) {
          const stored = yield* deps.ledger.read(request.toHeight)
          if (stored === undefined || !equal(stored.block.hash, request.to)) {
            return yield* new SyncError({ reason: "unknown block" })
          }
        }
        while (cursor !== undefined && cursor.block.height >= request.fromHeight) {
          recent.push(cursor)
          below = cursor.block.height
          cursor = deps.lookup(cursor.block.parent)
        }
        recent.reverse()
        const out: Array<JustifiedBlock> = []
        let bytes = 0
        if (request.fromHeight < below) {
          const stored = yield* deps.ledger.readRange(
            request.fromHeight,
            Math.min(max, Number(below - request.fromHeight)),
            options.maxBytes
          )
          for (const b of stored) {
            out.push({ block: b.block, justify: b.justify })
            bytes += b.block.payload.length
          }
          if (out.length < Number(below - request.fromHeight)) return out
        }
        for (const b of recent) {
          if (out.length >= max || (out.length > 0 && bytes + b.block.payload.length > options.maxBytes))
            break
          out.push(b)
          bytes += b.block.payload.length
        }
        return out
      }).pipe(
        Effect.catchIf(
          (error): error is Ledger.LedgerError => !(error instanceof SyncError),
          (error) => new SyncError({ reason: `ledger: ${error._tag}` })
        )
      )

    const network = Layer.succeed(NodeNetwork, net)
    const serve = Layer.buildWithScope(
      NodeRpc.layerServer(SyncRpcs, { maxResponseBytes: options.maxBytes + 64 * 1024 }).pipe(
        Layer.provide(SyncRpcs.toLayer({ GetChain: getChain })),
        Layer.provide(network)
      ),
      scope
    ).pipe(Effect.asVoid)

    // One client per peer asked, for the validator's life: answers find their request by id.
    const clients = new Map<PeerId, SyncClient>()
    const clientOf = (peer: PeerId) =>
      Effect.suspend(() => {
        const known = clients.get(peer)
        if (known !== undefined) return Effect.succeed(known)
        return NodeRpc.client(SyncRpcs, peer, { timeout: Duration.millis(options.requestTimeout) }).pipe(
          Effect.provide(network),
          Scope.extend(scope),
          Effect.tap((client) => Effect.sync(() => clients.set(peer, client)))
        )
      })

    const ask = (
      peer: PeerId,
      target: { readonly hash: Uint8Array; readonly height: bigint },
      fromHeight: bigint
    ) =>
      Effect.flatMap(clientOf(peer), (client) =>
        client.GetChain({ to: target.hash, toHeight: target.height, fromHeight, max: options.maxBlocks })
      )

    /** Whether an answer is the start of the chain we asked for, before the core verifies its blocks. */
    const usable = (
      blocks: ReadonlyArray<JustifiedBlock>,
      fromHeight: bigint,
      targetHeight: bigint
    ): string | undefined => {
      if (blocks.length === 0) return "empty answer"
      if (blocks.length > options.maxBlocks)
        return `answer has ${blocks.length} blocks, asked for at most ${options.maxBlocks}`
      for (let i = 0; i < blocks.length; i++) {
        const height = blocks[i]!.block.height
        if (height !== fromHeight + BigInt(i))
          return `block ${i} has height ${height}, expected ${fromHeight + BigInt(i)}`
        if (height > targetHeight) return "answer goes past the target"
      }
      return undefined
    }

    const run = (output: Extract<Output, { _tag: "Fetch" }>) =>
      Effect.gen(function* () {
        const others = yield* Random.shuffle(
          deps.validators.filter((v) => v !== deps.self && v !== output.hint)
        )
        const peers = output.hint === deps.self ? others : [output.hint, ...others]
        let from = output.fromHeight
        for (const peer of peers) {
          while (from <= output.target.height) {
            const answer = yield* Effect.either(ask(peer, output.target, from))
            if (Either.isLeft(answer)) {
              yield* Effect.logDebug("sync request failed").pipe(
                Effect.annotateLogs({ peer: peer.slice(0, 8), error: String(answer.left) })
              )
              break
            }
            const why = usable(answer.right, from, output.target.height)
            if (why !== undefined) {
              yield* deps.refused(peer, why)
              break
            }
            synced += answer.right.length
            yield* Metric.incrementBy(Metric.tagged(metrics.synced, "node", node), answer.right.length)
            yield* deps.deliver(peer, answer.right)
            const last = answer.right[answer.right.length - 1]!.block
            // Short of the target, the answer's last block is not certified by it: it comes again
            // first in the next answer (the core keeps the ones before it).
            if (last.height === output.target.height) return
            if (answer.right.length < 2) break
            from = last.height
          }
        }
      })

    const fetch = (output: Extract<Output, { _tag: "Fetch" }>) =>
      Effect.suspend(() => {
        if (fetching) return Effect.void
        fetching = true
        return Effect.forkIn(
          run(output).pipe(Effect.ensuring(Effect.sync(() => (fetching = false)))),
          scope
        ).pipe(Effect.asVoid)
      })

    return { serve, fetch, synced: () => synced } satisfies Sync
  })
