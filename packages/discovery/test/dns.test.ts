// The DNS source against a real DNS server on 127.0.0.1 (UDP and TCP on one port): SRV names to dial
// addresses, host names to IPs, re-resolution, and every bad answer (failing, slow, silent, huge,
// pointing at addresses nobody should dial) refused or survived with the last good answer, counted.
// Real sockets: each test waits for the event it needs (an answer, a query at the server) under a
// generous deadline and never asserts a duration. The interval tests drive the loop with TestClock.
import { assert, describe, it } from "@effect/vitest"
import { DnsServer } from "@hotstuff2/testing"
import * as Chunk from "effect/Chunk"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as HashMap from "effect/HashMap"
import * as Logger from "effect/Logger"
import * as Queue from "effect/Queue"
import * as Schema from "effect/Schema"
import * as TestClock from "effect/TestClock"
import { DnsConfig } from "../src/DiscoveryConfig.js"
import * as Dns from "../src/internal/dns.js"

const SERVICE = "validators.hotstuff.test"
const SRV = `_p2p._tcp.${SERVICE}`
/** Far above any wait here: a test that waits this long has failed. */
const DEADLINE_MS = 15_000

const decodeDns = Schema.decodeUnknownSync(DnsConfig)

/** Waits `ms` of real time, whatever clock the test runs on. */
const realDelay = (ms: number) =>
  Effect.async<void>((resume) => {
    const timer = setTimeout(() => resume(Effect.void), ms)
    return Effect.sync(() => clearTimeout(timer))
  })

/** `effect`, or a failure naming what never happened, after `DEADLINE_MS` of real time. */
const within = <A, E, R>(what: string, effect: Effect.Effect<A, E, R>) =>
  Effect.raceFirst(
    effect,
    Effect.zipRight(realDelay(DEADLINE_MS), Effect.fail(new Error(`gave up waiting for ${what}`)))
  )

/** Pods 0..count-1 of the headless Service, pod i at 10.0.0.(i+1) unless told otherwise. */
const service = (count: number, options: { ttl?: number; address?: (i: number) => string } = {}) =>
  DnsServer.headlessService({
    service: SERVICE,
    count,
    port: 9000,
    address: options.address ?? ((i) => `10.0.0.${i + 1}`),
    ...(options.ttl === undefined ? {} : { ttl: options.ttl })
  }).records

interface Started {
  readonly source: Dns.DnsSource
  /** The `onAnswer` calls for a name, in order. */
  readonly answers: (name: string) => Queue.Queue<ReadonlyArray<Dns.DnsTarget>>
  /** Done when the stalled first `onAnswer` call (`stallFirstAnswer`) has begun. */
  readonly stalled: Deferred.Deferred<void>
}

/** The DNS source asking `server`, its answers queued. Rounds are an hour apart unless told otherwise. */
const start = (
  server: DnsServer.DnsServer,
  options: {
    readonly dns?: Record<string, unknown>
    readonly hosts?: ReadonlyArray<string>
    readonly allowLoopback?: boolean
    /** The first `onAnswer` call never returns (a stuck consumer). */
    readonly stallFirstAnswer?: boolean
  } = {}
) =>
  Effect.gen(function* () {
    let calls = 0
    const stalled = yield* Deferred.make<void>()
    const byName = new Map<string, Queue.Queue<ReadonlyArray<Dns.DnsTarget>>>()
    const answers = (name: string) => {
      let queue = byName.get(name)
      if (queue === undefined) {
        queue = Effect.runSync(Queue.unbounded<ReadonlyArray<Dns.DnsTarget>>())
        byName.set(name, queue)
      }
      return queue
    }
    const source = yield* Dns.make({
      config: decodeDns({
        srv: [SRV],
        servers: [server.address],
        timeout: "500 millis",
        tries: 1,
        minInterval: "1 hour",
        maxInterval: "1 hour",
        ...options.dns
      }),
      hosts: options.hosts ?? [],
      allowLoopback: options.allowLoopback ?? false,
      onAnswer: (name, targets) =>
        options.stallFirstAnswer && calls++ === 0
          ? Effect.zipRight(Deferred.succeed(stalled, undefined), Effect.never)
          : Queue.offer(answers(name), targets)
    })
    return { source, answers, stalled } satisfies Started
  })

/** The next answer given for `name`. */
const nextAnswer = (started: Started, name: string) =>
  within(`an answer for ${name}`, Queue.take(started.answers(name)))

const addressesOf = (targets: ReadonlyArray<Dns.DnsTarget>) => targets.map((t) => t.address)

/** Warning-level log lines, with their annotations, of the effects `layer` is provided to. */
const capturingWarnings = () => {
  const lines: Array<{ readonly message: string; readonly annotations: Record<string, unknown> }> = []
  const layer = Logger.replace(
    Logger.defaultLogger,
    Logger.make(({ annotations, logLevel, message }) => {
      if (logLevel._tag !== "Warning") return
      lines.push({
        message: (Array.isArray(message) ? message : [message]).join(" "),
        annotations: Object.fromEntries(HashMap.toEntries(annotations))
      })
    })
  )
  return { lines, layer }
}

/**
 * Waits (real time) until a fiber sleeps until `at` on the TestClock: the loop once its round is
 * over, or a deadline's timer. (TestClock keeps the wake-ups of interrupted sleeps until they pass.)
 */
const awaitSleepUntil = (at: number) =>
  Effect.gen(function* () {
    const deadline = Date.now() + DEADLINE_MS
    while (true) {
      const sleeps = yield* TestClock.sleeps()
      if (Chunk.some(sleeps, (wake) => wake === at)) return
      if (Date.now() > deadline) {
        return yield* Effect.fail(
          new Error(`the loop never slept until ${at} ms; pending wake-ups: ${Chunk.toReadonlyArray(sleeps)}`)
        )
      }
      yield* realDelay(5)
    }
  })

describe("DNS source", () => {
  it.scopedLive(
    "resolves SRV targets to ip:port dial addresses tagged with the target, and host names to IPs",
    () =>
      Effect.gen(function* () {
        const server = yield* DnsServer.make({ records: service(3) })
        const host = `validator-1.${SERVICE}`
        const started = yield* start(server, { hosts: [host] })

        assert.deepStrictEqual(yield* nextAnswer(started, SRV), [
          { name: SRV, target: `validator-0.${SERVICE}`, address: "10.0.0.1:9000" },
          { name: SRV, target: `validator-1.${SERVICE}`, address: "10.0.0.2:9000" },
          { name: SRV, target: `validator-2.${SERVICE}`, address: "10.0.0.3:9000" }
        ])
        assert.deepStrictEqual(yield* nextAnswer(started, host), [
          { name: host, target: host, address: "10.0.0.2" }
        ])
        assert.deepStrictEqual([...(yield* started.source.current).keys()].sort(), [SRV, host].sort())
        const stats = yield* started.source.stats
        assert.strictEqual(stats.failures, 0)
        assert.isAtLeast(yield* server.count({ type: "SRV", name: SRV }), 1)
      })
  )

  it.scopedLive("AAAA: IPv6 dial addresses in brackets, beside A for a dual-stack target", () =>
    Effect.gen(function* () {
      const target = `validator-0.${SERVICE}`
      const v6only = `validator-1.${SERVICE}`
      const server = yield* DnsServer.make({
        records: [
          { type: "SRV", name: SRV, target, port: 9000 },
          { type: "SRV", name: SRV, target: v6only, port: 9001 },
          { type: "A", name: target, address: "10.0.0.1" },
          { type: "AAAA", name: target, address: "fd00::1" },
          { type: "AAAA", name: v6only, address: "2001:db8::7" }
        ]
      })
      const started = yield* start(server, { hosts: [v6only] })
      assert.deepStrictEqual(addressesOf(yield* nextAnswer(started, SRV)), [
        "10.0.0.1:9000",
        "[fd00::1]:9000",
        "[2001:db8::7]:9001"
      ])
      assert.deepStrictEqual(addressesOf(yield* nextAnswer(started, v6only)), ["2001:db8::7"])
      // The IPv6-only host's A query had an empty answer (NODATA): not a failure.
      assert.strictEqual((yield* started.source.stats).failures, 0)
    })
  )

  it.scopedLive("re-resolves on its interval and picks up a changed record set", () =>
    Effect.gen(function* () {
      const server = yield* DnsServer.make({ records: service(2, { ttl: 0 }) })
      const started = yield* start(server, { dns: { minInterval: "100 millis", maxInterval: "100 millis" } })
      assert.deepStrictEqual(addressesOf(yield* nextAnswer(started, SRV)), ["10.0.0.1:9000", "10.0.0.2:9000"])

      // Pod 0 leaves, pod 2 joins, pod 1 moves: the next answer is the new set, with no refresh asked.
      yield* server.update(service(3, { ttl: 0, address: (i) => `10.0.1.${i + 1}` }).slice(2))
      assert.deepStrictEqual(addressesOf(yield* nextAnswer(started, SRV)), ["10.0.1.2:9000", "10.0.1.3:9000"])
    })
  )

  it.scopedLive(
    "a failing server (SERVFAIL, NXDOMAIN, REFUSED) leaves the last good answer, counted and logged once",
    () => {
      const warnings = capturingWarnings()
      return Effect.gen(function* () {
        const host = `validator-0.${SERVICE}`
        const server = yield* DnsServer.make({ records: service(2) })
        const started = yield* start(server, { hosts: [host] })
        const good = yield* nextAnswer(started, SRV)
        yield* nextAnswer(started, host)
        const before = yield* started.source.stats

        for (const rcode of ["SERVFAIL", "NXDOMAIN", "REFUSED"] as const) {
          yield* server.behave({ rcode })
          yield* started.source.refresh
          yield* started.source.refresh
        }
        const stats = yield* started.source.stats
        // Each round: the SRV query, and A and AAAA for the host and for each of the two targets.
        assert.strictEqual(stats.failures - before.failures, 6 * 7)
        assert.strictEqual(stats.rounds - before.rounds, 6)
        const current = yield* started.source.current
        assert.deepStrictEqual(current.get(SRV), good)
        assert.deepStrictEqual(addressesOf(current.get(host) ?? []), ["10.0.0.1"])
        assert.strictEqual(
          yield* Queue.size(started.answers(SRV)),
          0,
          "no answer was given while the server failed"
        )
        assert.strictEqual(yield* Queue.size(started.answers(host)), 0)

        // Logged when a query starts failing and when its code changes, not at every round.
        const srvWarnings = warnings.lines.filter(
          (line) => line.annotations.name === SRV && line.annotations.type === "SRV"
        )
        assert.deepStrictEqual(
          srvWarnings.map((line) => line.annotations.code),
          ["ESERVFAIL", "ENOTFOUND", "EREFUSED"]
        )

        // Back to health: the new record set is taken.
        yield* server.behave({})
        yield* server.update(service(1, { address: () => "10.0.9.9" }))
        yield* started.source.refresh
        assert.deepStrictEqual(addressesOf(yield* nextAnswer(started, SRV)), ["10.0.9.9:9000"])
      }).pipe(Effect.provide(warnings.layer))
    }
  )

  it.scopedLive("a slow server times out (node:dns timeout), counted, the last good answer kept", () => {
    const warnings = capturingWarnings()
    return Effect.gen(function* () {
      const server = yield* DnsServer.make({ records: service(1) })
      const started = yield* start(server, { dns: { timeout: "200 millis", tries: 1 } })
      const good = yield* nextAnswer(started, SRV)

      yield* server.behave({ delay: "5 seconds", names: [SRV] })
      yield* started.source.refresh
      const stats = yield* started.source.stats
      assert.strictEqual(stats.failures, 1, "the SRV query timed out (its targets, asked again, answered)")
      assert.deepStrictEqual((yield* started.source.current).get(SRV), good)
      assert.deepStrictEqual(
        warnings.lines.map((line) => [line.annotations.type, line.annotations.code]),
        [["SRV", "ETIMEOUT"]]
      )
    }).pipe(Effect.provide(warnings.layer))
  })

  it.scopedLive(
    "a huge answer comes over TCP and is cut to maxRecords; the rest counted, never resolved",
    () =>
      Effect.gen(function* () {
        const server = yield* DnsServer.make({ records: service(60) })
        const started = yield* start(server, { dns: { maxRecords: 5 } })

        const targets = yield* nextAnswer(started, SRV)
        // The first five in a stable order (by priority, then name), whatever order the server used.
        assert.deepStrictEqual(
          targets.map((t) => t.target),
          [0, 1, 10, 11, 12].map((i) => `validator-${i}.${SERVICE}`)
        )
        assert.strictEqual((yield* started.source.stats).truncated, 55)
        assert.isAtLeast(yield* server.count({ type: "SRV", protocol: "udp" }), 1)
        assert.isAtLeast(
          yield* server.count({ type: "SRV", protocol: "tcp" }),
          1,
          "the answer was retried over TCP"
        )
        assert.strictEqual(yield* server.count({ type: "A" }), 5, "only the kept targets were resolved")
        assert.strictEqual(yield* server.count({ type: "AAAA" }), 5)
      })
  )

  it.scopedLive(
    "refuses loopback, unspecified, multicast and link-local answers (loopback only when allowed)",
    () =>
      Effect.gen(function* () {
        const target = `validator-0.${SERVICE}`
        const bad = ["127.0.0.1", "0.0.0.0", "224.0.0.1", "169.254.1.1"]
        const badV6 = ["::1", "::ffff:127.0.0.2", "::", "ff02::1", "fe80::1"]
        const server = yield* DnsServer.make({
          records: [
            { type: "SRV", name: SRV, target, port: 9000 },
            ...[...bad, "10.0.0.1"].map((address) => ({ type: "A" as const, name: target, address })),
            ...[...badV6, "fd00::1"].map((address) => ({ type: "AAAA" as const, name: target, address }))
          ]
        })

        const strict = yield* start(server, { hosts: [target] })
        assert.deepStrictEqual(addressesOf(yield* nextAnswer(strict, SRV)), [
          "10.0.0.1:9000",
          "[fd00::1]:9000"
        ])
        assert.deepStrictEqual(addressesOf(yield* nextAnswer(strict, target)), ["10.0.0.1", "fd00::1"])
        // Counted once for the SRV name's target and once for the host.
        assert.deepStrictEqual((yield* strict.source.stats).refused, {
          loopback: 2 * 3,
          unspecified: 2 * 2,
          multicast: 2 * 2,
          "link-local": 2 * 2
        })

        const devnet = yield* start(server, { hosts: [target], allowLoopback: true })
        assert.deepStrictEqual(addressesOf(yield* nextAnswer(devnet, SRV)), [
          "10.0.0.1:9000",
          "127.0.0.1:9000",
          "[::1]:9000",
          "[::ffff:127.0.0.2]:9000",
          "[fd00::1]:9000"
        ])
        assert.isUndefined((yield* devnet.source.stats).refused.loopback)
      })
  )
})

describe("DNS source, re-resolution interval (TestClock)", () => {
  // Two targets: a round is 1 SRV query, then A and AAAA for each target.
  const ROUND = 5

  it.scoped(
    "the next round comes after the shortest A/AAAA TTL (7 s, above minInterval 5 s): not before, exactly once",
    () =>
      Effect.gen(function* () {
        const server = yield* DnsServer.make({ records: service(2, { ttl: 7 }) })
        const started = yield* start(server, { dns: { minInterval: "5 seconds", maxInterval: "60 seconds" } })

        yield* within("the first round", server.awaitQueries({}, ROUND))
        yield* awaitSleepUntil(7_000)
        assert.strictEqual(yield* server.count(), ROUND)
        assert.strictEqual((yield* started.source.stats).queries, ROUND)

        // `adjust` returns once the fibers it woke have run until they wait: a round begun would
        // have counted its SRV query by now.
        yield* TestClock.adjust("6999 millis")
        assert.strictEqual((yield* started.source.stats).queries, ROUND, "no query before the TTL ran out")
        assert.strictEqual(yield* server.count(), ROUND)

        yield* TestClock.adjust("1 millis")
        yield* within("the second round", server.awaitQueries({}, 2 * ROUND))
        yield* awaitSleepUntil(14_000)
        assert.strictEqual(yield* server.count(), 2 * ROUND, "exactly one more round")
        assert.strictEqual(yield* server.count({ type: "SRV" }), 2)
        assert.strictEqual(yield* server.count({ type: "A" }), 4)
        assert.strictEqual(yield* server.count({ type: "AAAA" }), 4)
      })
  )

  it.scoped("a TTL under minInterval waits minInterval; one over maxInterval waits maxInterval", () =>
    Effect.gen(function* () {
      const short = yield* DnsServer.make({ records: service(2, { ttl: 1 }) })
      yield* start(short, { dns: { minInterval: "5 seconds", maxInterval: "60 seconds" } })
      yield* within("the first round", short.awaitQueries({}, ROUND))
      yield* awaitSleepUntil(5_000)

      const long = yield* DnsServer.make({ records: service(2, { ttl: 3600 }) })
      yield* start(long, { dns: { minInterval: "5 seconds", maxInterval: "60 seconds" } })
      yield* within("the first round", long.awaitQueries({}, ROUND))
      yield* awaitSleepUntil(60_000)
    })
  )

  it.scoped(
    "a round that overruns its deadline (a stuck onAnswer) is cut and counted; the answer is given next round",
    () =>
      Effect.gen(function* () {
        const server = yield* DnsServer.make({ records: service(1, { ttl: 60 }) })
        const dns = { minInterval: "5 seconds", maxInterval: "60 seconds" }
        const deadline = Duration.toMillis(
          Dns.deadlines(decodeDns({ ...dns, timeout: "500 millis", tries: 1 })).round
        )
        const started = yield* start(server, { dns, stallFirstAnswer: true })
        yield* within("the first round", server.awaitQueries({}, 3))
        yield* awaitSleepUntil(deadline)

        yield* TestClock.adjust(deadline)
        yield* awaitSleepUntil(deadline + 5_000)
        const stats = yield* started.source.stats
        assert.strictEqual(stats.failures, 1)
        assert.strictEqual(stats.rounds, 1)
        assert.isUndefined((yield* started.source.current).get(SRV), "an answer not delivered is not held")

        yield* TestClock.adjust("5 seconds")
        assert.deepStrictEqual(addressesOf(yield* nextAnswer(started, SRV)), ["10.0.0.1:9000"])
      })
  )

  it.scoped(
    "a server that never answers: the query deadline (on the Clock) fails the round, retried after minInterval",
    () => {
      const warnings = capturingWarnings()
      return Effect.gen(function* () {
        const server = yield* DnsServer.make({ records: service(1) })
        yield* server.behave({ silent: true })
        // node:dns gives up after seconds of real time; the source's own deadline is on the Clock,
        // and the clock is moved to it as soon as the query is at the server.
        const dns = { timeout: "1 hour", tries: 1, minInterval: "5 seconds", maxInterval: "60 seconds" }
        const deadline = Duration.toMillis(Dns.deadlines(decodeDns(dns)).query)
        const started = yield* start(server, { dns })
        yield* within("the SRV query", server.awaitQueries({ type: "SRV" }, 1))
        yield* awaitSleepUntil(deadline)

        yield* TestClock.adjust(deadline)
        yield* awaitSleepUntil(deadline + 5_000)
        const stats = yield* started.source.stats
        assert.strictEqual(stats.failures, 1)
        assert.strictEqual(stats.rounds, 1)
        assert.isUndefined((yield* started.source.current).get(SRV))
        assert.deepStrictEqual(
          warnings.lines.map((line) => line.annotations.code),
          ["deadline"]
        )
      }).pipe(Effect.provide(warnings.layer))
    }
  )
})
