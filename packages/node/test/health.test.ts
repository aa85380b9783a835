// The probe endpoint over real HTTP on 127.0.0.1: /healthz while the node is up, /readyz refused
// until the node is connected to n - f - 1 of the other validators, and closing frees the port.
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { NodeNetwork } from "../src/index.js"
import { readiness } from "../src/internal/health.js"
import { reservePorts } from "../src/internal/ports.js"
import { configFor, connectedPeers, peerId, startNode } from "./fixtures/cluster.js"
import { get, portIsFree } from "./fixtures/http.js"
import { waitLive } from "./fixtures/wait.js"

const json = (body: string) => JSON.parse(body) as Record<string, unknown>

describe("readiness", () => {
  const set = (n: number) => Array.from({ length: n }, (_, i) => peerId(i))
  const of = (n: number, connected: ReadonlyArray<number>, self = 0) =>
    readiness({
      self: peerId(self),
      listening: "127.0.0.1:9000",
      epoch: 3n,
      validators: set(n),
      connected: new Set(connected.map(peerId))
    })

  it("a validator needs n - f - 1 of the others, f = floor((n - 1) / 3)", () => {
    for (const [n, f] of [
      [1, 0],
      [4, 1],
      [7, 2],
      [10, 3]
    ] as const) {
      const r = of(n, [])
      assert.strictEqual(r.faultTolerance, f, `f of ${n}`)
      assert.strictEqual(r.required, n - f - 1, `required of ${n}`)
    }
    assert.isTrue(of(1, []).ready, "alone in its set, it is ready at once")
    assert.isFalse(of(4, [1]).ready)
    assert.isTrue(of(4, [1, 2]).ready)
    assert.strictEqual(of(4, [1, 2]).epoch, "3")
  })

  it("counts only the newest set's other members: itself and outsiders do not count", () => {
    const r = of(4, [0, 1, 5, 6])
    assert.strictEqual(r.connected, 1)
    assert.isFalse(r.ready)
  })

  it("a node outside the set needs a whole quorum, n - f", () => {
    assert.strictEqual(of(4, [], 9).required, 3)
    assert.isFalse(of(4, [0, 1], 9).ready)
    assert.isTrue(of(4, [0, 1, 2], 9).ready)
  })
})

it.scopedLive(
  "/healthz is 200 while the node is up; /readyz is 503 until 2 of the 3 others are connected, then 200; closing frees the port",
  () =>
    Effect.gen(function* () {
      const ports = yield* reservePorts(5)
      const addresses = ports.slice(0, 4).map((p) => `127.0.0.1:${p}`)
      const healthPort = ports[4]!
      const health = `127.0.0.1:${healthPort}`
      const node0 = yield* startNode(0, NodeNetwork.layer(configFor(0, addresses, { telemetry: { health } })))
      assert.strictEqual(node0.net.healthAddress, health)

      const live = yield* get(health, "/healthz")
      assert.strictEqual(live.status, 200)
      assert.deepStrictEqual(json(live.body), { status: "up" })

      const alone = yield* get(health, "/readyz")
      assert.strictEqual(alone.status, 503)
      assert.deepInclude(json(alone.body), {
        status: "not ready",
        ready: false,
        listening: addresses[0],
        epoch: "0",
        validators: 4,
        faultTolerance: 1,
        connected: 0,
        required: 2
      })

      // One other validator: still short of n - f - 1 = 2 (validator 2 is not started yet).
      const node1 = yield* startNode(1, NodeNetwork.layer(configFor(1, addresses)))
      yield* waitLive(
        "node 0 connected to node 1",
        Effect.map(connectedPeers(node0), (peers) => peers.includes(node1.net.self))
      )
      const one = yield* get(health, "/readyz")
      assert.strictEqual(one.status, 503)
      assert.deepInclude(json(one.body), { connected: 1, required: 2 })

      yield* startNode(2, NodeNetwork.layer(configFor(2, addresses)))
      yield* waitLive(
        "/readyz 200",
        Effect.map(get(health, "/readyz"), (r) => r.status === 200)
      )
      const ready = yield* get(health, "/readyz")
      assert.deepInclude(json(ready.body), { status: "ready", ready: true, connected: 2, required: 2 })

      assert.strictEqual((yield* get(health, "/metrics")).status, 404)

      yield* node0.stop
      assert.isTrue(yield* portIsFree(healthPort), "the health port is released on close")
      assert.isTrue(
        Either.isLeft(yield* Effect.either(get(health, "/healthz"))),
        "nothing answers after close"
      )
    })
)

it.scopedLive("port 0 serves on a free port, read back from healthAddress", () =>
  Effect.gen(function* () {
    const [listen] = yield* reservePorts(1)
    const address = `127.0.0.1:${listen}`
    const node = yield* startNode(
      0,
      NodeNetwork.layer({ ...configFor(0, [address]), telemetry: { health: "127.0.0.1:0" } })
    )
    const bound = node.net.healthAddress!
    assert.match(bound, /^127\.0\.0\.1:\d+$/)
    assert.notStrictEqual(bound, "127.0.0.1:0")
    assert.strictEqual((yield* get(bound, "/healthz")).status, 200)
    // A set of one: nobody else is needed.
    assert.strictEqual((yield* get(bound, "/readyz")).status, 200)
  })
)

it.scopedLive("a health address already taken fails the start with StartFailed health", () =>
  Effect.gen(function* () {
    const ports = yield* reservePorts(1)
    const address = `127.0.0.1:${ports[0]}`
    const first = yield* startNode(
      0,
      NodeNetwork.layer({ ...configFor(0, [address]), telemetry: { health: "127.0.0.1:0" } })
    )
    const taken = first.net.healthAddress!
    const [other] = yield* reservePorts(1)
    const exit = yield* Effect.either(
      startNode(
        1,
        NodeNetwork.layer({ ...configFor(1, [address, `127.0.0.1:${other}`]), telemetry: { health: taken } })
      )
    )
    assert.isTrue(Either.isLeft(exit))
    if (Either.isLeft(exit)) {
      assert.strictEqual(exit.left._tag, "StartFailed")
      assert.strictEqual(exit.left._tag === "StartFailed" && exit.left.what, "health")
    }
  })
)
