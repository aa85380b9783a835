// End to end, over TLS on 127.0.0.1: a DNS server answers exactly what a Kubernetes headless Service
// publishes (an SRV record per pod under _p2p._tcp.<service>, each target's A record), and four
// validators whose config names the others by key only, plus the service's SRV name, find and connect
// to each other. Nothing tells them which pod is which: the key each TLS handshake proves does.
import { assert, describe, it } from "@effect/vitest"
import { DnsServer } from "@hotstuff2/testing"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { NodeNetwork } from "../src/index.js"
import { configFor, peerId } from "./fixtures/cluster.js"

const SERVICE = "validators.hotstuff2.svc.cluster.local"
const N = 4

/** Polls `check` every 100 ms until it holds, at most `seconds` (the outer deadline of a real-socket test). */
const eventually = (check: Effect.Effect<boolean>, seconds: number) =>
  Effect.gen(function* () {
    for (let i = 0; i < seconds * 10; i++) {
      if (yield* check) return true
      yield* Effect.sleep("100 millis")
    }
    return false
  })

describe("DNS discovery, as on Kubernetes", () => {
  it.scopedLive(
    "four validators named by key only find each other through the headless Service's SRV and A records",
    () =>
      Effect.gen(function* () {
        const dns = yield* DnsServer.make({ defaultTtl: 1 })
        const srv = `_p2p._tcp.${SERVICE}`
        const nets: Array<NodeNetwork.Shape> = []
        for (let n = 0; n < N; n++) {
          const base = configFor(
            n,
            Array.from({ length: N }, () => "127.0.0.1:0")
          )
          const config = {
            ...base,
            validators: base.validators.map((v) => ({ id: v.id })),
            discovery: {
              dns: { srv: [srv], servers: [dns.address], minInterval: "200 millis", maxInterval: "1 second" },
              allowLoopback: true,
              gossipInterval: "1 second"
            }
          }
          const context = yield* Layer.build(NodeNetwork.layer(config))
          nets.push(Context.get(context, NodeNetwork))
        }
        // What the headless Service would publish once the pods run: pod i at its own port here (on
        // Kubernetes every pod has its own IP and the same port).
        const records: Array<DnsServer.DnsRecord> = []
        nets.forEach((net, i) => {
          const target = `validator-${i}.${SERVICE}`
          records.push({ type: "SRV", name: srv, target, port: Number(net.address.split(":")[1]) })
          records.push({ type: "A", name: target, address: "127.0.0.1" })
        })
        yield* dns.update(records)

        const meshed = Effect.gen(function* () {
          for (const net of nets) {
            const connected = (yield* net.peers).filter((p) => p.validator && p.state === "connected")
            if (connected.length < N - 1) return false
          }
          return true
        })
        assert.isTrue(yield* eventually(meshed, 60), "every validator connected to the three others")
        // Each validator now holds every other's address, from DNS (or gossip), never from its config.
        const peers = yield* nets[0]!.peers
        for (let i = 1; i < N; i++) {
          const status = peers.find((p) => p.id === peerId(i))!
          assert.isTrue(
            status.sources.some((s) => s.source === "dns" || s.source === "gossip"),
            JSON.stringify(status.sources)
          )
          assert.isFalse(status.sources.some((s) => s.source === "config"))
        }
        assert.isAbove(yield* dns.count({ type: "SRV" }), 0)
      }),
    120_000
  )
})
