// Discovery's core: it wires the sources (anchors, bootstrap nodes, DNS, gossip) to the peer manager
// and registry, keeps this node's own record signed, and tracks which validators have an address.
// Every loop sleeps on the Clock and draws from Random, so a cluster under TestClock discovers
// deterministically.
import { PeerManager, PeerRegistry } from "@hotstuff2/peers"
import { Transport, TransportConfig } from "@hotstuff2/transport"
import type { Message } from "@hotstuff2/wire"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Random from "effect/Random"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type { DiscoveryOptions, DiscoveryShape, DiscoveryStats } from "../Discovery.js"
import * as DiscoveryConfig from "../DiscoveryConfig.js"
import { refuseHost } from "./addresses.js"
import { Anchors } from "./anchors.js"
import { Book } from "./book.js"
import * as Bootstrap from "./bootstrap.js"
import * as Dns from "./dns.js"
import { DnsPeers } from "./dnsPeers.js"
import { Gossip } from "./gossip.js"
import { type PeerId, sign } from "./record.js"

const DISCOVERY = TransportConfig.Channel.discovery

export const make = (options: DiscoveryOptions) =>
  Effect.gen(function* () {
    const config = yield* DiscoveryConfig.decode(options.config ?? {})
    const manager = yield* PeerManager.PeerManager
    const registry = yield* PeerRegistry.PeerRegistry
    const clock = yield* Effect.clock
    const now = () => clock.unsafeCurrentTimeMillis()
    const local = options.identity.peerId
    // What a peer record may point at.
    const policy = { allowLoopback: config.allowLoopback, allowNames: config.recordHostNames }

    let validators = new Map<PeerId, PeerManager.Validator>()
    /** The tracked validators and this node, sorted by PeerId: the order of a request's bitmap. */
    let order: ReadonlyArray<PeerId> = []
    let epoch = options.epoch ?? 0n
    const isValidator = (peer: PeerId) => validators.has(peer)
    /** Validators with at least one address in the registry. */
    const addressed = new Set<PeerId>()
    // Subscribed before the snapshot of who is connected: no connection made in between is missed
    // (one seen twice is harmless).
    const changes = yield* Stream.toPull(registry.changes)
    const connected = new Set<PeerId>(yield* manager.connected)

    const book = new Book(local, options.networkId, config, policy, options.admitNonValidators ?? false)
    const gossipMillis = Duration.toMillis(config.gossipInterval)
    const gossip = new Gossip(
      config,
      book,
      {
        send: (peer, messages) => {
          manager.unsafeSend(peer, DISCOVERY, messages)
        },
        connected: () => [...connected],
        isValidator,
        isConnected: (peer) => connected.has(peer),
        missingAddresses: () => addressed.size < validators.size,
        report: (peer, event, detail) => Effect.asVoid(registry.report(peer, event, detail)),
        learned: (peer, addresses) =>
          Effect.zipRight(
            registry.replaceAddresses(peer, "gossip", addresses),
            Effect.sync(() => {
              if (isValidator(peer)) addressed.add(peer)
            })
          ),
        refused: (refusal) => Effect.logDebug(refusal.message),
        now,
        hint: () => {
          const bitmap = new Uint8Array(Math.ceil(order.length / 8))
          order.forEach((peer, i) => {
            if (connected.has(peer)) bitmap[i >> 3]! |= 1 << (i & 7)
          })
          return { epoch, connected: bitmap }
        },
        hinted: (asked, bitmap) => {
          const named = new Set<PeerId>()
          if (asked !== epoch) return named
          for (let i = 0; i < order.length && i >> 3 < bitmap.length; i++) {
            if ((bitmap[i >> 3]! >> (i & 7)) & 1) named.add(order[i]!)
          }
          return named
        }
      },
      gossipMillis
    )
    const bootstrapCounters: Bootstrap.BootstrapCounters = { dials: 0, failures: 0 }

    /** Re-reads which validators have an address (at start, and when the set changes). */
    const recount = Effect.gen(function* () {
      addressed.clear()
      for (const state of yield* registry.all) {
        if (isValidator(state.id) && state.addresses.length > 0) addressed.add(state.id)
      }
    })

    // ---- this node's own record ----
    const advertised = (): ReadonlyArray<string> => {
      if (config.advertise !== undefined) return config.advertise
      const parsed = Transport.parseAddress(manager.address)
      return parsed === undefined || refuseHost(parsed.host, { allowLoopback: true }) !== undefined
        ? []
        : [manager.address]
    }
    let sequence = 0n
    const resign = Effect.gen(function* () {
      const addresses = advertised().slice(0, config.maxRecordAddresses)
      // Milliseconds of the Clock, and always higher than the last: peers keep only a newer record.
      const millis = BigInt(now())
      sequence = millis > sequence ? millis : sequence + 1n
      const signed = sign(options.identity, options.networkId, addresses, sequence, epoch)
      if (Either.isLeft(signed)) return yield* Effect.logWarning(`discovery: ${signed.left}`)
      gossip.setOwn(signed.right)
    })

    // ---- DNS: SRV names and the host names in validators' addresses ----
    const dnsPeers = new DnsPeers(
      new Set((config.dns?.srv ?? []).map((n) => n.toLowerCase().replace(/\.$/, ""))),
      manager,
      registry,
      isValidator,
      () => [...validators.keys()].some((peer) => !connected.has(peer))
    )
    let dnsHosts: ReadonlyArray<string> = []

    const setValidators = (next: bigint, set: ReadonlyArray<PeerManager.Validator>) =>
      Effect.gen(function* () {
        validators = new Map(set.filter((v) => v.id !== local).map((v) => [v.id, v]))
        order = [...new Set([...validators.keys(), ...set.map((v) => v.id)])].sort()
        dnsHosts = dnsPeers.setValidators([...validators.values()])
        book.reclassify(isValidator)
        yield* recount
        if (next !== epoch) {
          epoch = next
          yield* resign
        }
      })

    yield* setValidators(epoch, options.validators)
    yield* resign

    // ---- anchors: dialled first after a restart, never pushed out by gossip ----
    const anchors = new Anchors(options.dataDirectory, config.anchors)
    for (const anchor of yield* anchors.load) {
      // The anchor replaces the peer's earlier anchors: restarts at new addresses do not pile them up.
      if (isValidator(anchor.peer)) yield* registry.replaceAddresses(anchor.peer, "anchor", [anchor.address])
    }
    yield* recount

    // ---- what the registry says: connections, and addresses from every source ----
    const onChange = (event: PeerRegistry.PeerEvent) =>
      Effect.suspend(() => {
        switch (event._tag) {
          case "Connected": {
            connected.add(event.peer)
            gossip.onConnected(event.peer)
            if (!isValidator(event.peer)) return Effect.void
            // An anchor is a validator this node is connected to, with an address to dial it by: the
            // one it dialled, or (it dialled this node) the healthiest one known.
            return event.direction === "outbound"
              ? anchors.reached(event.peer, event.address)
              : Effect.flatMap(registry.dialOrder(event.peer), (order) =>
                  order[0] === undefined ? Effect.void : anchors.reached(event.peer, order[0])
                )
          }
          case "Disconnected":
            connected.delete(event.peer)
            gossip.forget(event.peer)
            return Effect.void
          case "Discovered":
            if (isValidator(event.peer)) addressed.add(event.peer)
            return Effect.void
          default:
            return Effect.void
        }
      })
    yield* Effect.forever(
      Effect.flatMap(changes, (chunk) => Effect.forEach(chunk, onChange, { discard: true }))
    ).pipe(
      // The registry's stream ends only when the registry closes.
      Effect.catchAll(() => Effect.void),
      Effect.interruptible,
      Effect.forkScoped
    )
    // Connections made before this subscription: they get this node's record too.
    for (const peer of connected) gossip.onConnected(peer)

    // ---- gossip: the channel's frames, and one request per interval to a random connected peer ----
    yield* manager.inboundOn(DISCOVERY).pipe(
      Stream.runForEach((frame) => gossip.onFrame(frame.peer, frame.messages)),
      Effect.interruptible,
      Effect.forkScoped
    )
    if (config.gossip) {
      yield* Effect.gen(function* () {
        gossip.prune()
        // Who is connected, read again each round: the events are the fast path, this the truth.
        const now = yield* manager.connected
        connected.clear()
        for (const peer of now) connected.add(peer)
        const peers = [...connected]
        if (peers.length === 0) return
        const pick = yield* Random.nextIntBetween(0, peers.length)
        gossip.ask(peers[pick]!)
      }).pipe(
        Effect.repeat(Schedule.spaced(config.gossipInterval)),
        Effect.delay(config.gossipInterval),
        Effect.interruptible,
        Effect.forkScoped
      )
    }

    // ---- bootstrap nodes ----
    const enough = () =>
      validators.size === 0 || addressed.size >= Math.ceil(config.bootstrapLeaveAt * validators.size)
    for (const node of config.bootstrap) {
      yield* Bootstrap.run({
        node,
        local,
        manager,
        registry,
        enough,
        isValidator,
        counters: bootstrapCounters
      }).pipe(Effect.interruptible, Effect.forkScoped)
    }

    let dns: Dns.DnsSource | undefined
    if (config.dns !== undefined) {
      dns = yield* Dns.make({
        config: config.dns,
        hosts: dnsHosts,
        allowLoopback: config.allowLoopback,
        onAnswer: (name, targets) => dnsPeers.onAnswer(name, targets)
      })
      // SRV targets no configured address names: dialled to learn whose they are, while some
      // validator has no connection.
      if (config.dns.srv.length > 0) {
        yield* dnsPeers.probe.pipe(
          Effect.repeat(Schedule.spaced(config.dns.minInterval)),
          Effect.interruptible,
          Effect.forkScoped
        )
      }
    }

    const dnsStats = dns === undefined ? Effect.succeed(undefined) : dns.stats
    const stats: Effect.Effect<DiscoveryStats> = Effect.map(dnsStats, (d) => ({
      validators: validators.size,
      validatorsWithAddress: addressed.size,
      records: book.size,
      ...gossip.stats,
      recordsRefused: { ...gossip.stats.recordsRefused },
      bootstrapDials: bootstrapCounters.dials,
      bootstrapFailures: bootstrapCounters.failures,
      dnsQueries: d?.queries ?? 0,
      dnsFailures: d?.failures ?? 0,
      dnsTruncated: d?.truncated ?? 0,
      dnsRefused: { ...d?.refused },
      dnsProbes: dnsPeers.probes,
      dnsProbesFailed: dnsPeers.probesFailed
    }))

    return {
      ownRecord: Effect.sync(() => Option.fromNullable(gossip.ownRecord)),
      records: Effect.sync(
        () => [...book.values()].map((e) => e.record) as ReadonlyArray<Message.PeerRecord>
      ),
      setValidators,
      stats
    } satisfies DiscoveryShape
  }) as Effect.Effect<
    DiscoveryShape,
    DiscoveryConfig.InvalidDiscoveryConfig,
    Scope.Scope | PeerManager.PeerManager | PeerRegistry.PeerRegistry
  >
