// Bootstrap and gossip under TestClock on the simulated network: nodes that know the validators by key
// only, and where two entry points are, find every validator and form the full mesh.

import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as TestClock from "effect/TestClock"
import {
  address,
  fullMesh,
  id,
  keysOnly,
  type Node,
  startBootstrapped,
  startNode,
  withNetwork
} from "./fixtures/cluster.js"

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i)

/** Advances the clock a second at a time until `done`, at most `seconds`; returns the seconds taken. */
const until = (done: Effect.Effect<boolean>, seconds: number) =>
  Effect.gen(function* () {
    for (let s = 1; s <= seconds; s++) {
      yield* TestClock.adjust("1 second")
      if (yield* done) return s
    }
    return -1
  })

describe("bootstrap and gossip", () => {
  it.scoped(
    "12 validators that know only two entry points (one by key, one by address alone) form the full mesh",
    () =>
      withNetwork(
        { seed: 7 },
        Effect.gen(function* () {
          const { ns, nodes } = yield* startBootstrapped(12)
          const seconds = yield* until(fullMesh(nodes, ns), 120)
          assert.isAbove(seconds, 0, "the mesh formed")
          // A record pushed on a connection that then lost the duplicate tie-break is lost with it:
          // gossip rounds (every 5 s here) fill such gaps.
          yield* TestClock.adjust("30 seconds")
          for (const node of nodes) {
            const stats = yield* node.discovery.stats
            const states = yield* node.registry.all
            const missing = states
              .filter((s) => s.validator && s.addresses.length === 0)
              .map((s) => s.id.slice(0, 6))
            assert.strictEqual(
              stats.validatorsWithAddress,
              11,
              `node ${node.n}: ${JSON.stringify(stats)} missing ${missing}`
            )
          }
        })
      )
  )

  it.scoped("a validator that comes back at a new address is found again through gossip", () =>
    withNetwork(
      { seed: 8 },
      Effect.gen(function* () {
        const ns = range(1, 6)
        const bootstrap = [{ address: address(1), peer: id(1) }]
        const start = (n: number, port?: number) =>
          startNode({
            n,
            validators: keysOnly(ns),
            discovery: { bootstrap: n === 1 ? [] : bootstrap },
            ...(port === undefined ? {} : { port })
          })
        const nodes: Array<Node> = []
        for (const n of ns) nodes.push(yield* start(n))
        assert.isAbove(yield* until(fullMesh(nodes, ns), 120), 0)
        yield* nodes[4]!.stop
        yield* TestClock.adjust("10 seconds")
        nodes[4] = yield* start(5, 9001)
        assert.isAbove(yield* until(fullMesh(nodes, ns), 120), 0, "everyone reconnected to 5")
        yield* TestClock.adjust("30 seconds")
        for (const node of nodes) {
          if (node.n === 5) continue
          const state = Option.getOrThrow(yield* node.registry.get(id(5)))
          const gossip = state.addresses.filter((a) => a.source === "gossip").map((a) => a.address)
          assert.deepStrictEqual(gossip, [address(5, 9001)], `node ${node.n}`)
        }
      })
    )
  )

  it.scoped(
    "anchors: validators connected to are kept in the data directory with an address and come back as anchor addresses",
    () =>
      withNetwork(
        { seed: 9 },
        Effect.gen(function* () {
          const directory = yield* Effect.acquireRelease(
            Effect.promise(() => fs.mkdtemp(path.join(os.tmpdir(), "hotstuff2-anchors-"))),
            (d) => Effect.promise(() => fs.rm(d, { recursive: true, force: true }))
          )
          const ns = range(1, 5)
          const withAddresses = ns.map((n) => ({ id: id(n), addresses: n === 1 ? [] : [address(n)] }))
          const nodes: Array<Node> = []
          // Node 1 knows the others by key only and one entry point: it dials what gossip tells it.
          for (const n of ns) {
            nodes.push(
              yield* startNode(
                n === 1
                  ? {
                      n,
                      validators: keysOnly(ns),
                      discovery: { anchors: 2, bootstrap: [{ address: address(2), peer: id(2) }] },
                      dataDirectory: directory
                    }
                  : { n, validators: withAddresses }
              )
            )
          }
          assert.isAbove(yield* until(fullMesh(nodes, ns), 60), 0)
          yield* TestClock.adjust("1 second")
          const stored = JSON.parse(
            yield* Effect.promise(() => fs.readFile(path.join(directory, "anchors.json"), "utf8"))
          )
          assert.strictEqual(stored.anchors.length, 2)
          for (const a of stored.anchors)
            assert.include(
              withAddresses.map((v) => v.id),
              a.peer
            )
          // Node 1 restarts knowing the validators by key only: its anchors are dialled.
          yield* nodes[0]!.stop
          nodes[0] = yield* startNode({
            n: 1,
            validators: keysOnly(ns),
            discovery: { anchors: 2 },
            dataDirectory: directory
          })
          for (const a of stored.anchors) {
            const state = Option.getOrThrow(yield* nodes[0]!.registry.get(a.peer))
            assert.deepStrictEqual(
              state.addresses.filter((x) => x.source === "anchor").map((x) => x.address),
              [a.address]
            )
          }
          assert.isAbove(yield* until(fullMesh(nodes, ns), 60), 0)
        })
      )
  )
})
