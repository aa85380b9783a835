// Composes one node: identity, telemetry, transport, registry, manager, broadcaster, metrics
// sampler, all in the layer's scope, released in reverse: stop dialling and accepting, flush and
// close connections, persist the registry, flush telemetry.
import { Broadcaster } from "@hotstuff2/broadcast"
import { Discovery } from "@hotstuff2/discovery"
import { PeerManager, PeerRegistry } from "@hotstuff2/peers"
import {
  MemoryTransport,
  QuicTransport,
  type SimulatedNetwork,
  TcpTransport,
  TlsTransport,
  Transport,
  TransportConfig as TransportChannels,
  type TransportConfig,
  type TransportError
} from "@hotstuff2/transport"
import { Identity, type Message } from "@hotstuff2/wire"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import type * as Tracer from "effect/Tracer"
import * as NodeConfig from "../NodeConfig.js"
import { type NetworkError, type NodeNetworkShape, type PeerStatus, StartFailed } from "../NodeNetwork.js"
import * as Epochs from "./epochs.js"
import * as Health from "./health.js"
import * as Incarnation from "./incarnation.js"
import * as Metrics from "./metrics.js"
import * as RpcPort from "./rpc/port.js"
import * as Telemetry from "./telemetry.js"

/** The identity a config's `identity` field names: from its seed, or from its key file. */
export const loadIdentity = (
  source: NodeConfig.IdentitySource
): Effect.Effect<Identity.Identity, StartFailed> =>
  "seed" in source
    ? Either.mapLeft(
        Identity.fromSeed(Buffer.from(source.seed, "hex")),
        (e) => new StartFailed({ what: "identity", detail: e.message })
      )
    : Effect.mapError(
        Identity.load(source.keyFile),
        (e) => new StartFailed({ what: "identity", detail: e.message })
      )

/** Runs an effect under this node's tracer, when it has its own. */
const under =
  (tracer: Tracer.Tracer | undefined) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    tracer === undefined ? effect : Effect.withTracer(effect, tracer)

/** Builds the transport of a node from its decoded config. */
export type TransportFor<R> = (
  identity: Identity.Identity,
  config: NodeConfig.NodeConfig,
  transportConfig: TransportConfig.TransportConfigInput
) => Layer.Layer<Transport.Transport, NetworkError, R>

const mapTransportError = Layer.mapError(
  (e: TransportError.InvalidTransportConfig) =>
    new NodeConfig.InvalidNodeConfig({ field: `limits.${e.field}`, detail: e.detail })
)

/** TLS, QUIC or plain TCP as the config says; `memory` needs `layerTest`. */
export const realTransport: TransportFor<never> = (identity, config, transportConfig) => {
  switch (config.transport) {
    case "tcp":
      return mapTransportError(
        TcpTransport.layer({ identity, config: transportConfig, allowUnencrypted: true })
      )
    case "memory":
      return Layer.fail(
        new NodeConfig.InvalidNodeConfig({
          field: "transport",
          detail: "memory runs on a simulated network: use NodeNetwork.layerTest"
        })
      )
    case "tls":
      return mapTransportError(TlsTransport.layer({ identity, config: transportConfig }))
    case "quic":
      return mapTransportError(QuicTransport.layer({ identity, config: transportConfig }))
  }
}

/** The simulated network in context; the listen address's host is the node's host there. */
export const simulatedTransport: TransportFor<SimulatedNetwork.SimulatedNetwork> = (
  identity,
  config,
  transportConfig
) =>
  mapTransportError(
    MemoryTransport.layer({
      identity,
      config: transportConfig,
      host: Transport.parseAddress(config.listen)!.host
    })
  )

export const make = <R>(
  input: NodeConfig.NodeConfigInput | NodeConfig.NodeConfig,
  transportFor: TransportFor<R>
) =>
  Effect.gen(function* () {
    const config = yield* NodeConfig.decode(input)
    const identity = yield* loadIdentity(config.identity)
    const self = identity.peerId
    const telemetry = yield* Telemetry.make(
      config.telemetry,
      config.telemetry.serviceName ?? `hotstuff2-${Identity.shortPeerId(self)}`
    )
    const withTracer = under(telemetry.tracer)

    const transportConfig: TransportConfig.TransportConfigInput = {
      ...config.limits,
      networkId: config.networkId,
      closeTimeout: Duration.toMillis(config.shutdownTimeout)
    }
    const peersConfig = {
      ...config.peers,
      admitNonValidators: config.admitNonValidators,
      ...(config.dataDirectory === undefined ? {} : { dataDirectory: config.dataDirectory })
    }
    const transport = transportFor(identity, config, transportConfig)
    const validators = config.validators.map((v) => ({ id: v.id, addresses: v.addresses }))
    const stack = PeerManager.PeerManager.layer({
      identity,
      listen: config.listen,
      validators,
      config: peersConfig,
      // Discovery takes its channel: its records never reach the broadcaster.
      separateChannels: [TransportChannels.Channel.discovery],
      // Request/response frames leave the sync channel in the connection's reader, for NodeRpc: they
      // never reach `messages`, and they are read whatever its consumer is doing.
      divert: { channel: TransportChannels.Channel.sync, select: Broadcaster.isRpcSlot }
    }).pipe(
      Layer.mapError(
        (e): NetworkError =>
          e._tag === "ListenError"
            ? new StartFailed({ what: "listen", detail: e.message })
            : new NodeConfig.InvalidNodeConfig({ field: `peers.${e.field}`, detail: e.detail })
      ),
      Layer.provideMerge(transport),
      Layer.provideMerge(
        PeerRegistry.PeerRegistry.layer(peersConfig).pipe(
          Layer.mapError(
            (e) => new NodeConfig.InvalidNodeConfig({ field: `peers.${e.field}`, detail: e.detail })
          )
        )
      )
    )

    const context = yield* withTracer(Layer.build(stack))
    const manager = Context.get(context, PeerManager.PeerManager)
    const registry = Context.get(context, PeerRegistry.PeerRegistry)
    const metrics = Metrics.make(Identity.shortPeerId(self), manager, registry)
    yield* Metrics.register(metrics)

    // Built into this layer's scope: the broadcaster lives (and its loopback queue stays open) until the node closes.
    const broadcasterContext = yield* Layer.build(
      Broadcaster.Broadcaster.layer({
        identity,
        networkId: config.networkId,
        validators: validators.map((v) => v.id),
        admitNonValidators: config.admitNonValidators,
        incarnation: yield* Incarnation.make(config.dataDirectory),
        observer: metrics.observer,
        tracing: telemetry.tracing,
        ...(telemetry.tracer === undefined ? {} : { tracer: telemetry.tracer }),
        ...(config.broadcast === undefined ? {} : { config: config.broadcast })
      }).pipe(Layer.provide(Layer.succeedContext(context)))
    ).pipe(
      Effect.mapError(
        (e) => new NodeConfig.InvalidNodeConfig({ field: `broadcast.${e.field}`, detail: e.detail })
      )
    )
    const broadcaster = Context.get(broadcasterContext, Broadcaster.Broadcaster)

    const discoveryContext = yield* Layer.build(
      Discovery.Discovery.layer({
        identity,
        networkId: config.networkId,
        validators,
        admitNonValidators: config.admitNonValidators,
        ...(config.discovery === undefined ? {} : { config: config.discovery }),
        ...(config.dataDirectory === undefined ? {} : { dataDirectory: config.dataDirectory })
      }).pipe(Layer.provide(Layer.succeedContext(context)))
    ).pipe(
      Effect.mapError(
        (e) => new NodeConfig.InvalidNodeConfig({ field: `discovery.${e.field}`, detail: e.detail })
      )
    )
    const discovery = Context.get(discoveryContext, Discovery.Discovery)

    const send = ((peer: Identity.PeerId, message: Message.Message, options?: Broadcaster.SendOptions) =>
      withTracer(broadcaster.send(peer, message, options))) as Broadcaster.SendFunction
    const rpcPort = yield* RpcPort.make({
      self,
      manager,
      registry,
      send: (peer, message) => send(peer, message),
      rejected: (rejection) => metrics.observer.rejected?.(rejection),
      dropped: Metrics.rpcDropCounter(Identity.shortPeerId(self))
    })

    // ---- validator-set epochs ----
    const sets = yield* Epochs.make({
      self,
      validators,
      tracked: config.trackedEpochs,
      leaveGraceMillis: Duration.toMillis(config.leaveGrace),
      targets: { manager, broadcaster, discovery }
    })

    const sampleDiscovery = Metrics.discoverySampler(Identity.shortPeerId(self), discovery)
    yield* Effect.forkScoped(Effect.interruptible(metrics.watchPeers))
    yield* Effect.forkScoped(
      Effect.zipRight(metrics.sample, sampleDiscovery).pipe(
        Effect.zipRight(Metrics.reliableSampler(Identity.shortPeerId(self), broadcaster)),
        // A failed sample is logged and the next one still runs: metrics never stop for good.
        Effect.catchAllCause((cause) => Effect.logWarning("metrics sample failed", cause)),
        Effect.repeat(Schedule.spaced(config.telemetry.metricsInterval)),
        Effect.asVoid,
        // Interruptible even when the layer is built in an uninterruptible region (an
        // acquireRelease acquire): closing its scope must stop it.
        Effect.interruptible
      )
    )

    const order = new Map(validators.map((v, i) => [v.id, i]))
    const peers = Effect.map(registry.all, (states) =>
      states
        .filter((s) => s.id !== self)
        .map(
          (s): PeerStatus => ({
            id: s.id,
            validator: s.validator,
            addresses: s.addresses.map((a) => a.address),
            sources: s.addresses.map((a) => ({ address: a.address, source: a.source })),
            epochs: sets.epochsOf(s.id),
            state: s.connection,
            score: s.score,
            rtt: s.rtt,
            ban: s.ban,
            lastSeen: s.lastSeen,
            dialFailures: s.consecutiveFailures
          })
        )
        .sort((a, b) => (order.get(a.id) ?? Infinity) - (order.get(b.id) ?? Infinity))
    )

    // Opened last, so closed first: probes fail as soon as the node starts to close.
    const healthAddress =
      config.telemetry.health === undefined
        ? undefined
        : yield* Health.serve(
            config.telemetry.health,
            Effect.zipWith(registry.all, sets.validatorSet, (states, newest) =>
              Health.readiness({
                self,
                listening: manager.address,
                epoch: newest.epoch,
                validators: newest.validators,
                connected: new Set(states.filter((s) => s.connection === "connected").map((s) => s.id))
              })
            )
          )

    const net = {
      self,
      address: manager.address,
      metricsAddress: telemetry.prometheus,
      healthAddress,
      traced: withTracer,
      broadcast: (message, options) => withTracer(broadcaster.broadcast(message, options)),
      send,
      multicast: (peers, message, options) => withTracer(broadcaster.multicast(peers, message, options)),
      awaitAcks: (sent, quorum, among) => {
        const reliable = "awaitAcks" in sent ? sent : sent.reliable
        return reliable === undefined
          ? Effect.fail(
              new Broadcaster.InvalidOutbound({
                what: "awaitAcks",
                detail: "the broadcast was not reliable: nothing acknowledges it"
              })
            )
          : reliable.awaitAcks(quorum, among)
      },
      messages: broadcaster.inbound,
      receive: broadcaster.receive,
      peerEvents: Stream.merge(registry.changes, sets.events),
      peers,
      updateValidators: sets.updateValidators,
      validatorSet: sets.validatorSet,
      want: manager.want
    } satisfies NodeNetworkShape
    RpcPort.register(net, rpcPort)
    return net
  })
