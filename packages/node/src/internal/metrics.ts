// Effect Metrics of one node, tagged with its short PeerId (Effect's metric registry is per process,
// and tests run several nodes in one). Per-message counters are cached per (channel, type) and
// updated synchronously from the broadcaster's observer hooks; the rest is sampled on a schedule.
import type { Broadcaster } from "@hotstuff2/broadcast"
import type { PeerManager, PeerRegistry } from "@hotstuff2/peers"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as MetricLabel from "effect/MetricLabel"
import * as Option from "effect/Option"

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

const label = MetricLabel.make
type LabelSet = ReadonlyArray<MetricLabel.MetricLabel>

export interface NodeMetrics {
  readonly observer: Broadcaster.Observer
  /** Samples queue depths, drops, connections, RTT and scores into gauges. */
  readonly sample: Effect.Effect<void>
}

export const make = (
  node: string,
  manager: PeerManager.PeerManagerShape,
  registry: PeerRegistry.PeerRegistryShape
): NodeMetrics => {
  const nodeLabel = label("node", node)
  // Per direction, channel and type: looked up without building a key string per message. Each
  // counter is updated with the same labels array every time: Effect finds a metric's hook for a set
  // of labels by the array's identity (`Metric.taggedWithLabels` makes a new array per update, and
  // so a new metric key and a registry lookup).
  const labelsOf = {
    sent: new Map<number, Map<string, LabelSet>>(),
    received: new Map<number, Map<string, LabelSet>>()
  }
  const labelsFor = (direction: "sent" | "received", channel: number, type: string): LabelSet => {
    let byType = labelsOf[direction].get(channel)
    if (byType === undefined) {
      byType = new Map()
      labelsOf[direction].set(channel, byType)
    }
    let found = byType.get(type)
    if (found === undefined) {
      found = [nodeLabel, label("channel", String(channel)), label("type", type)]
      byType.set(type, found)
    }
    return found
  }
  const rejectedBy = new Map<string, LabelSet>()
  const nodeOnly: LabelSet = [nodeLabel]

  const observer: Broadcaster.Observer = {
    sent: (_peer, channel, type, size) => {
      const labels = labelsFor("sent", channel, type)
      messagesSent.unsafeUpdate(1, labels)
      bytesSent.unsafeUpdate(size, labels)
    },
    delivered: (delivery) => {
      const labels = labelsFor("received", delivery.channel, delivery.message._tag)
      messagesReceived.unsafeUpdate(1, labels)
      bytesReceived.unsafeUpdate(delivery.size, labels)
    },
    rejected: (rejection) => {
      let labels = rejectedBy.get(rejection.reason)
      if (labels === undefined) {
        labels = [nodeLabel, label("reason", rejection.reason)]
        rejectedBy.set(rejection.reason, labels)
      }
      rejected.unsafeUpdate(1, labels)
    },
    duplicate: () => duplicates.unsafeUpdate(1, nodeOnly)
  }

  const channelsSeen = new Set<number>()

  const sample = Effect.gen(function* () {
    const peers = yield* manager.connected
    connections.unsafeUpdate(peers.length, [nodeLabel])
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
  })

  return { observer, sample }
}
