import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { TransportConfig } from "@hotstuff2/transport"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import type { PeerManager } from "../src/index.js"
import { identity, type Node } from "./fixtures/cluster.js"
import {
  EVENT_DEADLINE,
  holdsFor,
  holdsUntil,
  reservePorts,
  tlsNode,
  tlsValidators,
  waitUntil
} from "./fixtures/tls.js"

const { consensus } = TransportConfig.Channel
const peer = (n: number) => identity(n).peerId
const members = [1, 2, 3, 4]
/** Fast redial, so that reconnections come soon (how soon is measured under TestClock, not here). */
const lifecycle = { redialBase: 100, redialCap: 1000 }

/** What each node sees: for every other member, its connection's id and direction (if any). */
const views = (nodes: ReadonlyArray<Node>, ns: ReadonlyArray<number>) =>
  Effect.forEach(nodes, (node, i) =>
    Effect.forEach(
      ns.filter((n) => n !== ns[i]),
      (n) =>
        Effect.map(node.manager.connection(peer(n)), (c) =>
          Option.map(c, (c) => ({ peer: n, id: c.id, direction: c.direction }))
        )
    )
  )

/** TCP sockets open in this process: the two ends of every connection between the nodes here. */
const openSockets = () => process.getActiveResourcesInfo().filter((r) => r === "TCPSocketWrap").length

/**
 * A full mesh of exactly one connection per pair: every node has every other one connected and
 * nothing else, the two sides of each pair hold opposite ends (one outbound, one inbound), and the
 * process holds exactly two sockets per pair (no duplicate left open on either side).
 */
const meshProblems = (nodes: ReadonlyArray<Node>, ns: ReadonlyArray<number>) =>
  Effect.gen(function* () {
    const problems: Array<string> = []
    for (const [i, node] of nodes.entries()) {
      const connected = [...(yield* node.manager.connected)].sort()
      const expected = ns
        .filter((n) => n !== ns[i])
        .map(peer)
        .sort()
      if (connected.join() !== expected.join()) {
        problems.push(`node ${ns[i]} has ${connected.length} peers connected, expected ${expected.length}`)
      }
    }
    for (let i = 0; i < nodes.length; i++) {
      for (let j = i + 1; j < nodes.length; j++) {
        const mine = yield* nodes[i]!.manager.connection(peer(ns[j]!))
        const theirs = yield* nodes[j]!.manager.connection(peer(ns[i]!))
        if (Option.isNone(mine) || Option.isNone(theirs)) {
          problems.push(`${ns[i]}-${ns[j]}: not connected on both sides`)
        } else if (mine.value.direction === theirs.value.direction) {
          problems.push(`${ns[i]}-${ns[j]}: both sides see ${mine.value.direction}`)
        }
      }
    }
    const sockets = openSockets()
    const pairs = (ns.length * (ns.length - 1)) / 2
    if (sockets !== 2 * pairs) problems.push(`${sockets} sockets open for ${pairs} connections`)
    return problems
  })

/** Waits for the full mesh, then checks that it holds, with the same connections, for 500 ms. */
const awaitStableMesh = (nodes: ReadonlyArray<Node>, ns: ReadonlyArray<number>) =>
  Effect.gen(function* () {
    yield* waitUntil(
      "a full mesh",
      Effect.map(meshProblems(nodes, ns), (p) => p.length === 0)
    ).pipe(
      Effect.catchAll((e) =>
        Effect.flatMap(meshProblems(nodes, ns), (p) =>
          Effect.fail(new Error(`${e.message}: ${p.join("; ")}`))
        )
      )
    )
    const before = yield* views(nodes, ns)
    // Connections flapping (a duplicate kept on one side, closed on the other) would show here.
    yield* holdsFor(
      "the same connections, and no other socket",
      Effect.map(
        Effect.zip(views(nodes, ns), meshProblems(nodes, ns)),
        ([now, problems]) => JSON.stringify(now) === JSON.stringify(before) && problems.length === 0
      ),
      "500 millis"
    )
    const ids = new Set(before.flat().map((v) => Option.getOrThrow(v).id))
    assert.strictEqual(ids.size, ns.length * (ns.length - 1), "one end per node and peer, all distinct")
    assert.deepStrictEqual(yield* meshProblems(nodes, ns), [])
  })

const startAll = (
  ns: ReadonlyArray<number>,
  ports: ReadonlyArray<number>,
  concurrent: boolean,
  config: PeerManager.PeerManagerOptions["config"] = lifecycle
) =>
  Effect.forEach(
    ns,
    (n, i) => tlsNode({ n, port: ports[i]!, validators: tlsValidators(ns, ports), config: config ?? {} }),
    { concurrency: concurrent ? "unbounded" : 1 }
  )

describe("PeerManager over TLS on 127.0.0.1", () => {
  it.scopedLive(
    "four managers reach a full mesh of exactly 6 connections, started one after another",
    () =>
      Effect.gen(function* () {
        const ports = yield* reservePorts(4)
        const nodes = yield* startAll(members, ports, false)
        yield* awaitStableMesh(nodes, members)
      }),
    60_000
  )

  it.scopedLive(
    "four managers started at the same instant reach the same full mesh (simultaneous dials resolved)",
    () =>
      Effect.gen(function* () {
        // A few rounds: each is a fresh race of 12 dials for 6 pairs. A sampler counts the sockets
        // open at the peak, to show that both sides of a pair did dial (duplicates were resolved).
        const peaks: Array<number> = []
        for (let round = 0; round < 3; round++) {
          yield* Effect.scoped(
            Effect.gen(function* () {
              const ports = yield* reservePorts(4)
              let peak = 0
              yield* Effect.acquireRelease(
                Effect.sync(() => setInterval(() => (peak = Math.max(peak, openSockets())), 1)),
                (sampler) => Effect.sync(() => clearInterval(sampler))
              )
              // No dial grace: every node dials every other at once, so that the tie-break is what
              // resolves the duplicates.
              const nodes = yield* startAll(members, ports, true, { ...lifecycle, dialGrace: 0 })
              yield* awaitStableMesh(nodes, members)
              peaks.push(peak)
            })
          )
        }
        assert.isTrue(
          peaks.some((p) => p > 12),
          `some pair dialled each other at once (socket peaks ${peaks}); else the race was not run`
        )
      }),
    120_000
  )

  it.scopedLive(
    "a node stopped and restarted on the same port is redialled by the other three",
    () =>
      Effect.gen(function* () {
        const ports = yield* reservePorts(4)
        const validators = tlsValidators(members, ports)
        const nodes = [...(yield* startAll(members, ports, false))]
        yield* awaitStableMesh(nodes, members)
        const others = nodes.slice(0, 3)
        const seesFourth = Effect.map(
          Effect.forEach(others, (node) => node.manager.connection(peer(4))),
          (cs) => cs.map(Option.isSome)
        )

        // Down for 2 s: the others' redial delays grow to the 1 s cap meanwhile.
        yield* nodes[3]!.stop
        yield* waitUntil(
          "the others notice node 4 is gone",
          Effect.map(seesFourth, (s) => s.every((c) => !c))
        )
        yield* Effect.sleep("2 seconds")

        // Back on the same port, passive (it dials nobody, and admits anyone): only the others'
        // redial loops can bring the connections back.
        const passive = yield* tlsNode({
          n: 4,
          port: ports[3]!,
          validators: validators.filter((v) => v.id === peer(4)),
          config: { ...lifecycle, admitNonValidators: true }
        })
        yield* waitUntil(
          "nodes 1-3 redial node 4 after its restart",
          Effect.map(seesFourth, (s) => s.every((c) => c))
        )
        const directions = yield* Effect.forEach([1, 2, 3], (n) =>
          Effect.map(passive.manager.connection(peer(n)), (c) => Option.getOrThrow(c).direction)
        )
        assert.deepStrictEqual(directions, ["inbound", "inbound", "inbound"], "the others dialled it")

        // Restarted as a full member, the mesh is whole again, one connection per pair.
        yield* passive.stop
        yield* waitUntil(
          "the others notice node 4 is gone again",
          Effect.map(seesFourth, (s) => s.every((c) => !c))
        )
        nodes[3] = yield* tlsNode({ n: 4, port: ports[3]!, validators, config: lifecycle })
        yield* awaitStableMesh(nodes, members)
      }),
    120_000
  )

  it.scopedLive(
    "a peer flooding the consensus channel is penalised and banned, while traffic among the other three flows",
    () =>
      Effect.gen(function* () {
        const config = {
          ...lifecycle,
          rateLimits: [
            { channel: consensus, messagesPerSecond: 200, bytesPerSecond: 64 * 1024 * 1024, burstSeconds: 1 }
          ],
          rateLimitReportInterval: 50,
          banBase: 60_000
        }
        const ports = yield* reservePorts(4)
        const nodes = yield* startAll(members, ports, false, config)
        yield* awaitStableMesh(nodes, members)
        const [victim, flooder] = [nodes[0]!, nodes[1]!]
        const good = [1, 3, 4] // node 1 is the victim, and one of the three good nodes

        // Every good node counts, per sender, the good frames it receives (flood frames ignored).
        const received = new Map<string, number>() // "from>to"
        for (const to of good) {
          yield* nodes[to - 1]!.manager.inbound.pipe(
            Stream.runForEach((frame) =>
              Effect.sync(() => {
                if (frame.peer === peer(2)) return
                const from = members.find((n) => peer(n) === frame.peer)!
                const key = `${from}>${to}`
                received.set(key, (received.get(key) ?? 0) + frame.messages.length)
              })
            ),
            Effect.forkScoped
          )
        }

        // A trickle along each of the 6 directed links among the good nodes: 50 msgs/s, a quarter
        // of the limit, for as long as the flood lasts. `duringFlood`: sends made before the ban.
        let trickling = true
        let flooding = true
        const sent = new Map<string, number>()
        const duringFlood = new Map<string, number>()
        const sendFailures: Array<string> = []
        const trickles = yield* Effect.forEach(good, (from) =>
          Effect.gen(function* () {
            while (trickling) {
              for (const to of good) {
                if (to === from) continue
                const key = `${from}>${to}`
                const result = yield* Effect.either(
                  nodes[from - 1]!.manager.send(peer(to), consensus, [Uint8Array.of(from, to)])
                )
                if (result._tag === "Left") sendFailures.push(`${key}: ${result.left._tag}`)
                else {
                  sent.set(key, (sent.get(key) ?? 0) + 1)
                  if (flooding) duringFlood.set(key, (duringFlood.get(key) ?? 0) + 1)
                }
              }
              yield* Effect.sleep("20 millis")
            }
          }).pipe(Effect.forkScoped)
        )

        // The flood: bursts of 500 one-message frames, a macrotask turn between bursts, until the
        // victim bans the flooder (a guard ends it if that never happens). Full queues
        // (`Backpressure`) are ignored.
        const flood = Uint8Array.from({ length: 64 }, (_, i) => i)
        const guard = Date.now() + Duration.toMillis(EVENT_DEADLINE)
        let bursts = 0
        while (Date.now() < guard && !(yield* victim.registry.isBanned(peer(2)))) {
          for (let i = 0; i < 500; i++)
            yield* Effect.ignore(flooder.manager.send(peer(1), consensus, [flood]))
          bursts++
          yield* Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))
        }
        flooding = false

        const state = Option.getOrThrow(yield* victim.registry.get(peer(2)))
        assert.isTrue(Option.isSome(state.ban), `the flooder is banned (after ${bursts} bursts)`)
        assert.match(Option.getOrThrow(state.ban).reason, /RateLimitExceeded/)
        // The victim closes the connection and refuses the flooder's redials at the handshake.
        yield* waitUntil(
          "the victim drops the flooder's connection",
          Effect.map(victim.manager.connection(peer(2)), Option.isNone)
        )
        yield* holdsFor(
          "the flooder stays disconnected from the victim while it redials",
          Effect.map(victim.manager.connection(peer(2)), Option.isNone),
          "1 second"
        )
        assert.deepStrictEqual(
          [...(yield* victim.manager.connected)].sort(),
          [peer(3), peer(4)].sort(),
          "the victim keeps its good peers"
        )
        // Only the victim was flooded: nobody else holds anything against anyone.
        for (const n of [3, 4]) {
          for (const m of members)
            if (m !== n) assert.isFalse(yield* nodes[n - 1]!.registry.isBanned(peer(m)))
        }
        assert.isFalse(yield* victim.registry.isBanned(peer(3)))
        assert.isFalse(yield* victim.registry.isBanned(peer(4)))

        // Every good frame sent while the flood went on arrived.
        trickling = false
        yield* Effect.forEach(trickles, (f) => f.await, { discard: true })
        assert.deepStrictEqual(sendFailures, [], "no good send failed")
        yield* waitUntil(
          "every good frame is received",
          Effect.sync(() => [...sent].every(([key, n]) => received.get(key) === n))
        ).pipe(
          Effect.catchAll((e) =>
            Effect.fail(new Error(`${e.message}: sent ${[...sent]} received ${[...received]}`))
          )
        )
        // Each link carried good traffic while the flood went on (the ban takes at least 10 reports
        // 50 ms apart: the trickle runs meanwhile), and all of it arrived (above).
        assert.strictEqual(
          duringFlood.size,
          6,
          `links that carried traffic during the flood: ${[...duringFlood]}`
        )
      }),
    90_000
  )

  it.scopedLive(
    "a ban survives a restart with a data directory: the banned peer stays refused",
    () =>
      Effect.gen(function* () {
        const dataDirectory = yield* Effect.acquireRelease(
          Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "hotstuff2-peers-ban-"))),
          (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
        )
        const ports = yield* reservePorts(2)
        const validators = tlsValidators([1, 2], ports)
        const configA = { ...lifecycle, dataDirectory }
        const a1 = yield* tlsNode({ n: 1, port: ports[0]!, validators, config: configA })
        // B redials often (its delays capped at 300 ms), so it knocks on A's door several times below
        // (and at once: B's key is the larger, and the grace it would give A's dial is not what this
        // test is about).
        const b = yield* tlsNode({
          n: 2,
          port: ports[1]!,
          validators,
          config: { ...lifecycle, redialCap: 300, dialGrace: 0 }
        })
        yield* awaitStableMesh([a1, b], [1, 2])

        const bannedAt = Date.now()
        yield* a1.registry.ban(peer(2), "manual ban for the test", "1 hour")
        yield* waitUntil(
          "the ban closes the connection on both sides",
          Effect.map(
            Effect.all([a1.manager.connected, b.manager.connected]),
            ([x, y]) => x.length === 0 && y.length === 0
          )
        )
        yield* a1.stop

        const a2 = yield* tlsNode({ n: 1, port: ports[0]!, validators, config: configA })
        assert.isTrue(yield* a2.registry.isBanned(peer(2)), "the ban was loaded from the data directory")
        const ban = Option.getOrThrow(Option.getOrThrow(yield* a2.registry.get(peer(2))).ban)
        assert.strictEqual(ban.reason, "manual ban for the test")
        assert.isAtLeast(ban.until, bannedAt + 60 * 60 * 1000, "the ban kept its expiry")

        // B keeps redialling A (it holds nothing against A), and A refuses it every time.
        const failures = Effect.map(b.registry.get(peer(1)), (s) =>
          Option.isSome(s) ? s.value.consecutiveFailures : 0
        )
        const failuresBefore = yield* failures
        // Until B has been refused three more times, however long its redials take here.
        yield* holdsUntil(
          "A refuses B",
          Effect.map(
            Effect.all([a2.manager.connection(peer(2)), b.manager.connection(peer(1))]),
            ([x, y]) => Option.isNone(x) && Option.isNone(y)
          ),
          Effect.map(failures, (n) => n - failuresBefore >= 3)
        )
        assert.isTrue(yield* a2.registry.isBanned(peer(2)))
      }),
    90_000
  )
})
