import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Identity } from "@hotstuff2/wire"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import { make, PEERS_FILE } from "../src/internal/registry.js"
import {
  type PeerEvent,
  type PeerId,
  PeerRegistry,
  type PeerRegistryShape,
  type PeerState,
  type ReputationEvent
} from "../src/PeerRegistry.js"
import { defaultReputationWeights, type PeersConfigInput } from "../src/PeersConfig.js"

const peer = (n: number): PeerId => Schema.decodeSync(Identity.PeerId)(n.toString(16).padStart(64, "0"))
const alice = peer(1)
const bob = peer(2)
const carol = peer(3)

const MINUTE = 60_000

/** Runs `body` against a registry built from `config`, closed when `body` ends. */
const withRegistry = <A, E>(
  config: PeersConfigInput,
  body: (registry: PeerRegistryShape) => Effect.Effect<A, E>
): Effect.Effect<A, unknown> =>
  Effect.flatMap(PeerRegistry, body).pipe(Effect.provide(PeerRegistry.layer(config)))

const state = (registry: PeerRegistryShape, id: PeerId): Effect.Effect<PeerState> =>
  Effect.flatMap(registry.get(id), (found) =>
    Option.match(found, { onNone: () => Effect.dieMessage(`no state for ${id}`), onSome: Effect.succeed })
  )

/** Subscribes to `changes` before returning, so that everything done afterwards is seen. */
const collectChanges = (registry: PeerRegistryShape, count: number) =>
  Effect.gen(function* () {
    const fiber = yield* Effect.fork(Stream.runCollect(Stream.take(registry.changes, count)))
    for (let i = 0; i < 5; i++) yield* Effect.yieldNow()
    return Effect.map(Fiber.join(fiber), Chunk.toReadonlyArray)
  })

const reportTimes = (registry: PeerRegistryShape, id: PeerId, event: ReputationEvent, times: number) =>
  Effect.forEach(Array.from({ length: times }), () => registry.report(id, event), { discard: true })

const tempDirectory = Effect.acquireRelease(
  Effect.promise(() => fs.mkdtemp(path.join(os.tmpdir(), "hotstuff2-peers-"))),
  (directory) => Effect.promise(() => fs.rm(directory, { recursive: true, force: true }))
)

describe("PeerRegistry reputation", () => {
  it.effect("applies each event's weight from the config to the score", () =>
    withRegistry({}, (registry) =>
      Effect.gen(function* () {
        const events = Object.keys(defaultReputationWeights) as Array<ReputationEvent>
        for (const [i, event] of events.entries()) {
          const id = peer(100 + i)
          const score = yield* registry.report(id, event)
          assert.strictEqual(score, defaultReputationWeights[event], event)
          assert.strictEqual((yield* state(registry, id)).score, defaultReputationWeights[event], event)
        }
        // Weights add up: -20 (InvalidMessage) - 5 (Timeout) + 1 (UsefulMessage).
        yield* registry.report(alice, "InvalidMessage")
        yield* registry.report(alice, "Timeout")
        assert.strictEqual(yield* registry.report(alice, "UsefulMessage"), -24)
      })
    )
  )

  it.effect("uses configured weights and clamps the score to maxScore", () =>
    withRegistry({ weights: { ...defaultReputationWeights, UsefulMessage: 30 }, maxScore: 100 }, (registry) =>
      Effect.gen(function* () {
        const scores: Array<number> = []
        for (let i = 0; i < 5; i++) scores.push(yield* registry.report(alice, "UsefulMessage"))
        assert.deepStrictEqual(scores, [30, 60, 90, 100, 100])
        assert.strictEqual((yield* state(registry, alice)).score, 100)
      })
    )
  )

  it.effect("decays the score toward neutral, halving every scoreHalfLife", () =>
    withRegistry({ scoreHalfLife: "10 minutes" }, (registry) =>
      Effect.gen(function* () {
        yield* registry.report(alice, "InvalidMessage")
        assert.strictEqual((yield* state(registry, alice)).score, -20)
        yield* TestClock.adjust("10 minutes")
        assert.closeTo((yield* state(registry, alice)).score, -10, 1e-9)
        yield* TestClock.adjust("10 minutes")
        assert.closeTo((yield* state(registry, alice)).score, -5, 1e-9)
        // An event applies to the decayed score.
        assert.closeTo(yield* registry.report(alice, "Timeout"), -10, 1e-9)
        yield* TestClock.adjust("5 minutes")
        assert.closeTo((yield* state(registry, alice)).score, -10 * 0.5 ** 0.5, 1e-9)
      })
    )
  )

  it.effect(
    "bans a peer whose score falls to the threshold, resets its score, and lifts the ban after banBase",
    () =>
      withRegistry({ banThreshold: -100, banBase: "1 minute" }, (registry) =>
        Effect.gen(function* () {
          assert.strictEqual(yield* registry.report(alice, "BadSignature"), -50)
          assert.isFalse(yield* registry.isBanned(alice))
          assert.strictEqual(yield* registry.report(alice, "BadSignature"), -100)
          assert.isTrue(yield* registry.isBanned(alice))
          const banned = yield* state(registry, alice)
          assert.strictEqual(banned.score, 0)
          assert.strictEqual(banned.banCount, 1)
          const ban = Option.getOrThrow(banned.ban)
          assert.strictEqual(ban.until, MINUTE)
          assert.strictEqual(ban.count, 1)
          // What a banned peer still sends does not count against its fresh start.
          assert.strictEqual(yield* registry.report(alice, "ProtocolViolation"), 0)

          yield* TestClock.adjust(MINUTE - 1)
          assert.isTrue(yield* registry.isBanned(alice))
          yield* TestClock.adjust(1)
          assert.isFalse(yield* registry.isBanned(alice))
          const after = yield* state(registry, alice)
          assert.isTrue(Option.isNone(after.ban))
          assert.strictEqual(after.banCount, 1)
          assert.strictEqual(after.score, 0)
          assert.strictEqual(yield* registry.report(alice, "Timeout"), -5)
        })
      )
  )

  it.effect("makes each ban longer: banBase, banBase * banFactor, then capped at banCap", () =>
    withRegistry({ banBase: "1 minute", banFactor: 4, banCap: "10 minutes" }, (registry) =>
      Effect.gen(function* () {
        const durations: Array<number> = []
        for (let i = 0; i < 3; i++) {
          assert.isFalse(yield* registry.isBanned(alice))
          yield* reportTimes(registry, alice, "BadSignature", 2)
          const ban = Option.getOrThrow((yield* state(registry, alice)).ban)
          assert.strictEqual(ban.count, i + 1)
          const now = yield* Clock.currentTimeMillis
          durations.push(ban.until - now)
          yield* TestClock.adjust(ban.until - now)
        }
        assert.deepStrictEqual(durations, [MINUTE, 4 * MINUTE, 10 * MINUTE])
        // A manual ban without a duration escalates too (64 minutes, capped).
        yield* registry.ban(alice, "operator")
        const manual = Option.getOrThrow((yield* state(registry, alice)).ban)
        assert.strictEqual(manual.count, 4)
        assert.strictEqual(manual.until - (yield* Clock.currentTimeMillis), 10 * MINUTE)
      })
    )
  )

  it.effect(
    "never bans a validator longer than banCap, even 'forever', while a non-validator's infinite ban holds",
    () =>
      withRegistry({ banCap: "1 hour" }, (registry) =>
        Effect.gen(function* () {
          yield* registry.setValidators([alice])
          yield* registry.ban(alice, "operator", Duration.infinity)
          yield* registry.ban(bob, "operator", Duration.infinity)
          assert.strictEqual(Option.getOrThrow((yield* state(registry, alice)).ban).until, 60 * MINUTE)
          assert.strictEqual(
            Option.getOrThrow((yield* state(registry, bob)).ban).until,
            Number.POSITIVE_INFINITY
          )
          assert.isTrue((yield* state(registry, alice)).validator)
          assert.isFalse((yield* state(registry, bob)).validator)

          yield* TestClock.adjust("1 hour")
          assert.isFalse(yield* registry.isBanned(alice))
          assert.isTrue(yield* registry.isBanned(bob))
          yield* TestClock.adjust(Duration.days(3650))
          assert.isTrue(yield* registry.isBanned(bob))

          // A peer banned forever that joins the validator set is let back within banCap.
          yield* registry.setValidators([alice, bob])
          assert.strictEqual(
            Option.getOrThrow((yield* state(registry, bob)).ban).until,
            (yield* Clock.currentTimeMillis) + 60 * MINUTE
          )
          yield* TestClock.adjust("1 hour")
          assert.isFalse(yield* registry.isBanned(bob))
        })
      )
  )

  it.effect("gives the exact final score under 100 concurrent reports, published in the order applied", () =>
    withRegistry(
      {
        weights: { ...defaultReputationWeights, UsefulMessage: 1, Timeout: -3 },
        maxScore: 1_000_000,
        banThreshold: -1_000_000
      },
      (registry) =>
        Effect.gen(function* () {
          const changes = yield* collectChanges(registry, 100)
          const events = Array.from(
            { length: 100 },
            (_, i): ReputationEvent => (i % 2 === 0 ? "UsefulMessage" : "Timeout")
          )
          const returned = yield* Effect.forEach(events, (event) => registry.report(alice, event), {
            concurrency: 50
          })
          assert.strictEqual((yield* state(registry, alice)).score, -100)
          // Each published score is the previous one plus that event's weight, ending at the final
          // score; and each report returned the score it published.
          const published = yield* changes
          const sorted = (scores: ReadonlyArray<number>) => [...scores].sort((a, b) => a - b)
          assert.deepStrictEqual(
            sorted(returned),
            sorted(published.map((e) => (e._tag === "ScoreChanged" ? e.score : Number.NaN)))
          )
          let previous = 0
          for (const event of published) {
            assert.strictEqual(event._tag, "ScoreChanged")
            if (event._tag !== "ScoreChanged") continue
            assert.strictEqual(event.score, previous + (event.event === "UsefulMessage" ? 1 : -3))
            previous = event.score
          }
          assert.strictEqual(previous, -100)
        })
    )
  )
})

describe("PeerRegistry changes", () => {
  it.effect("publishes Discovered, Connected, ScoreChanged, Disconnected, Banned, Unbanned in order", () =>
    withRegistry({}, (registry) =>
      Effect.gen(function* () {
        const changes = yield* collectChanges(registry, 6)
        yield* registry.addAddress(alice, "10.0.0.1:7000", "config")
        yield* registry.setConnection(alice, "connected", { address: "10.0.0.1:7000", direction: "outbound" })
        yield* registry.report(alice, "InvalidMessage")
        yield* registry.setConnection(alice, "disconnected", { reason: "misbehaved" })
        yield* registry.ban(alice, "operator", "5 minutes")
        yield* registry.unban(alice)
        const events = yield* changes
        assert.deepStrictEqual(events, [
          { _tag: "Discovered", peer: alice, address: "10.0.0.1:7000", source: "config" },
          { _tag: "Connected", peer: alice, address: "10.0.0.1:7000", direction: "outbound" },
          { _tag: "ScoreChanged", peer: alice, score: -20, event: "InvalidMessage" },
          { _tag: "Disconnected", peer: alice, reason: "misbehaved" },
          { _tag: "Banned", peer: alice, until: 5 * MINUTE, reason: "operator", count: 1 },
          { _tag: "Unbanned", peer: alice }
        ] satisfies Array<PeerEvent>)
        assert.isFalse(yield* registry.isBanned(alice))
      })
    )
  )

  it.effect("publishes Unbanned when a ban runs out on the clock, without anyone reading", () =>
    withRegistry({}, (registry) =>
      Effect.gen(function* () {
        const changes = yield* collectChanges(registry, 2)
        yield* registry.ban(alice, "operator", "2 minutes")
        yield* TestClock.adjust("2 minutes")
        const events = yield* changes
        assert.deepStrictEqual(
          events.map((e) => e._tag),
          ["Banned", "Unbanned"]
        )
      })
    )
  )

  it.effect("publishes Connected and Disconnected only on actual transitions", () =>
    withRegistry({}, (registry) =>
      Effect.gen(function* () {
        const changes = yield* collectChanges(registry, 3)
        yield* registry.setConnection(alice, "connecting")
        yield* registry.setConnection(alice, "connected", { address: "a:1", direction: "inbound" })
        yield* registry.setConnection(alice, "connected", { address: "a:1", direction: "inbound" })
        yield* registry.setConnection(alice, "disconnected", { reason: "eof" })
        yield* registry.setConnection(alice, "disconnected", { reason: "eof" })
        yield* registry.addAddress(bob, "b:1", "gossip") // a marker: the third event
        const events = yield* changes
        assert.deepStrictEqual(
          events.map((e) => e._tag),
          ["Connected", "Disconnected", "Discovered"]
        )
        assert.strictEqual((yield* state(registry, alice)).connection, "disconnected")
      })
    )
  )
})

describe("PeerRegistry addresses and health", () => {
  it.effect("deduplicates addresses and keeps their source", () =>
    withRegistry({}, (registry) =>
      Effect.gen(function* () {
        const changes = yield* collectChanges(registry, 2)
        yield* registry.addAddress(alice, "a:1", "gossip")
        yield* registry.addAddress(alice, "a:1", "gossip")
        yield* registry.addAddress(alice, "a:1", "inbound")
        yield* registry.addAddress(alice, "a:2", "config")
        const events = yield* changes
        assert.deepStrictEqual(
          events.map((e) => (e._tag === "Discovered" ? e.address : e._tag)),
          ["a:1", "a:2"]
        )
        const addresses = (yield* state(registry, alice)).addresses
        assert.deepStrictEqual(
          addresses.map((a) => [a.address, a.source]),
          [
            ["a:1", "gossip"],
            ["a:2", "config"]
          ]
        )
      })
    )
  )

  it.effect(
    "gossip never pushes out an operator's address (config, bootstrap, DNS, anchor); replacing one source's addresses leaves the others",
    () =>
      withRegistry({ maxAddressesPerPeer: 4 }, (registry) =>
        Effect.gen(function* () {
          yield* registry.addAddress(alice, "a:1", "config")
          yield* registry.addAddress(alice, "a:2", "bootstrap")
          yield* registry.addAddress(alice, "a:3", "dns")
          yield* registry.addAddress(alice, "a:4", "anchor")
          // Full of protected addresses, all failing: gossip still finds no room.
          for (const a of ["a:1", "a:2", "a:3", "a:4"]) yield* registry.recordDial(alice, a, false)
          for (let i = 0; i < 10; i++) yield* registry.addAddress(alice, `g:${i}`, "gossip")
          const sources = (yield* state(registry, alice)).addresses.map((a) => [a.address, a.source])
          assert.deepStrictEqual(sources, [
            ["a:1", "config"],
            ["a:2", "bootstrap"],
            ["a:3", "dns"],
            ["a:4", "anchor"]
          ])

          // On another peer gossip fills the room; an operator's address then pushes a failing one out.
          for (let i = 0; i < 4; i++) yield* registry.addAddress(bob, `g:${i}`, "gossip")
          yield* registry.recordDial(bob, "g:0", false)
          yield* registry.addAddress(bob, "d:1", "dns")
          assert.deepStrictEqual(
            (yield* state(registry, bob)).addresses.map((a) => a.address),
            ["g:1", "g:2", "g:3", "d:1"]
          )
          // A newer record: its addresses replace the gossip ones, the DNS one stays.
          yield* registry.replaceAddresses(bob, "gossip", ["g:3", "g:9"])
          assert.deepStrictEqual(
            (yield* state(registry, bob)).addresses.map((a) => [a.address, a.source]),
            [
              ["g:3", "gossip"],
              ["d:1", "dns"],
              ["g:9", "gossip"]
            ]
          )
          // A new DNS answer replaces the DNS address and leaves gossip's.
          yield* registry.replaceAddresses(bob, "dns", [])
          assert.deepStrictEqual(
            (yield* state(registry, bob)).addresses.map((a) => a.address),
            ["g:3", "g:9"]
          )
        })
      )
  )

  it.effect("orders dial addresses healthiest first and moves a failing address behind a healthy one", () =>
    withRegistry({}, (registry) =>
      Effect.gen(function* () {
        yield* registry.addAddress(alice, "a:1", "config")
        yield* registry.addAddress(alice, "a:2", "config")
        yield* registry.addAddress(alice, "a:3", "gossip")
        assert.deepStrictEqual(yield* registry.dialOrder(alice), ["a:1", "a:2", "a:3"])

        // a:1 keeps failing: it goes behind the untried ones.
        for (let i = 0; i < 3; i++) yield* registry.recordDial(alice, "a:1", false)
        assert.deepStrictEqual(yield* registry.dialOrder(alice), ["a:2", "a:3", "a:1"])
        assert.strictEqual((yield* state(registry, alice)).consecutiveFailures, 3)

        // A success puts an address first, and resets the peer's consecutive failures.
        yield* TestClock.adjust("1 second")
        yield* registry.recordDial(alice, "a:3", true)
        assert.deepStrictEqual(yield* registry.dialOrder(alice), ["a:3", "a:2", "a:1"])
        assert.strictEqual((yield* state(registry, alice)).consecutiveFailures, 0)

        // The most recent success comes first.
        yield* TestClock.adjust("1 second")
        yield* registry.recordDial(alice, "a:2", true)
        assert.deepStrictEqual(yield* registry.dialOrder(alice), ["a:2", "a:3", "a:1"])

        // A healthy address that now fails goes behind the other healthy one.
        yield* TestClock.adjust("1 second")
        yield* registry.recordDial(alice, "a:2", false)
        assert.deepStrictEqual(yield* registry.dialOrder(alice), ["a:3", "a:2", "a:1"])
        const a2 = (yield* state(registry, alice)).addresses.find((a) => a.address === "a:2")!
        assert.deepStrictEqual([a2.lastSuccess, a2.lastFailure, a2.failures], [2000, 3000, 1])

        // The failed one recovers once it succeeds again.
        yield* TestClock.adjust("1 second")
        yield* registry.recordDial(alice, "a:1", true)
        assert.deepStrictEqual(yield* registry.dialOrder(alice), ["a:1", "a:3", "a:2"])
      })
    )
  )

  it.effect("alternates between addresses that fail, so that none is hammered", () =>
    withRegistry({}, (registry) =>
      Effect.gen(function* () {
        yield* registry.addAddress(alice, "a:1", "config")
        yield* registry.addAddress(alice, "a:2", "config")
        const tried: Array<string> = []
        for (let i = 0; i < 4; i++) {
          const [first] = yield* registry.dialOrder(alice)
          tried.push(first)
          yield* registry.recordDial(alice, first, false)
        }
        assert.deepStrictEqual(tried, ["a:1", "a:2", "a:1", "a:2"])
      })
    )
  )

  it.effect("sets lastSeen on touch and smooths RTT as an EWMA (first sample as is)", () =>
    withRegistry({ rttSmoothing: 0.2 }, (registry) =>
      Effect.gen(function* () {
        yield* TestClock.adjust("5 seconds")
        yield* registry.touch(alice)
        assert.strictEqual((yield* state(registry, alice)).lastSeen, 5000)
        yield* registry.recordRtt(alice, 100)
        assert.strictEqual((yield* state(registry, alice)).rtt, 100)
        yield* registry.recordRtt(alice, 200)
        assert.closeTo((yield* state(registry, alice)).rtt!, 120, 1e-9)
        yield* registry.recordRtt(alice, Number.NaN)
        assert.closeTo((yield* state(registry, alice)).rtt!, 120, 1e-9)
      })
    )
  )

  it.scoped("forgets the least recently seen idle non-validator past the peer limit", () =>
    Effect.gen(function* () {
      const registry = yield* make({}, { maxNonValidatorPeers: 3 })
      yield* registry.setValidators([peer(9)])
      yield* registry.setConnection(alice, "connected") // t=0, connected: kept
      yield* TestClock.adjust(1)
      yield* registry.touch(bob) // t=1: the least recently seen idle peer
      yield* TestClock.adjust(1)
      yield* registry.ban(carol, "operator", "1 hour") // t=2: banned, kept while idle peers exist
      yield* TestClock.adjust(1)
      yield* registry.addAddress(peer(4), "d:1", "gossip") // t=3: fourth non-validator
      const ids = (yield* registry.all).map((s) => s.id)
      assert.deepStrictEqual(ids, [peer(9), alice, carol, peer(4)])
      yield* TestClock.adjust(1)
      yield* registry.touch(peer(5)) // forgets peer(4), the only idle one left
      assert.deepStrictEqual(
        (yield* registry.all).map((s) => s.id),
        [peer(9), alice, carol, peer(5)]
      )
    })
  )

  it.scoped("refuses an invalid config with InvalidPeersConfig naming the field", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(Layer.build(PeerRegistry.layer({ banFactor: 0.5 })))
      assert.strictEqual(error._tag, "InvalidPeersConfig")
      assert.strictEqual(error.field, "banFactor")
    })
  )
})

describe("PeerRegistry persistence", () => {
  it.scoped("keeps bans and the address book across a restart on the same data directory", () =>
    Effect.gen(function* () {
      const directory = yield* tempDirectory
      const config = { dataDirectory: directory, banBase: "1 minute" } satisfies PeersConfigInput

      yield* withRegistry(config, (registry) =>
        Effect.gen(function* () {
          yield* registry.addAddress(alice, "a:1", "config")
          yield* registry.addAddress(alice, "a:2", "gossip")
          yield* TestClock.adjust(10)
          yield* registry.recordDial(alice, "a:1", false)
          yield* registry.recordDial(alice, "a:2", true)
          yield* reportTimes(registry, alice, "BadSignature", 2) // banned until 60_010
          yield* registry.ban(bob, "operator", Duration.infinity)
          yield* registry.addAddress(carol, "c:1", "gossip")
        })
      )

      const files = yield* Effect.promise(() => fs.readdir(directory))
      assert.deepStrictEqual(files, [PEERS_FILE]) // no temp file left behind
      const json = JSON.parse(
        yield* Effect.promise(() => fs.readFile(path.join(directory, PEERS_FILE), "utf8"))
      )
      assert.strictEqual(json.version, 1)

      yield* withRegistry(config, (registry) =>
        Effect.gen(function* () {
          assert.isTrue(yield* registry.isBanned(alice))
          assert.isTrue(yield* registry.isBanned(bob))
          assert.isFalse(yield* registry.isBanned(carol))
          const a = yield* state(registry, alice)
          assert.deepStrictEqual(Option.getOrThrow(a.ban), {
            until: MINUTE + 10,
            reason: Option.getOrThrow(a.ban).reason,
            count: 1
          })
          assert.strictEqual(a.banCount, 1)
          assert.deepStrictEqual(a.addresses, [
            { address: "a:1", source: "config", lastSuccess: undefined, lastFailure: 10, failures: 1 },
            { address: "a:2", source: "gossip", lastSuccess: 10, lastFailure: undefined, failures: 0 }
          ])
          assert.deepStrictEqual(yield* registry.dialOrder(alice), ["a:2", "a:1"])
          assert.strictEqual(
            Option.getOrThrow((yield* state(registry, bob)).ban).until,
            Number.POSITIVE_INFINITY
          )
          assert.deepStrictEqual(yield* registry.dialOrder(carol), ["c:1"])

          // The loaded ban still ends on the clock, escalation continues from the stored count.
          yield* TestClock.adjust(MINUTE)
          assert.isFalse(yield* registry.isBanned(alice))
          assert.isTrue(yield* registry.isBanned(bob))
          yield* registry.ban(alice, "operator")
          assert.strictEqual(Option.getOrThrow((yield* state(registry, alice)).ban).count, 2)
        })
      )
    })
  )

  it.scoped("creates a missing data directory", () =>
    Effect.gen(function* () {
      const directory = path.join(yield* tempDirectory, "nested", "peers")
      yield* withRegistry({ dataDirectory: directory }, (registry) =>
        registry.addAddress(alice, "a:1", "config")
      )
      const json = JSON.parse(
        yield* Effect.promise(() => fs.readFile(path.join(directory, PEERS_FILE), "utf8"))
      )
      assert.deepStrictEqual(json.peers[0].addresses[0].address, "a:1")
    })
  )

  for (const [what, content] of [
    ["bad JSON", "{ this is not json"],
    [
      "a PeerId that is not 64 lowercase hex",
      JSON.stringify({ version: 1, peers: [{ id: "ABC", banCount: 0, addresses: [] }] })
    ],
    ["a wrong shape", JSON.stringify({ version: 1, peers: [{ id: alice, banCount: -1, addresses: "a:1" }] })]
  ] as const) {
    it.scoped(`sets a corrupt file (${what}) aside and starts empty`, () =>
      Effect.gen(function* () {
        const directory = yield* tempDirectory
        const file = path.join(directory, PEERS_FILE)
        yield* Effect.promise(() => fs.writeFile(file, content))

        yield* withRegistry({ dataDirectory: directory }, (registry) =>
          Effect.gen(function* () {
            assert.deepStrictEqual(yield* registry.all, [])
            assert.isFalse(yield* registry.isBanned(alice))
          })
        )
        const files = yield* Effect.promise(() => fs.readdir(directory))
        assert.deepStrictEqual(files, [`${PEERS_FILE}.corrupt-0`])
        assert.strictEqual(yield* Effect.promise(() => fs.readFile(`${file}.corrupt-0`, "utf8")), content)

        // The registry works and writes a fresh file.
        yield* withRegistry({ dataDirectory: directory }, (registry) =>
          registry.ban(alice, "operator", "1 hour")
        )
        yield* withRegistry({ dataDirectory: directory }, (registry) =>
          Effect.map(registry.isBanned(alice), (banned) => assert.isTrue(banned))
        )
      })
    )
  }
})
