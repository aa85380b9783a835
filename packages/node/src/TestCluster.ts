/**
 * A whole validator set on the simulated network, for testing a consensus application under
 * `TestClock`: N nodes built with `NodeNetwork.layerTest`, deterministic keys and hosts, link
 * conditions and partitions through `network`, and any node stopped (a crash) and started again.
 *
 * Everything random that decides what happens derives from the seed: the keys, the network's loss
 * and jitter draws (its own stream per link), and each node's Effect `Random` (redial jitter), a
 * stream of its own per node and per start, inherited by every fiber the node forks. Handshake
 * nonces stay cryptographically random: they change bytes on the wire, never what happens.
 */
import * as crypto from "node:crypto"
import { SimulatedNetwork } from "@hotstuff2/transport"
import { Identity } from "@hotstuff2/wire"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Random from "effect/Random"
import * as Scope from "effect/Scope"
import type { NodeConfigInput } from "./NodeConfig.js"
import { type NetworkError, NodeNetwork, type NodeNetworkShape } from "./NodeNetwork.js"

export interface TestClusterOptions {
  /** How many validators. */
  readonly size: number
  /**
   * Keys, the network's loss and jitter, and every node's redial jitter derive from it: the same
   * seed and the same test steps under `TestClock` give the same run. Default 1.
   */
  readonly seed?: number
  readonly networkId?: string
  /** Conditions of every link (latency and jitter in milliseconds, loss 0..1, bandwidth bytes/s). */
  readonly link?: Partial<SimulatedNetwork.LinkConditions>
  /** Config fields for every node (limits, peers, broadcast...), over the cluster's own. */
  readonly config?: Partial<Omit<NodeConfigInput, "identity" | "listen" | "validators" | "networkId">>
  /** Config fields of one node, over `config` (e.g. bootstrap nodes for some). */
  readonly configOf?: (
    index: number
  ) => Partial<Omit<NodeConfigInput, "identity" | "listen" | "validators" | "networkId">>
  /** The validator set (indices) node `index` starts with; default: every validator of the cluster. */
  readonly members?: (index: number) => ReadonlyArray<number>
  /** `false`: the nodes' configs name the validators by key only, for discovery to find. Default true. */
  readonly addresses?: boolean
}

export interface TestValidator {
  readonly index: number
  readonly identity: Identity.Identity
  /** Its host on the simulated network (for `network.setLink`, `partition`, `isolate`). */
  readonly host: string
  readonly address: string
}

export interface TestCluster {
  readonly validators: ReadonlyArray<TestValidator>
  /** The simulated network: link conditions, partitions, counters. */
  readonly network: SimulatedNetwork.SimulatedNetworkShape
  /** The running network of validator `index`; dies if it is stopped. */
  readonly node: (index: number) => NodeNetworkShape
  /** Stops validator `index` as a crash or a shutdown would (its scope closes). */
  readonly stop: (index: number) => Effect.Effect<void>
  /** Starts validator `index` again (same key and address) after `stop`. */
  readonly start: (index: number) => Effect.Effect<NodeNetworkShape, NetworkError>
}

const keyOf = (seed: number, index: number): Identity.Identity =>
  Either.getOrThrow(
    Identity.fromSeed(crypto.createHash("sha256").update(`hotstuff2-test-cluster/${seed}/${index}`).digest())
  )

/**
 * The Effect `Random` of one part of the cluster (the network, or one start of one node): a stream
 * of its own, so that one node's draws never shift another's, and a restarted node does not replay
 * the draws of its previous run.
 */
const randomOf = (seed: number, part: string): Random.Random =>
  Random.make(`hotstuff2-test-cluster/${seed}/${part}`)

/**
 * Starts the cluster in the caller's scope: the simulated network first, so it outlives every node,
 * then every node. Run the test with `it.scoped` and move time with `TestClock.adjust`.
 */
export const make = (options: TestClusterOptions): Effect.Effect<TestCluster, NetworkError, Scope.Scope> =>
  Effect.gen(function* () {
    const seed = options.seed ?? 1
    // Fibers forked while a layer builds inherit its Random (Effect's default services live in a
    // FiberRef), and so do the fibers they fork in turn: every draw of a node comes from its stream.
    const networkContext = yield* Layer.build(
      SimulatedNetwork.SimulatedNetwork.layer({ seed, ...(options.link ? { defaults: options.link } : {}) })
    ).pipe(Effect.withRandom(randomOf(seed, "network")))
    const network = Context.get(networkContext, SimulatedNetwork.SimulatedNetwork)
    const validators: ReadonlyArray<TestValidator> = Array.from({ length: options.size }, (_, index) => {
      const host = `v${index}`
      return { index, identity: keyOf(seed, index), host, address: `${host}:9000` }
    })
    const entry = (v: TestValidator) => ({
      id: v.identity.peerId,
      addresses: options.addresses === false ? [] : [v.address]
    })
    const validatorSetOf = (index: number) =>
      options.members === undefined
        ? validators.map(entry)
        : options.members(index).map((i) => entry(validators[i]!))
    const running = new Map<
      number,
      { readonly net: NodeNetworkShape; readonly scope: Scope.CloseableScope }
    >()
    const outer = yield* Effect.scope
    const starts = new Map<number, number>()

    const start = (index: number) =>
      Effect.gen(function* () {
        const v = validators[index]
        if (v === undefined)
          return yield* Effect.dieMessage(`no validator ${index} in a cluster of ${options.size}`)
        if (running.has(index)) return running.get(index)!.net
        const incarnation = starts.get(index) ?? 0
        starts.set(index, incarnation + 1)
        const scope = yield* Scope.fork(outer, ExecutionStrategy.sequential)
        const layer = NodeNetwork.layerTest({
          ...options.config,
          ...options.configOf?.(index),
          identity: { seed: Buffer.from(Identity.seed(v.identity)).toString("hex") },
          listen: v.address,
          networkId: options.networkId ?? "hotstuff2-test-cluster",
          validators: validatorSetOf(index)
        })
        const context = yield* Layer.buildWithScope(layer, scope).pipe(
          Effect.provide(networkContext),
          Effect.withRandom(randomOf(seed, `node/${index}/start/${incarnation}`)),
          Effect.onError((cause) => Scope.close(scope, Exit.failCause(cause)))
        )
        const net = Context.get(context, NodeNetwork)
        running.set(index, { net, scope })
        return net
      })

    const stop = (index: number) =>
      Effect.suspend(() => {
        const entry = running.get(index)
        if (entry === undefined) return Effect.void
        running.delete(index)
        return Scope.close(entry.scope, Exit.void)
      })

    for (const v of validators) yield* start(v.index)

    return {
      validators,
      network,
      node: (index) => {
        const entry = running.get(index)
        if (entry === undefined) throw new Error(`validator ${index} is not running`)
        return entry.net
      },
      stop,
      start
    } satisfies TestCluster
  })
