// Effect Metrics of one node, tagged with its short PeerId (Effect's metric registry is per process,
// and tests run several nodes in one). Per-message counters are cached per (channel, type) and
// counted from the broadcaster's observer hooks and flushed into the counters on each sample and
// before each exporter's collection; the rest is sampled on a schedule.
import type { Broadcaster } from "@hotstuff2/broadcast"
import type { Discovery } from "@hotstuff2/discovery"
import type { PeerManager, PeerRegistry } from "@hotstuff2/peers"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import * as MetricLabel from "effect/MetricLabel"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"

type Gauge = Metric.Metric.Gauge<number>

const counter = (name: string, description: string): Metric.Metric.Counter<number> =>
  Metric.counter(name, { description, incremental: true })
const gauge = (name: string, description: string): Gauge => Metric.gauge(name, { description })

const messagesSent = counter("hotstuff2_messages_sent", "Messages queued to peers, per channel and type")
const bytesSent = counter("hotstuff2_bytes_sent", "Message bytes queued to peers, per channel and type")
const messagesReceived = counter("hotstuff2_messages_received", "Messages delivered, per channel and type")
const bytesReceived = counter("hotstuff2_bytes_received", "Message bytes delivered, per channel and type")
const rejected = counter("hotstuff2_messages_rejected", "Messages refused from peers, per reason")
const duplicates = counter("hotstuff2_messages_duplicate", "Broadcast envelopes dropped as duplicates")
const strategies = counter(
  "hotstuff2_broadcast_strategy",
  "Broadcasts per strategy taken (direct or tree; adaptive chooses per broadcast)"
)
const relayed = counter(
  "hotstuff2_broadcast_relayed",
  "Tree and routed envelopes this node passed on to a peer"
)
const repairs = counter(
  "hotstuff2_broadcast_repairs",
  "Copies an origin sent itself to validators whose tree receipt had not come"
)
const relayFailures = counter(
  "hotstuff2_broadcast_relay_failures",
  "Relays blamed for a subtree that missed a tree broadcast"
)
const routed = counter(
  "hotstuff2_broadcast_routed",
  "Routed sends, per outcome (sent by this node; forwarded, no-route or over-limit as a relay)"
)
const retransmissions = counter(
  "hotstuff2_reliable_retransmissions",
  "Reliable messages sent again (not acknowledged in time, or after a reconnect)"
)
const acks = counter("hotstuff2_reliable_acked", "Reliable messages acknowledged by their recipients")
const ackLatency = Metric.histogram(
  "hotstuff2_reliable_ack_latency_ms",
  MetricBoundaries.exponential({ start: 1, factor: 2, count: 16 }),
  "Milliseconds from a reliable message's first send to its acknowledgement (oldest of each ack)"
)
const acksRefused = counter(
  "hotstuff2_reliable_acks_refused",
  "Acknowledgements refused (future, malformed, unknown-stream) or stale, per reason"
)
const gapsSkipped = counter(
  "hotstuff2_reliable_gaps_skipped",
  "Reliable messages from an origin given up, per why (timeout, cancelled, restart)"
)
const reliableDropped = counter(
  "hotstuff2_reliable_dropped",
  "Reliable messages dropped on arrival, per why (duplicate, stale, beyond-window)"
)
const reliableMessages = gauge(
  "hotstuff2_reliable_buffer_messages",
  "Reliable messages held for retransmission (each counted once)"
)
const reliableBytes = gauge("hotstuff2_reliable_buffer_bytes", "Bytes of the reliable messages held")
const reliableEntries = gauge(
  "hotstuff2_reliable_buffer_entries",
  "Reliable messages held, summed over recipients (a broadcast to n counts n)"
)
const trimmed = gauge(
  "hotstuff2_connections_trimmed",
  "Idle connections closed over the connection budget so far"
)
const connections = gauge("hotstuff2_connections", "Peers connected now")
const queuedFrames = gauge("hotstuff2_queued_frames", "Frames waiting in outbound queues, per channel")
const queuedBytes = gauge("hotstuff2_queued_bytes", "Bytes waiting in outbound queues, per channel")
const dropped = gauge(
  "hotstuff2_dropped_frames",
  "Frames dropped by channel overflow policies on open connections"
)
const rtt = gauge("hotstuff2_peer_rtt_ms", "Smoothed heartbeat round-trip time per peer, milliseconds")
const score = gauge("hotstuff2_peer_score", "Reputation score per peer (0 neutral)")
const banned = gauge("hotstuff2_peers_banned", "Peers under a ban now")
const penalties = counter(
  "hotstuff2_peer_penalties",
  "Reputation events charged to peers, validators or not, per event (ProtocolViolation, InvalidMessage, RateLimitExceeded...)"
)
const disconnects = counter(
  "hotstuff2_peer_disconnects",
  "Connections to peers that ended, per side and reason (local: protocol-error, remote: eof, local: banned...)"
)
const refusedConnections = counter(
  "hotstuff2_connections_refused",
  "Inbound connection attempts refused, per reason (over-limit, tls, not-admitted, timeout...)"
)

const discoveryKnown = gauge(
  "hotstuff2_discovery_validators_with_address",
  "Validators of the tracked sets with an address this node could dial"
)
const discoveryRecords = gauge("hotstuff2_discovery_records", "Signed peer records held")
const discoveryRefused = counter(
  "hotstuff2_discovery_records_refused",
  "Peer records refused, per reason (stale, bad-signature, wrong-network, future, bad-address, not-kept, own-record)"
)
const discoveryDnsFailures = counter(
  "hotstuff2_discovery_dns_failures",
  "DNS queries that failed (the last good answer kept)"
)

const label = MetricLabel.make
type LabelSet = ReadonlyArray<MetricLabel.MetricLabel>

/**
 * Feeds totals kept elsewhere (a listener's refusals, discovery's refused records), by reason, into
 * `counter`: each call adds the growth since the last one, labelled with its reason.
 */
const countsByReason = (counter: Metric.Metric.Counter<number>, nodeLabel: MetricLabel.MetricLabel) => {
  const counted = new Map<string, { readonly labels: LabelSet; count: number }>()
  return (totals: Readonly<Partial<Record<string, number>>>): void => {
    for (const [reason, count] of Object.entries(totals)) {
      let entry = counted.get(reason)
      if (entry === undefined) {
        entry = { labels: [nodeLabel, label("reason", reason)], count: 0 }
        counted.set(reason, entry)
      }
      if (count !== undefined && count > entry.count) {
        counter.unsafeUpdate(count - entry.count, entry.labels)
        entry.count = count
      }
    }
  }
}

export interface NodeMetrics {
  readonly observer: Broadcaster.Observer
  /** Counts what peers did and how their connections ended, from the registry's events; runs until interrupted. */
  readonly watchPeers: Effect.Effect<void>
  /** Samples queue depths, drops, connections, RTT and scores into gauges (and flushes counts). */
  readonly sample: Effect.Effect<void>
  /** Adds the per-message counts kept since the last flush to the Effect counters. */
  readonly flush: () => void
}

/** Messages and bytes counted for one (direction, channel, type) since the last flush, and where they go. */
interface Pending {
  readonly labels: LabelSet
  readonly messageCounter: Metric.Metric.Counter<number>
  readonly byteCounter: Metric.Metric.Counter<number>
  messages: number
  bytes: number
}

// Every node's flush in this process. Effect's metric registry is per process, so an exporter's
// collection (a Prometheus scrape, an OTLP export) flushes them all first: it sees every count.
const flushes = new Set<() => void>()

/** Flushes the per-message counts of every node in this process into the Effect counters. */
export const flushAll = (): void => {
  for (const flush of flushes) flush()
}

/** Counts into `flushAll` until the scope closes (then a last flush). */
export const register = (metrics: NodeMetrics): Effect.Effect<void, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      flushes.add(metrics.flush)
    }),
    () =>
      Effect.sync(() => {
        flushes.delete(metrics.flush)
        metrics.flush()
      })
  )

export const make = (
  node: string,
  manager: PeerManager.PeerManagerShape,
  registry: PeerRegistry.PeerRegistryShape
): NodeMetrics => {
  const nodeLabel = label("node", node)
  // Per-message counts are plain numbers per (direction, channel, type), found without building a
  // key string, and added to the Effect counters on each sample and before each exporter collects:
  // two counter updates per message (a hook lookup each) cost about 0.2 us on the send path. Each
  // counter is updated with the same labels array every time: Effect finds a metric's hook for a
  // set of labels by the array's identity.
  const pendingOf = {
    sent: new Map<number, Map<string, Pending>>(),
    received: new Map<number, Map<string, Pending>>()
  }
  const dirty: Array<Pending> = []
  const pendingFor = (direction: "sent" | "received", channel: number, type: string): Pending => {
    let byType = pendingOf[direction].get(channel)
    if (byType === undefined) {
      byType = new Map()
      pendingOf[direction].set(channel, byType)
    }
    let found = byType.get(type)
    if (found === undefined) {
      found = {
        labels: [nodeLabel, label("channel", String(channel)), label("type", type)],
        messageCounter: direction === "sent" ? messagesSent : messagesReceived,
        byteCounter: direction === "sent" ? bytesSent : bytesReceived,
        messages: 0,
        bytes: 0
      }
      byType.set(type, found)
    }
    return found
  }
  const count = (direction: "sent" | "received", channel: number, type: string, size: number) => {
    const pending = pendingFor(direction, channel, type)
    if (pending.messages === 0) dirty.push(pending)
    pending.messages++
    pending.bytes += size
  }
  const flush = () => {
    for (const pending of dirty) {
      pending.messageCounter.unsafeUpdate(pending.messages, pending.labels)
      pending.byteCounter.unsafeUpdate(pending.bytes, pending.labels)
      pending.messages = 0
      pending.bytes = 0
    }
    dirty.length = 0
  }
  const rejectedBy = new Map<string, LabelSet>()
  const nodeOnly: LabelSet = [nodeLabel]

  // Label sets made once per value: Effect finds a counter's hook by the labels array's identity.
  const labelsOf = new Map<string, LabelSet>()
  const labelled = (name: string, value: string): LabelSet => {
    const key = `${name}=${value}`
    let labels = labelsOf.get(key)
    if (labels === undefined) {
      labels = [nodeLabel, label(name, value)]
      labelsOf.set(key, labels)
    }
    return labels
  }
  const observer: Broadcaster.Observer = {
    sent: (_peer, channel, type, size) => count("sent", channel, type, size),
    delivered: (delivery) => count("received", delivery.channel, delivery.message._tag, delivery.size),
    rejected: (rejection) => {
      let labels = rejectedBy.get(rejection.reason)
      if (labels === undefined) {
        labels = [nodeLabel, label("reason", rejection.reason)]
        rejectedBy.set(rejection.reason, labels)
      }
      rejected.unsafeUpdate(1, labels)
    },
    duplicate: () => duplicates.unsafeUpdate(1, nodeOnly),
    chose: (strategy) => strategies.unsafeUpdate(1, labelled("strategy", strategy)),
    relayed: () => relayed.unsafeUpdate(1, nodeOnly),
    repaired: (count) => repairs.unsafeUpdate(count, nodeOnly),
    relayFailed: () => relayFailures.unsafeUpdate(1, nodeOnly),
    routed: (outcome) => routed.unsafeUpdate(1, labelled("outcome", outcome)),
    retransmitted: (_peer, count) => retransmissions.unsafeUpdate(count, nodeOnly),
    acked: (_peer, count, latency) => {
      acks.unsafeUpdate(count, nodeOnly)
      ackLatency.unsafeUpdate(latency, nodeOnly)
    },
    ackRefused: (_peer, reason) => acksRefused.unsafeUpdate(1, labelled("reason", reason)),
    gapSkipped: (_origin, count, why) => gapsSkipped.unsafeUpdate(count, labelled("why", why)),
    reliableDropped: (_peer, why) => reliableDropped.unsafeUpdate(1, labelled("why", why))
  }

  const channelsSeen = new Set<number>()
  const refusalsCounted = countsByReason(refusedConnections, nodeLabel)

  const sample = Effect.gen(function* () {
    flush()
    const peers = yield* manager.connected
    connections.unsafeUpdate(peers.length, [nodeLabel])
    trimmed.unsafeUpdate(yield* manager.trimmed, [nodeLabel])
    const frames = new Map<number, number>()
    const bytes = new Map<number, number>()
    const drops = new Map<number, number>()
    for (const peer of peers) {
      const connection = yield* manager.connection(peer)
      if (Option.isNone(connection)) continue
      const stats = yield* connection.value.stats
      for (const [channel, q] of Object.entries(stats.queued)) {
        const id = Number(channel)
        frames.set(id, (frames.get(id) ?? 0) + q.frames)
        bytes.set(id, (bytes.get(id) ?? 0) + q.bytes)
      }
      for (const [channel, n] of Object.entries(stats.dropped)) {
        drops.set(Number(channel), (drops.get(Number(channel)) ?? 0) + n)
      }
    }
    // A channel seen once is reported from then on: at 0 when no open connection has anything on
    // it, rather than at the last value seen before its connections closed.
    for (const channel of [...frames.keys(), ...drops.keys()]) channelsSeen.add(channel)
    for (const channel of channelsSeen) {
      const labels = [nodeLabel, label("channel", String(channel))]
      queuedFrames.unsafeUpdate(frames.get(channel) ?? 0, labels)
      queuedBytes.unsafeUpdate(bytes.get(channel) ?? 0, labels)
      dropped.unsafeUpdate(drops.get(channel) ?? 0, labels)
    }
    let bans = 0
    for (const state of yield* registry.all) {
      if (Option.isSome(state.ban)) bans++
      if (!state.validator) continue
      const peerLabel = label("peer", state.id.slice(0, 8))
      score.unsafeUpdate(state.score, [nodeLabel, peerLabel])
      if (state.rtt !== undefined) rtt.unsafeUpdate(state.rtt, [nodeLabel, peerLabel])
    }
    banned.unsafeUpdate(bans, [nodeLabel])
    refusalsCounted(yield* manager.refused)
  })

  const watchPeers = Stream.runForEach(registry.changes, (event) =>
    Effect.sync(() => {
      if (event._tag === "ScoreChanged" && event.event !== "UsefulMessage") {
        penalties.unsafeUpdate(1, labelled("event", event.event))
      } else if (event._tag === "Disconnected") {
        // "local: protocol-error: FrameTooLarge: ..." counts as "local: protocol-error": the detail
        // is a peer's words, of unbounded variety.
        disconnects.unsafeUpdate(1, labelled("reason", event.reason.split(": ").slice(0, 2).join(": ")))
      }
    })
  )

  return { observer, sample, flush, watchPeers }
}

/** Samples the reliable buffers into gauges. */
export const reliableSampler = (
  node: string,
  broadcaster: Broadcaster.BroadcasterShape
): Effect.Effect<void> => {
  const labels = [label("node", node)]
  return Effect.map(broadcaster.reliableBuffer, (held) => {
    reliableMessages.unsafeUpdate(held.messages, labels)
    reliableBytes.unsafeUpdate(held.bytes, labels)
    reliableEntries.unsafeUpdate(held.entries, labels)
  })
}

/**
 * Samples discovery into gauges and counters: validators with an address, records held, records
 * refused per reason, failed DNS queries. Counters take the growth since the last sample.
 */
export const discoverySampler = (node: string, discovery: Discovery.DiscoveryShape): Effect.Effect<void> => {
  const nodeLabel = label("node", node)
  const refused = countsByReason(discoveryRefused, nodeLabel)
  let dnsFailures = 0
  return Effect.map(discovery.stats, (stats) => {
    discoveryKnown.unsafeUpdate(stats.validatorsWithAddress, [nodeLabel])
    discoveryRecords.unsafeUpdate(stats.records, [nodeLabel])
    refused(stats.recordsRefused)
    if (stats.dnsFailures > dnsFailures) {
      discoveryDnsFailures.unsafeUpdate(stats.dnsFailures - dnsFailures, [nodeLabel])
      dnsFailures = stats.dnsFailures
    }
  })
}

const rpcDropped = counter(
  "hotstuff2_rpc_dropped",
  "RPC answers dropped without a refusal, per reason (unknown stream or request: late; client-behind: its queue was full)"
)

/** Counts RPC messages dropped (late answers, a client that fell behind), per reason. */
export const rpcDropCounter = (node: string): ((why: string) => void) => {
  const nodeLabel = label("node", node)
  const labelsOf = new Map<string, ReadonlyArray<MetricLabel.MetricLabel>>()
  return (why) => {
    let labels = labelsOf.get(why)
    if (labels === undefined) {
      labels = [nodeLabel, label("reason", why)]
      labelsOf.set(why, labels)
    }
    rpcDropped.unsafeUpdate(1, labels)
  }
}
