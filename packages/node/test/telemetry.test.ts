// Telemetry end to end over real TLS on 127.0.0.1: spans exported over OTLP/HTTP with the trace
// carried from sender to receiver, the OTEL_EXPORTER_OTLP_ENDPOINT route, Prometheus and OTLP
// metrics, and what closing the node releases and flushes.
import * as http from "node:http"
import * as net from "node:net"
import { assert, it } from "@effect/vitest"
import { Broadcaster } from "@hotstuff2/broadcast"
import { OtlpReceiver as Otlp } from "@hotstuff2/testing"
import { TlsTransport, Transport, TransportConfig } from "@hotstuff2/transport"
import { Identity } from "@hotstuff2/wire"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { type NodeConfig, NodeNetwork, type StartFailed } from "../src/index.js"
import { reservePorts } from "../src/internal/ports.js"
import {
  configFor,
  connectedPeers,
  drain,
  identity,
  NETWORK,
  peerId,
  proposal,
  type RunningNode,
  startNode,
  vote
} from "./fixtures/cluster.js"
import { portIsFree } from "./fixtures/http.js"
import { Metrics } from "./fixtures/validatorProcesses.js"
import { waitLive } from "./fixtures/wait.js"

const short = (n: number) => Identity.shortPeerId(peerId(n))

const start = (n: number, addresses: ReadonlyArray<string>, telemetry: NodeConfigTelemetry) =>
  startNode(n, NodeNetwork.layer(configFor(n, addresses, { telemetry })))

type NodeConfigTelemetry = NonNullable<NodeConfig.NodeConfigInput["telemetry"]>

const meshed = (nodes: ReadonlyArray<RunningNode>) =>
  waitLive(
    "a full mesh",
    Effect.map(Effect.forEach(nodes, connectedPeers), (all) =>
      all.every((peers) => peers.length === nodes.length - 1)
    )
  )

/** Waits until `node` has received a message of `tag`, keeping everything it drained. */
const received = (node: RunningNode, tag: string, into: Array<NodeNetwork.Inbound>) =>
  waitLive(
    `${tag} at node ${node.n}`,
    Effect.map(drain(node), (got) => {
      into.push(...got)
      return into.some((m) => m.message._tag === tag)
    })
  )

const findSpan = (spans: ReadonlyArray<Otlp.ReceivedSpan>, service: string, name: string) =>
  spans.filter((s) => s.service === service && s.name === name)

it.scopedLive(
  "a broadcast and a send are traced across nodes: each receive span is the child of the sender's span, in the sender's trace",
  () =>
    Effect.gen(function* () {
      const receiver = yield* Otlp.make
      const ports = yield* reservePorts(2)
      const addresses = ports.map((p) => `127.0.0.1:${p}`)
      const telemetry = (service: string) => ({ otlpEndpoint: receiver.endpoint, serviceName: service })
      const a = yield* start(0, addresses, telemetry("node-a"))
      const b = yield* start(1, addresses, telemetry("node-b"))
      yield* meshed([a, b])

      const inbox: Array<NodeNetwork.Inbound> = []
      yield* a.net.broadcast(proposal(7n, a.net.self))
      yield* received(b, "Proposal", inbox)
      yield* a.net.send(b.net.self, vote(8n, a.net.self))
      yield* received(b, "Vote", inbox)
      yield* a.net.multicast([b.net.self], vote(9n, a.net.self))
      yield* waitLive(
        "the multicast vote at node 1",
        Effect.map(drain(b), (got) => {
          inbox.push(...got)
          return inbox.filter((m) => m.message._tag === "Vote").length === 2
        })
      )

      // Closing a node flushes its spans: the receiver has them once the nodes are closed.
      yield* b.stop
      yield* a.stop
      const spans = yield* receiver.spans
      assert.deepStrictEqual(yield* receiver.errors, [])

      const [broadcast] = findSpan(spans, "node-a", "Broadcaster.broadcast")
      assert.isDefined(broadcast, "A's broadcast span")
      assert.strictEqual(broadcast!.attributes["message.type"], "Proposal")
      assert.strictEqual(broadcast!.attributes.view, "7")
      assert.strictEqual(broadcast!.attributes.recipients, 1)
      assert.strictEqual(broadcast!.attributes.queued, 1)
      assert.strictEqual(broadcast!.attributes.failed, 0)
      assert.isAbove(broadcast!.attributes.size as number, 1024)
      assert.strictEqual(broadcast!.attributes.channel, Broadcaster.channelOf("Proposal"))

      const [sent] = findSpan(spans, "node-a", "Broadcaster.send")
      assert.isDefined(sent, "A's send span")
      assert.strictEqual(sent!.attributes["message.type"], "Vote")
      assert.strictEqual(sent!.attributes.view, "8")
      assert.strictEqual(sent!.attributes.peer, b.net.self)
      assert.isAbove(sent!.attributes.size as number, 64)

      const receives = findSpan(spans, "node-b", "Broadcaster.receive")
      const ofProposal = receives.find((s) => s.attributes["message.type"] === "Proposal")
      assert.isDefined(ofProposal, "B's receive span of the proposal")
      assert.strictEqual(ofProposal!.traceId, broadcast!.traceId)
      assert.strictEqual(ofProposal!.parentSpanId, broadcast!.spanId)
      assert.strictEqual(ofProposal!.attributes.view, "7")
      assert.strictEqual(ofProposal!.attributes.peer, a.net.self)
      assert.strictEqual(ofProposal!.attributes.origin, a.net.self)

      const ofVote = receives.find((s) => s.attributes.view === "8")
      assert.isDefined(ofVote, "B's receive span of the vote")
      assert.strictEqual(ofVote!.traceId, sent!.traceId)
      assert.strictEqual(ofVote!.parentSpanId, sent!.spanId)
      assert.strictEqual(ofVote!.attributes.view, "8")
      assert.strictEqual(ofVote!.attributes.peer, a.net.self)
      assert.strictEqual(ofVote!.attributes.origin, a.net.self)

      const [multicast] = findSpan(spans, "node-a", "Broadcaster.multicast")
      assert.isDefined(multicast, "A's multicast span")
      const ofMulticast = receives.find((s) => s.attributes.view === "9")
      assert.isDefined(ofMulticast, "B's receive span of the multicast")
      assert.strictEqual(ofMulticast!.traceId, multicast!.traceId)
      assert.strictEqual(ofMulticast!.parentSpanId, multicast!.spanId)

      // Connections are traced by the node that dials them, under its own service name.
      const dials = spans.filter(
        (s) => s.name === "Transport.dial" && (s.service === "node-a" || s.service === "node-b")
      )
      assert.isAbove(dials.length, 0, "dial spans")
      for (const dial of dials) {
        const expected = dial.service === "node-a" ? b.net.self : a.net.self
        assert.strictEqual(dial.attributes.peer, expected)
        assert.strictEqual(dial.attributes.transport, "tls")
      }
      // Each node's spans are its own: nothing of B's under A's name.
      assert.isTrue(findSpan(spans, "node-a", "Broadcaster.receive").length === 0)
    }),
  60_000
)

it.scopedLive("OTEL_EXPORTER_OTLP_ENDPOINT turns span export on when the config names no endpoint", () =>
  Effect.gen(function* () {
    const receiver = yield* Otlp.make
    const ports = yield* reservePorts(2)
    const addresses = ports.map((p) => `127.0.0.1:${p}`)
    const node = yield* start(0, addresses, { serviceName: "from-env" }).pipe(
      Effect.withConfigProvider(
        ConfigProvider.fromMap(new Map([["OTEL_EXPORTER_OTLP_ENDPOINT", `${receiver.endpoint}/`]]))
      )
    )
    // Validator 1 is not running: the broadcast reaches nobody, but it is traced all the same.
    const receipt = yield* node.net.broadcast(proposal(3n, node.net.self))
    assert.deepStrictEqual(receipt.queued, [])
    yield* node.stop
    const spans = findSpan(yield* receiver.spans, "from-env", "Broadcaster.broadcast")
    assert.strictEqual(spans.length, 1)
    assert.strictEqual(spans[0]!.attributes.view, "3")
    assert.strictEqual(spans[0]!.attributes.failed, 1)
  })
)

it.scopedLive("with tracing off and an endpoint, metrics are exported and no span is", () =>
  Effect.gen(function* () {
    const receiver = yield* Otlp.make
    const ports = yield* reservePorts(2)
    const addresses = ports.map((p) => `127.0.0.1:${p}`)
    const node = yield* start(0, addresses, {
      otlpEndpoint: receiver.endpoint,
      serviceName: "untraced",
      tracing: false,
      metricsInterval: 100
    })
    yield* node.net.broadcast(proposal(2n, node.net.self))
    yield* waitLive(
      "OTLP metrics from the untraced node",
      Effect.map(receiver.metrics, (metrics) => metrics.some((m) => m.service === "untraced"))
    )
    yield* node.stop
    assert.deepStrictEqual(yield* receiver.spans, [])
  })
)

it.scopedLive(
  "with tracing on and no endpoint, a node joins the application's tracer: its spans are children of the caller's",
  () =>
    Effect.gen(function* () {
      const ports = yield* reservePorts(2)
      const addresses = ports.map((p) => `127.0.0.1:${p}`)
      const a = yield* start(0, addresses, { tracing: true })
      const b = yield* start(1, addresses, { tracing: true })
      yield* meshed([a, b])
      const inbox: Array<NodeNetwork.Inbound> = []
      const application = yield* Effect.gen(function* () {
        const span = yield* Effect.currentSpan
        yield* a.net.broadcast(proposal(5n, a.net.self))
        return span
      }).pipe(Effect.withSpan("application"))
      yield* received(b, "Proposal", inbox)
      const trace = inbox.find((m) => m.message._tag === "Proposal")!.trace
      assert.isDefined(trace)
      // The context on the wire is the broadcast span's: in the application's trace, not the span itself.
      assert.strictEqual(Buffer.from(trace!.traceId).toString("hex"), application.traceId)
      assert.notStrictEqual(Buffer.from(trace!.spanId).toString("hex"), application.spanId)
    })
)

it.scopedLive(
  "without an endpoint nor tracing, no trace context travels, even under an application span",
  () =>
    Effect.gen(function* () {
      const ports = yield* reservePorts(2)
      const addresses = ports.map((p) => `127.0.0.1:${p}`)
      const a = yield* start(0, addresses, {})
      const b = yield* start(1, addresses, {})
      yield* meshed([a, b])
      const inbox: Array<NodeNetwork.Inbound> = []
      yield* Effect.gen(function* () {
        yield* a.net.broadcast(proposal(5n, a.net.self))
        yield* a.net.send(b.net.self, vote(5n, a.net.self))
      }).pipe(Effect.withSpan("application"))
      yield* received(b, "Proposal", inbox)
      yield* received(b, "Vote", inbox)
      for (const delivery of inbox) assert.isUndefined(delivery.trace)
    })
)

// ---- metrics ----

const scrape = (port: number) =>
  Effect.async<string, Error>((resume) => {
    const request = http.get({ host: "127.0.0.1", port, path: "/metrics", agent: false }, (response) => {
      const chunks: Array<Buffer> = []
      response.on("data", (chunk: Buffer) => chunks.push(chunk))
      response.on("end", () => resume(Effect.succeed(Buffer.concat(chunks).toString("utf8"))))
    })
    request.on("error", (e) => resume(Effect.fail(e)))
  })

const parse = Metrics.parse
const valueOf = (metrics: Metrics, name: string, labels: Record<string, string>) => metrics.sum(name, labels)

it.scopedLive(
  "Prometheus serves per-node message counters and connection gauges, OTLP carries the same metrics, and closing frees the port",
  () =>
    Effect.gen(function* () {
      const receiver = yield* Otlp.make
      const ports = yield* reservePorts(5)
      const addresses = ports.slice(0, 4).map((p) => `127.0.0.1:${p}`)
      const metricsPort = ports[4]!
      const nodes = [
        yield* start(0, addresses, { prometheus: `127.0.0.1:${metricsPort}`, metricsInterval: 100 }),
        yield* start(1, addresses, {
          otlpEndpoint: receiver.endpoint,
          serviceName: "node-1",
          metricsInterval: 100
        }),
        // Nodes 2 and 3 never sample within the test: their message counts reach node 0's scrape
        // because every collection flushes the counts of every node in the process first.
        yield* start(2, addresses, { metricsInterval: 3_600_000 }),
        yield* start(3, addresses, { metricsInterval: 3_600_000 })
      ]
      const [n0, n1] = nodes as [RunningNode, RunningNode]
      assert.strictEqual(n0.net.metricsAddress, `127.0.0.1:${metricsPort}`)
      yield* meshed(nodes)

      const node0 = { node: short(0) }
      const consensus = String(Broadcaster.channelOf("Proposal"))
      const sentProposals = { ...node0, channel: consensus, type: "Proposal" }
      const receivedVotes = { ...node0, channel: consensus, type: "Vote" }
      yield* waitLive(
        "hotstuff2_connections of node 0 at 3",
        Effect.map(scrape(metricsPort), (text) => valueOf(parse(text), "hotstuff2_connections", node0) === 3)
      )
      const before = parse(yield* scrape(metricsPort))
      const sentBefore = valueOf(before, "hotstuff2_messages_sent_total", sentProposals)
      const receivedBefore = valueOf(before, "hotstuff2_messages_received_total", receivedVotes)

      yield* n0.net.broadcast(proposal(11n, n0.net.self))
      yield* n1.net.send(n0.net.self, vote(11n, n1.net.self))
      yield* n1.net.send(n0.net.self, vote(12n, n1.net.self))
      yield* received(n0, "Vote", [])

      let after = parse("")
      yield* waitLive(
        "the counters to move",
        Effect.map(scrape(metricsPort), (text) => {
          after = parse(text)
          return valueOf(after, "hotstuff2_messages_received_total", receivedVotes) >= receivedBefore + 2
        })
      )
      assert.strictEqual(valueOf(after, "hotstuff2_messages_sent_total", sentProposals), sentBefore + 3)
      assert.strictEqual(
        valueOf(after, "hotstuff2_messages_received_total", receivedVotes),
        receivedBefore + 2
      )
      assert.isAbove(valueOf(after, "hotstuff2_bytes_sent_total", sentProposals), 3 * 1024)
      assert.strictEqual(valueOf(after, "hotstuff2_connections", node0), 3)
      // The receivers count the proposal under their own node label.
      for (const n of [1, 2, 3]) {
        assert.isAtLeast(
          valueOf(after, "hotstuff2_messages_received_total", { node: short(n), type: "Proposal" }),
          1
        )
      }

      // A tree broadcast: counted by strategy at the origin, and relayed by one of its two children.
      yield* n0.net.broadcast(proposal(13n, n0.net.self), { strategy: "tree" })
      yield* waitLive(
        "the tree broadcast counted and relayed",
        Effect.map(scrape(metricsPort), (text) => {
          const metrics = parse(text)
          return (
            valueOf(metrics, "hotstuff2_broadcast_strategy_total", { ...node0, strategy: "tree" }) === 1 &&
            valueOf(metrics, "hotstuff2_broadcast_relayed_total", {}) >= 1
          )
        })
      )
      assert.isAtLeast(
        valueOf(parse(yield* scrape(metricsPort)), "hotstuff2_broadcast_strategy_total", {
          ...node0,
          strategy: "direct"
        }),
        1
      )

      // Node 1 pushes the process's metrics over OTLP under its own service name.
      yield* waitLive(
        "OTLP metrics from node-1",
        Effect.map(receiver.metrics, (metrics) =>
          metrics.some(
            (m) =>
              m.service === "node-1" &&
              m.name === "hotstuff2_connections" &&
              m.points.some((p) => p.attributes.node === short(1) && p.value === 3)
          )
        )
      )
      const names = new Set((yield* receiver.metrics).map((m) => m.name))
      for (const name of ["hotstuff2_messages_sent", "hotstuff2_messages_received", "hotstuff2_bytes_sent"]) {
        assert.isTrue(names.has(name), `${name} over OTLP`)
      }
      assert.deepStrictEqual(yield* receiver.errors, [])

      for (const node of nodes) yield* node.stop
      assert.isTrue(yield* portIsFree(metricsPort), "the Prometheus port is released on close")
    }),
  60_000
)

it.scopedLive("refused inbound connections are counted per reason in hotstuff2_connections_refused", () =>
  Effect.gen(function* () {
    const ports = yield* reservePorts(2)
    const addresses = [`127.0.0.1:${ports[0]}`]
    const node = yield* start(0, addresses, { prometheus: `127.0.0.1:${ports[1]}`, metricsInterval: 100 })
    // Plaintext to the TLS port, three times: each is refused as `tls`.
    for (let i = 0; i < 3; i++) {
      const socket = net.connect({ host: "127.0.0.1", port: ports[0]! }, () =>
        socket.write("GET / HTTP/1.0\r\n\r\n")
      )
      socket.on("error", () => undefined)
      yield* Effect.addFinalizer(() => Effect.sync(() => socket.destroy()))
    }
    const refused = { node: short(0), reason: "tls" }
    yield* waitLive(
      "three tls refusals in the scrape",
      Effect.map(
        scrape(ports[1]!),
        (text) => valueOf(parse(text), "hotstuff2_connections_refused_total", refused) === 3
      )
    )
    yield* node.stop
  })
)

it.scopedLive(
  "a peer's protocol violation shows in hotstuff2_peer_penalties and hotstuff2_peer_disconnects",
  () =>
    Effect.gen(function* () {
      const ports = yield* reservePorts(3)
      const addresses = ports.slice(0, 2).map((p) => `127.0.0.1:${p}`)
      yield* start(0, addresses, { prometheus: `127.0.0.1:${ports[2]}`, metricsInterval: 100 })
      // Validator 1's key, on a transport with one channel more than node 0 has.
      const context = yield* Layer.build(
        TlsTransport.layer({
          identity: identity(1),
          config: {
            networkId: NETWORK,
            channels: [
              ...TransportConfig.defaultChannels,
              { ...TransportConfig.defaultChannels[1]!, id: 42, name: "stray" }
            ]
          }
        })
      )
      const transport = Context.get(context, Transport.Transport)
      const connection = yield* transport.dial(addresses[0]!, peerId(0))
      yield* connection.send(42, [Uint8Array.of(1)])
      assert.strictEqual((yield* connection.closed).reason, "protocol-error")
      const node0 = { node: short(0) }
      yield* waitLive(
        "the penalty and the disconnect in the scrape",
        Effect.map(scrape(ports[2]!), (text) => {
          const samples = parse(text)
          return (
            valueOf(samples, "hotstuff2_peer_penalties_total", { ...node0, event: "ProtocolViolation" }) ===
              1 &&
            valueOf(samples, "hotstuff2_peer_disconnects_total", {
              ...node0,
              reason: "local: protocol-error"
            }) === 1
          )
        })
      )
    })
)

it.scopedLive("discovery shows in the scrape: validators with an address, records refused per reason", () =>
  Effect.gen(function* () {
    const ports = yield* reservePorts(3)
    const addresses = ports.slice(0, 2).map((p) => `127.0.0.1:${p}`)
    yield* start(0, addresses, { prometheus: `127.0.0.1:${ports[2]}`, metricsInterval: 100 })
    yield* start(1, addresses, {})
    // Node 1 pushes its signed record on connecting: a 127.0.0.1 address, which node 0 (loopback not
    // allowed, the default) refuses as bad-address. Validator 1's address is node 0's config.
    const node0 = { node: short(0) }
    yield* waitLive(
      "the discovery gauge and the refusal in the scrape",
      Effect.map(scrape(ports[2]!), (text) => {
        const samples = parse(text)
        return (
          valueOf(samples, "hotstuff2_discovery_validators_with_address", node0) === 1 &&
          (valueOf(samples, "hotstuff2_discovery_records_refused_total", {
            ...node0,
            reason: "bad-address"
          }) ?? 0) >= 1
        )
      })
    )
  })
)

/** A collector that accepts connections and never answers: every export waits for its deadline. */
const silentCollector = Effect.acquireRelease(
  Effect.async<{ readonly server: net.Server; readonly sockets: Set<net.Socket> }>((resume) => {
    const sockets = new Set<net.Socket>()
    const server = net.createServer((socket) => {
      sockets.add(socket)
      socket.on("error", () => undefined)
    })
    server.listen({ host: "127.0.0.1", port: 0 }, () => resume(Effect.succeed({ server, sockets })))
  }),
  ({ server, sockets }) =>
    Effect.async<void>((resume) => {
      for (const socket of sockets) socket.destroy()
      server.close(() => resume(Effect.void))
    })
)

it.scopedLive("closing a node whose collector does not answer does not wait out the export deadlines", () =>
  Effect.gen(function* () {
    const collector = yield* silentCollector
    const { port } = collector.server.address() as net.AddressInfo
    const ports = yield* reservePorts(2)
    const addresses = ports.map((p) => `127.0.0.1:${p}`)
    const node = yield* start(0, addresses, {
      otlpEndpoint: `http://127.0.0.1:${port}`,
      metricsInterval: 200
    })
    yield* node.net.broadcast(proposal(1n, node.net.self))
    yield* waitLive(
      "a metrics export to hang",
      Effect.sync(() => collector.sockets.size > 0)
    )
    // The exporters' own deadline is 10 s per export; a close is bounded by telemetry.exportTimeout (2 s by default).
    const closed = yield* node.stop.pipe(Effect.timeoutOption(Duration.seconds(8)))
    assert.isTrue(closed._tag === "Some", "closed within 8 s")
  })
)

it.scopedLive(
  "a Prometheus address already taken fails the start with StartFailed, and releases the rest",
  () =>
    Effect.gen(function* () {
      const ports = yield* reservePorts(3)
      const addresses = ports.slice(0, 2).map((p) => `127.0.0.1:${p}`)
      const taken = yield* Effect.acquireRelease(
        Effect.async<net.Server>((resume) => {
          const server = net.createServer()
          server.listen({ host: "127.0.0.1", port: ports[2]! }, () => resume(Effect.succeed(server)))
        }),
        (server) => Effect.async<void>((resume) => void server.close(() => resume(Effect.void)))
      )
      const error = yield* Effect.flip(
        start(0, addresses, { prometheus: `127.0.0.1:${ports[2]}`, otlpEndpoint: "http://127.0.0.1:1" })
      )
      assert.strictEqual(error._tag, "StartFailed")
      assert.strictEqual((error as StartFailed).what, "prometheus")
      // Nothing of the failed node holds its listen address.
      assert.isTrue(yield* portIsFree(ports[0]!))
      assert.isTrue(taken.listening)
    })
)
