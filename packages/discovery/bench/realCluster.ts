// The real stack at scale: N nodes (registry, peer manager, memory transport, discovery) on the
// simulated network under TestClock, set up as test/scale.test.ts does (keys only, two entry points,
// a 10 s gossip interval, 5 s heartbeats, 20 ms links, seed 100). Each node's peer manager is wrapped
// so that every message discovery hands it for the discovery channel is counted (payload bytes, as
// encoded, before framing); replies are decoded to count their records.
import { PeerManager, PeerRegistry } from "@hotstuff2/peers"
import { MemoryTransport, SimulatedNetwork, TransportConfig } from "@hotstuff2/transport"
import { Codec, type Identity } from "@hotstuff2/wire"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import * as TestClock from "effect/TestClock"
import { Discovery } from "../src/index.js"
import {
  address,
  fullMesh,
  host,
  id,
  identity,
  keysOnly,
  NETWORK,
  type Node,
  withNetwork
} from "../test/fixtures/cluster.js"

const DISCOVERY = TransportConfig.Channel.discovery

/** Discovery-channel traffic of every node together, since the start. */
export interface Counters {
  bytes: number
  messages: number
  replies: Array<number>
}

const counting = (
  manager: PeerManager.PeerManagerShape,
  counters: Counters
): PeerManager.PeerManagerShape => ({
  ...manager,
  unsafeSend: (peer, channel, messages) => {
    const error = manager.unsafeSend(peer, channel, messages)
    if (channel === DISCOVERY && error === undefined) {
      for (const m of messages) {
        if (!(m instanceof Uint8Array)) continue
        counters.bytes += m.byteLength
        counters.messages++
        const decoded = Codec.decode(m)
        if (Either.isRight(decoded) && decoded.right._tag === "PeerExchangeResponse") {
          counters.replies.push(decoded.right.records.length)
        }
      }
    }
    return error
  }
})

const startCountingNode = (
  n: number,
  validators: ReadonlyArray<PeerManager.Validator>,
  bootstrap: ReadonlyArray<{ address: string; peer?: Identity.PeerId }>,
  counters: Counters
) =>
  Effect.gen(function* () {
    const scope = yield* Scope.make()
    const self = identity(n)
    const peersConfig = { heartbeatInterval: "5 seconds" }
    const manager = Layer.map(
      PeerManager.PeerManager.layer({
        identity: self,
        listen: address(n),
        validators,
        config: peersConfig,
        separateChannels: [DISCOVERY]
      }),
      (context) =>
        Context.add(
          context,
          PeerManager.PeerManager,
          counting(Context.get(context, PeerManager.PeerManager), counters)
        )
    )
    const stack = Discovery.Discovery.layer({
      identity: self,
      networkId: NETWORK,
      validators,
      // The simulated network's hosts are names, as in the test fixture.
      config: { bootstrap, gossipInterval: "10 seconds", recordHostNames: true }
    }).pipe(
      Layer.provideMerge(manager),
      Layer.provideMerge(
        MemoryTransport.layer({ identity: self, config: { networkId: NETWORK }, host: host(n) })
      ),
      Layer.provideMerge(PeerRegistry.PeerRegistry.layer(peersConfig))
    )
    const context = yield* Layer.buildWithScope(stack, scope).pipe(Effect.orDie)
    return {
      n,
      manager: Context.get(context, PeerManager.PeerManager),
      registry: Context.get(context, PeerRegistry.PeerRegistry),
      discovery: Context.get(context, Discovery.Discovery),
      stop: Scope.close(scope, Exit.void)
    } satisfies Node
  })

/** A snapshot of the counters at one moment of simulated time. */
export interface Mark {
  readonly seconds: number
  readonly bytes: number
  readonly messages: number
  readonly replies: number
}

export interface ClusterResult {
  readonly nodes: number
  /** Simulated seconds until every node had every validator's address, and until the full mesh; -1: not within the cap. */
  readonly learnedAt: number
  readonly meshAt: number
  readonly start: Mark
  readonly learned: Mark
  readonly meshed: Mark
  readonly steadyEnd: Mark
  /** Records per reply, in order sent. */
  readonly replies: ReadonlyArray<number>
  /** Bytes of every link of the simulated network (all channels, framing and handshakes included). */
  readonly networkBytes: number
  readonly wallSeconds: number
  readonly startWallSeconds: number
  readonly peakHeapBytes: number
}

/**
 * Starts `size` nodes at simulated time 0 and steps the TestClock by `stepSeconds` until every node
 * knows every address and the mesh is full (at most `capSeconds`), then runs `steadySeconds` more.
 */
export const runCluster = (options: {
  readonly size: number
  readonly stepSeconds: number
  readonly capSeconds: number
  readonly steadySeconds: number
}) =>
  withNetwork(
    { seed: 100, defaults: { latency: 20 } },
    Effect.gen(function* () {
      const network = yield* SimulatedNetwork.SimulatedNetwork
      const wallStart = process.hrtime.bigint()
      const wall = () => Number(process.hrtime.bigint() - wallStart) / 1e9
      let peakHeap = 0
      const sampleHeap = () => {
        peakHeap = Math.max(peakHeap, process.memoryUsage().heapUsed)
      }
      const counters: Counters = { bytes: 0, messages: 0, replies: [] }
      let seconds = 0
      const mark = (): Mark => ({
        seconds,
        bytes: counters.bytes,
        messages: counters.messages,
        replies: counters.replies.length
      })

      const ns = Array.from({ length: options.size }, (_, i) => i + 1)
      const validators = keysOnly(ns)
      const bootstrap = [{ address: address(1), peer: id(1) }, { address: address(2) }]
      const nodes: Array<Node> = []
      for (const n of ns) {
        nodes.push(yield* startCountingNode(n, validators, n <= 2 ? [] : bootstrap, counters))
        if (n % 10 === 0) sampleHeap()
      }
      const startWallSeconds = wall()
      const start = mark()

      const everyAddress = Effect.gen(function* () {
        for (const node of nodes) {
          if ((yield* node.discovery.stats).validatorsWithAddress < options.size - 1) return false
        }
        return true
      })
      let learned: Mark | undefined
      let meshed: Mark | undefined
      while ((learned === undefined || meshed === undefined) && seconds < options.capSeconds) {
        yield* TestClock.adjust(Duration.seconds(options.stepSeconds))
        seconds += options.stepSeconds
        sampleHeap()
        if (learned === undefined && (yield* everyAddress)) learned = mark()
        if (meshed === undefined && (yield* fullMesh(nodes, ns))) meshed = mark()
      }
      const end = mark()
      for (let s = 0; s < options.steadySeconds; s += options.stepSeconds) {
        yield* TestClock.adjust(Duration.seconds(options.stepSeconds))
        seconds += options.stepSeconds
        sampleHeap()
      }
      const steadyEnd = mark()
      const networkBytes = (yield* network.stats).deliveredBytes
      const wallSeconds = wall()
      for (const node of nodes) yield* node.stop
      return {
        nodes: options.size,
        learnedAt: learned?.seconds ?? -1,
        meshAt: meshed?.seconds ?? -1,
        start,
        learned: learned ?? end,
        meshed: meshed ?? end,
        steadyEnd,
        replies: counters.replies,
        networkBytes,
        wallSeconds,
        startWallSeconds,
        peakHeapBytes: peakHeap
      } satisfies ClusterResult
    })
  )
