import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import type * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Scope from "effect/Scope"
import * as TestClock from "effect/TestClock"
import type { Pipe } from "../src/internal/pipe.js"
import { SimulatedNetwork, type SimulatedNetworkShape } from "../src/SimulatedNetwork.js"

/** What one pipe saw, in order, with the Clock's time of each callback. */
interface Log {
  readonly data: Array<{ readonly at: number; readonly bytes: Array<number> }>
  readonly drains: Array<number>
  readonly closes: Array<{ readonly at: number; readonly error: Error | undefined }>
  /** Every callback in order: "data:<first byte>@t", "drain@t", "close@t". */
  readonly events: Array<string>
}

const attachLog = (pipe: Pipe, clock: Clock.Clock): Log => {
  const log: Log = { data: [], drains: [], closes: [], events: [] }
  pipe.attach({
    data: (chunk) => {
      const at = clock.unsafeCurrentTimeMillis()
      log.data.push({ at, bytes: Array.from(chunk) })
      log.events.push(`data:${chunk[0]}@${at}`)
    },
    drain: () => {
      const at = clock.unsafeCurrentTimeMillis()
      log.drains.push(at)
      log.events.push(`drain@${at}`)
    },
    close: (error) => {
      const at = clock.unsafeCurrentTimeMillis()
      log.closes.push({ at, error })
      log.events.push(`close@${at}`)
    }
  })
  return log
}

const filled = (size: number, value: number): Uint8Array => new Uint8Array(size).fill(value)

const indexUnit = (index: number): Uint8Array => {
  const unit = new Uint8Array(4)
  new DataView(unit.buffer).setUint32(0, index)
  return unit
}

const readIndex = (bytes: ReadonlyArray<number>): number =>
  new DataView(Uint8Array.from(bytes).buffer).getUint32(0)

/** Lets other fibers run a few scheduling steps, without moving the clock, until `done` holds. */
const yieldUntil = (done: () => boolean) =>
  Effect.gen(function* () {
    for (let i = 0; i < 20 && !done(); i++) yield* Effect.yieldNow()
  })

/** Binds `b:9000`, dials it from host `a`, and returns both ends (the server end not yet attached). */
const connectPair = (network: SimulatedNetworkShape) =>
  Effect.gen(function* () {
    const accepted: Array<Pipe> = []
    const binding = yield* network.bind("b:9000", (pipe) => accepted.push(pipe))
    const client = yield* network.connect("a", "b:9000")
    assert.strictEqual(accepted.length, 1)
    return { binding, client, server: accepted[0]!, accepted }
  })

describe("SimulatedNetwork", () => {
  it.effect("keeps delivering when the clock reads fractional milliseconds (jittered sleeps elsewhere)", () =>
    Effect.gen(function* () {
      const network = yield* SimulatedNetwork
      const clock = yield* Effect.clock
      yield* network.setLinkBoth("a", "b", { latency: 1 })
      const { client, server } = yield* connectPair(network)
      const atServer = attachLog(server, clock)
      // Fractional steps whose sums are not exact in floating point (0.1 + 0.2 ...), as a TestClock
      // moved by jittered backoff sleeps reads.
      const sentAt: Array<number> = []
      for (let i = 0; i < 200; i++) {
        sentAt.push(clock.unsafeCurrentTimeMillis())
        client.write([indexUnit(i)])
        yield* TestClock.adjust(0.1 + (i % 7) * 0.3)
      }
      yield* TestClock.adjust(5)
      yield* yieldUntil(() => atServer.data.length === 200)
      assert.deepStrictEqual(
        atServer.data.map((d) => readIndex(d.bytes)),
        Array.from({ length: 200 }, (_, i) => i)
      )
      // Each on time: the latency, rounded up to the millisecond; never held until a later step.
      for (const d of atServer.data) {
        const i = readIndex(d.bytes)
        assert.isAtMost(
          d.at,
          Math.ceil(sentAt[i]! + 1) + 1e-6,
          `unit ${i} sent at ${sentAt[i]} arrived at ${d.at}`
        )
      }
    }).pipe(Effect.provide(SimulatedNetwork.layer()))
  )

  it.effect("delivers a unit after exactly the link's latency, to the millisecond, one direction only", () =>
    Effect.gen(function* () {
      const network = yield* SimulatedNetwork
      const clock = yield* Effect.clock
      yield* network.setLink("a", "b", { latency: 25 })
      const { client, server } = yield* connectPair(network)
      const atServer = attachLog(server, clock)
      const atClient = attachLog(client, clock)
      yield* TestClock.adjust(100)

      assert.isTrue(client.write([Uint8Array.of(1, 2), Uint8Array.of(3)]))
      yield* TestClock.adjust(24)
      assert.deepStrictEqual(atServer.data, [])
      yield* TestClock.adjust(1)
      assert.deepStrictEqual(
        atServer.data,
        [{ at: 125, bytes: [1, 2, 3] }],
        "the chunks of one write arrive as one"
      )

      // b -> a keeps the default: no delay, delivered on the next scheduling step without moving the clock.
      server.write([Uint8Array.of(9)])
      assert.deepStrictEqual(atClient.data, [], "never inside the write call")
      yield* yieldUntil(() => atClient.data.length > 0)
      assert.deepStrictEqual(atClient.data, [{ at: 125, bytes: [9] }])
    }).pipe(Effect.provide(SimulatedNetwork.layer()))
  )

  it.effect("serialises units on a link at its bandwidth, shared by the connections of a host pair", () =>
    Effect.gen(function* () {
      const network = yield* SimulatedNetwork
      const clock = yield* Effect.clock
      yield* network.setLink("a", "b", { bandwidth: 1_000_000 })
      const { client, server, accepted } = yield* connectPair(network)
      const atServer = attachLog(server, clock)

      client.write([filled(100_000, 1)])
      client.write([filled(100_000, 2)])
      yield* TestClock.adjust(99)
      assert.strictEqual(atServer.data.length, 0)
      yield* TestClock.adjust(1)
      assert.deepStrictEqual(atServer.events, ["data:1@100"])
      yield* TestClock.adjust(99)
      assert.deepStrictEqual(atServer.events, ["data:1@100"], "the second unit waits for the first to go out")
      yield* TestClock.adjust(1)
      assert.deepStrictEqual(atServer.events, ["data:1@100", "data:2@200"])
      assert.strictEqual(atServer.data[1]!.bytes.length, 100_000)

      // A second connection between the same hosts queues on the same link; the reverse link is free.
      const second = yield* network.connect("a", "b:9000")
      const atSecondServer = attachLog(accepted[1]!, clock)
      const atClient = attachLog(client, clock)
      client.write([filled(50_000, 3)])
      second.write([filled(50_000, 4)])
      server.write([filled(100_000, 5)])
      yield* TestClock.adjust(50)
      assert.deepStrictEqual(atServer.events, ["data:1@100", "data:2@200", "data:3@250"])
      assert.deepStrictEqual(atSecondServer.events, [])
      assert.deepStrictEqual(atClient.events, ["data:5@200"])
      yield* TestClock.adjust(50)
      assert.deepStrictEqual(atSecondServer.events, ["data:4@300"])
    }).pipe(Effect.provide(SimulatedNetwork.layer()))
  )

  it.effect(
    "serialises a host's units to different hosts through its upload limit, then each link's latency",
    () =>
      Effect.gen(function* () {
        const network = yield* SimulatedNetwork
        const clock = yield* Effect.clock
        yield* network.setUpload("a", 1_000_000)
        yield* network.setLink("a", "c", { latency: 10 })
        const toB: Array<Pipe> = []
        const toC: Array<Pipe> = []
        yield* network.bind("b:9000", (pipe) => toB.push(pipe))
        yield* network.bind("c:9000", (pipe) => toC.push(pipe))
        const b = yield* network.connect("a", "b:9000")
        const c = yield* network.connect("a", "c:9000")
        const atB = attachLog(toB[0]!, clock)
        const atC = attachLog(toC[0]!, clock)
        const fromB = attachLog(b, clock)
        b.write([filled(100_000, 1)])
        c.write([filled(100_000, 2)])
        toB[0]!.write([filled(100_000, 3)]) // b's own uplink is unlimited
        yield* TestClock.adjust(100)
        assert.deepStrictEqual(atB.events, ["data:1@100"])
        assert.deepStrictEqual(fromB.events, ["data:3@0"])
        yield* TestClock.adjust(109)
        assert.deepStrictEqual(atC.events, [], "the copy to c leaves after the copy to b")
        yield* TestClock.adjust(1)
        assert.deepStrictEqual(atC.events, ["data:2@210"])
        // Removing the limit: the next two copies leave at once.
        yield* network.setUpload("a", undefined)
        b.write([filled(100_000, 4)])
        c.write([filled(100_000, 5)])
        yield* TestClock.adjust(10)
        assert.deepStrictEqual(atB.events, ["data:1@100", "data:4@210"])
        assert.deepStrictEqual(atC.events, ["data:2@210", "data:5@220"])
      }).pipe(Effect.provide(SimulatedNetwork.layer()))
  )

  it.effect("never reorders a connection under jitter, and keeps every delay within latency + jitter", () =>
    Effect.gen(function* () {
      const network = yield* SimulatedNetwork
      const clock = yield* Effect.clock
      yield* network.setLink("a", "b", { latency: 10, jitter: 50 })
      const { client, server } = yield* connectPair(network)
      const atServer = attachLog(server, clock)
      const sentAt: Array<number> = []
      for (let step = 0; step < 50; step++) {
        for (let k = 0; k < 20; k++) {
          sentAt.push(clock.unsafeCurrentTimeMillis())
          client.write([indexUnit(sentAt.length - 1)])
        }
        yield* TestClock.adjust(1)
      }
      yield* TestClock.adjust(60)

      assert.strictEqual(atServer.data.length, 1000)
      const delays = atServer.data.map(({ at, bytes }, position) => {
        assert.strictEqual(readIndex(bytes), position, "units arrive in the order written")
        return at - sentAt[position]!
      })
      for (const delay of delays) assert.isTrue(delay >= 10 && delay <= 60, `delay ${delay} outside [10, 60]`)
      assert.isAbove(Math.max(...delays) - Math.min(...delays), 25, "jitter spreads the delays")
    }).pipe(Effect.provide(SimulatedNetwork.layer({ seed: 7 })))
  )

  it.effect("loses about the configured fraction of writes, the same ones for the same seed", () =>
    Effect.gen(function* () {
      const run = (seed: number) =>
        Effect.gen(function* () {
          const network = yield* SimulatedNetwork
          const { client, server } = yield* connectPair(network)
          const delivered: Array<number> = []
          server.attach({
            data: (chunk) => delivered.push(readIndex(Array.from(chunk))),
            drain: () => {},
            close: () => {}
          })
          for (let i = 0; i < 20_000; i++) client.write([indexUnit(i)])
          yield* TestClock.adjust(1)
          return { delivered, stats: yield* network.linkStats("a", "b") }
        }).pipe(Effect.provide(SimulatedNetwork.layer({ seed, defaults: { loss: 0.1, latency: 1 } })))

      const first = yield* run(42)
      const fraction = first.delivered.length / 20_000
      assert.isTrue(Math.abs(fraction - 0.9) <= 0.01, `delivered fraction ${fraction}`)
      assert.strictEqual(first.stats.deliveredWrites, first.delivered.length)
      assert.strictEqual(first.stats.lostWrites, 20_000 - first.delivered.length)
      assert.strictEqual(first.stats.lostBytes, 4 * first.stats.lostWrites)
      assert.deepStrictEqual(
        first.delivered,
        [...first.delivered].sort((x, y) => x - y),
        "the survivors arrive in order"
      )

      const again = yield* run(42)
      assert.deepStrictEqual(again.delivered, first.delivered, "same seed, same delivered set")
      const other = yield* run(43)
      assert.notDeepEqual(other.delivered, first.delivered, "another seed, another delivered set")
    })
  )

  it.effect("drops traffic across a partition both ways, in flight too, and heals for new traffic", () =>
    Effect.gen(function* () {
      const network = yield* SimulatedNetwork
      const clock = yield* Effect.clock
      yield* network.setLinkBoth("a", "b", { latency: 10 })
      const { client, server, accepted } = yield* connectPair(network)
      const atServer = attachLog(server, clock)
      const atClient = attachLog(client, clock)

      client.write([Uint8Array.of(1)])
      server.write([Uint8Array.of(2)])
      yield* TestClock.adjust(5)
      yield* network.partition([["a"], ["b"]])
      client.write([Uint8Array.of(3)])
      yield* TestClock.adjust(20)
      assert.deepStrictEqual(atServer.data, [])
      assert.deepStrictEqual(atClient.data, [])
      const ab = yield* network.linkStats("a", "b")
      assert.strictEqual(ab.partitionedWrites, 2, "one dropped in flight, one at send")
      assert.strictEqual((yield* network.linkStats("b", "a")).partitionedWrites, 1)

      const silent = yield* network.connect("a", "b:9000")
      assert.strictEqual(accepted.length, 1, "the SYN was lost: no connection accepted")

      // A unit in flight when a partition starts is dropped even if the partition heals before it lands.
      yield* network.heal
      client.write([Uint8Array.of(4)])
      yield* TestClock.adjust(5)
      yield* network.partition([["a"], ["b"]])
      yield* network.heal
      yield* TestClock.adjust(5)
      assert.deepStrictEqual(atServer.data, [])

      client.write([Uint8Array.of(5)])
      server.write([Uint8Array.of(6)])
      silent.write([Uint8Array.of(7)])
      yield* TestClock.adjust(10)
      assert.deepStrictEqual(atServer.events, ["data:5@45"])
      assert.deepStrictEqual(atClient.events, ["data:6@45"])
      const fresh = yield* network.connect("a", "b:9000")
      assert.strictEqual(accepted.length, 2, "new connections are accepted after heal")
      const atFresh = attachLog(accepted[1]!, clock)
      fresh.write([Uint8Array.of(8)])
      yield* TestClock.adjust(10)
      assert.deepStrictEqual(atFresh.events, ["data:8@55"])
      assert.strictEqual((yield* network.stats).deliveredWrites, 3)
    }).pipe(Effect.provide(SimulatedNetwork.layer()))
  )

  it.effect("puts hosts named in no group together, and isolate cuts one host off from all", () =>
    Effect.gen(function* () {
      const network = yield* SimulatedNetwork
      const clock = yield* Effect.clock
      const received: Record<string, Array<string>> = {}
      for (const host of ["a", "b", "c"]) {
        received[host] = []
        yield* network.bind(`${host}:1`, (pipe) =>
          pipe.attach({
            data: (chunk) => received[host]!.push(`${chunk[0]}`),
            drain: () => {},
            close: () => {}
          })
        )
      }
      const send = (from: string, to: string, value: number) =>
        Effect.map(network.connect(from, `${to}:1`), (pipe) => pipe.write([Uint8Array.of(value)]))

      yield* network.partition([["a"]])
      yield* send("b", "c", 1)
      yield* send("c", "b", 2)
      yield* send("b", "a", 3)
      yield* send("a", "c", 4)
      yield* TestClock.adjust(1)
      assert.deepStrictEqual(received, { a: [], b: ["2"], c: ["1"] })

      yield* network.heal
      yield* network.isolate("c")
      yield* send("a", "b", 5)
      yield* send("b", "c", 6)
      yield* send("c", "c", 7)
      yield* TestClock.adjust(1)
      assert.deepStrictEqual(
        received,
        { a: [], b: ["2", "5"], c: ["1", "7"] },
        "a host always reaches itself"
      )
      assert.strictEqual(clock.unsafeCurrentTimeMillis(), 2)
    }).pipe(Effect.provide(SimulatedNetwork.layer()))
  )

  it.effect("returns false past the send buffer and drains after delivery; pause holds data in order", () =>
    Effect.gen(function* () {
      const network = yield* SimulatedNetwork
      const clock = yield* Effect.clock
      yield* network.setLink("a", "b", { latency: 10 })
      const { client, server } = yield* connectPair(network)
      const atServer = attachLog(server, clock)
      const atClient = attachLog(client, clock)

      assert.isTrue(client.write([filled(600, 1)]))
      assert.isFalse(client.write([filled(600, 2)]), "1200 bytes in flight, over 1000")
      yield* TestClock.adjust(9)
      assert.deepStrictEqual(atClient.drains, [])
      yield* TestClock.adjust(1)
      assert.deepStrictEqual(atServer.events, ["data:1@10", "data:2@10"])
      assert.deepStrictEqual(atClient.events, ["drain@10"], "drain once, after delivery")

      server.pause()
      assert.isTrue(client.write([filled(600, 3)]))
      assert.isFalse(client.write([filled(600, 4)]))
      yield* TestClock.adjust(30)
      assert.strictEqual(atServer.data.length, 2, "nothing handed over while paused")
      assert.strictEqual((yield* network.linkStats("a", "b")).deliveredWrites, 4, "though it did arrive")
      assert.deepStrictEqual(atClient.drains, [10], "no drain while the receiver holds the bytes")
      assert.isFalse(client.write([filled(10, 5)]), "held bytes still count against the sender's buffer")

      server.resume()
      assert.strictEqual(
        atServer.data.length,
        2,
        "resume hands data over on the next step, not inside resume"
      )
      yield* yieldUntil(() => atServer.data.length === 4 && atClient.drains.length === 2)
      assert.deepStrictEqual(atServer.events, ["data:1@10", "data:2@10", "data:3@40", "data:4@40"])
      assert.deepStrictEqual(atClient.drains, [10, 40])
      yield* TestClock.adjust(10)
      assert.deepStrictEqual(
        atServer.data.map((d) => `${d.bytes[0]}x${d.bytes.length}@${d.at}`),
        ["1x600@10", "2x600@10", "3x600@40", "4x600@40", "5x10@50"]
      )
    }).pipe(Effect.provide(SimulatedNetwork.layer({ sendBufferBytes: 1000 })))
  )

  it.effect("end closes the other side after the data, then this side; close fires once", () =>
    Effect.gen(function* () {
      const network = yield* SimulatedNetwork
      const clock = yield* Effect.clock
      yield* network.setLinkBoth("a", "b", { latency: 5 })
      const { client, server } = yield* connectPair(network)
      const atServer = attachLog(server, clock)
      const atClient = attachLog(client, clock)

      client.write([Uint8Array.of(1)])
      client.end()
      client.write([Uint8Array.of(2)]) // discarded: written after end
      server.write([Uint8Array.of(3)])
      yield* TestClock.adjust(5)
      assert.deepStrictEqual(atServer.events, ["data:1@5", "close@5"])
      assert.isUndefined(atServer.closes[0]!.error)
      server.write([Uint8Array.of(4)]) // discarded: written after close
      assert.deepStrictEqual(atClient.events, ["data:3@5"], "the half-closed side still reads")
      yield* TestClock.adjust(5)
      assert.deepStrictEqual(atClient.events, ["data:3@5", "close@10"], "after the peer's FIN came back")
      client.end()
      client.destroy()
      server.destroy()
      yield* TestClock.adjust(50)
      assert.strictEqual(atServer.closes.length, 1)
      assert.strictEqual(atClient.closes.length, 1)
      assert.isUndefined(atClient.closes[0]!.error)
    }).pipe(Effect.provide(SimulatedNetwork.layer()))
  )

  it.effect("destroy closes both sides on the next step and drops what is in flight", () =>
    Effect.gen(function* () {
      const network = yield* SimulatedNetwork
      const clock = yield* Effect.clock
      yield* network.setLinkBoth("a", "b", { latency: 50 })
      const { client, server } = yield* connectPair(network)
      const atServer = attachLog(server, clock)
      const atClient = attachLog(client, clock)

      client.write([Uint8Array.of(1)])
      server.write([Uint8Array.of(2)])
      const boom = new Error("boom")
      client.destroy(boom)
      assert.deepStrictEqual(atClient.closes, [], "not inside destroy")
      yield* yieldUntil(() => atClient.closes.length > 0 && atServer.closes.length > 0)
      assert.deepStrictEqual(atClient.closes, [{ at: 0, error: boom }])
      assert.strictEqual(atServer.closes[0]!.at, 0)
      assert.strictEqual((atServer.closes[0]!.error as { code?: string } | undefined)?.code, "ECONNRESET")

      client.destroy()
      server.end()
      client.write([Uint8Array.of(3)])
      yield* TestClock.adjust(100)
      assert.deepStrictEqual(atServer.data, [])
      assert.deepStrictEqual(atClient.data, [])
      assert.strictEqual(atServer.closes.length + atClient.closes.length, 2)
    }).pipe(Effect.provide(SimulatedNetwork.layer()))
  )

  it.effect("buffers data and close that arrive before attach", () =>
    Effect.gen(function* () {
      const network = yield* SimulatedNetwork
      const clock = yield* Effect.clock
      const { client, server } = yield* connectPair(network)
      client.write([Uint8Array.of(1)])
      client.write([Uint8Array.of(2)])
      client.end()
      yield* TestClock.adjust(10)
      const atServer = attachLog(server, clock)
      yield* yieldUntil(() => atServer.closes.length > 0)
      assert.deepStrictEqual(atServer.events, ["data:1@10", "data:2@10", "close@10"])
    }).pipe(Effect.provide(SimulatedNetwork.layer()))
  )

  it.effect("refuses dials to unbound addresses, assigns ports, and refuses a second bind", () =>
    Effect.gen(function* () {
      const network = yield* SimulatedNetwork
      const refused = yield* Effect.flip(network.connect("a", "b:9000"))
      assert.strictEqual(refused._tag, "ConnectionRefused")
      assert.strictEqual(refused.address, "b:9000")
      assert.strictEqual(
        (yield* Effect.flip(network.connect("a", "not an address")))._tag,
        "ConnectionRefused"
      )

      const { binding, client, server } = yield* connectPair(network)
      assert.strictEqual(client.remoteAddress, "b:9000")
      assert.strictEqual(server.remoteAddress, "a:40000")
      const inUse = yield* Effect.flip(network.bind("b:9000", () => {}))
      assert.strictEqual(inUse._tag, "AddressInUse")
      assert.strictEqual(inUse.address, "b:9000")

      const first = yield* network.bind("b:0", () => {})
      yield* network.bind("b:40001", () => {})
      const second = yield* network.bind("b:0", () => {})
      const v6 = yield* network.bind("[fd00::1]:0", () => {})
      assert.deepStrictEqual(
        [first.address, second.address, v6.address],
        ["b:40000", "b:40002", "[fd00::1]:40000"]
      )

      yield* binding.close
      assert.strictEqual((yield* Effect.flip(network.connect("a", "b:9000")))._tag, "ConnectionRefused")
      yield* network.bind("b:9000", () => {})
      const again = yield* network.connect("a", "b:9000")
      assert.strictEqual(again.remoteAddress, "b:9000")
    }).pipe(Effect.provide(SimulatedNetwork.layer()))
  )

  it.effect("dies on out-of-range link conditions and malformed bind addresses", () =>
    Effect.gen(function* () {
      const network = yield* SimulatedNetwork
      for (const bad of [{ loss: 1.5 }, { latency: -1 }, { bandwidth: 0 }]) {
        const exit = yield* Effect.exit(network.setLink("a", "b", bad))
        assert.isTrue(Exit.isFailure(exit) && Cause.isDie(exit.cause), JSON.stringify(bad))
      }
      const exit = yield* Effect.exit(network.bind("no-port", () => {}))
      assert.isTrue(Exit.isFailure(exit) && Cause.isDie(exit.cause))
      const layerExit = yield* Effect.exit(
        Effect.provide(SimulatedNetwork, SimulatedNetwork.layer({ defaults: { jitter: Number.NaN } }))
      )
      assert.isTrue(Exit.isFailure(layerExit) && Cause.isDie(layerExit.cause))
    }).pipe(Effect.provide(SimulatedNetwork.layer()))
  )

  it.effect("stops delivering and releases its bindings when its scope closes", () =>
    Effect.gen(function* () {
      const scope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(
        SimulatedNetwork.layer({ defaults: { latency: 10 } }),
        scope
      )
      const network = Context.get(context, SimulatedNetwork)
      const clock = yield* Effect.clock
      const { client, server } = yield* connectPair(network)
      const atServer = attachLog(server, clock)
      client.write([Uint8Array.of(1)])
      yield* Scope.close(scope, Exit.void)
      yield* TestClock.adjust(20)
      assert.deepStrictEqual(atServer.data, [])
      assert.strictEqual((yield* Effect.flip(network.connect("a", "b:9000")))._tag, "ConnectionRefused")
    })
  )

  it.effect("logs a handler that throws and goes on delivering", () => {
    const logged: Array<string> = []
    const capture = Logger.replace(
      Logger.defaultLogger,
      Logger.make(({ message }) => {
        logged.push(String(message))
      })
    )
    return Effect.gen(function* () {
      const network = yield* SimulatedNetwork
      const { client, server } = yield* connectPair(network)
      const received: Array<number> = []
      server.attach({
        data: (chunk) => {
          received.push(chunk[0]!)
          if (chunk[0] === 1) throw new Error("bug in a handler")
        },
        drain: () => {},
        close: () => {}
      })
      client.write([Uint8Array.of(1)])
      client.write([Uint8Array.of(2)])
      yield* TestClock.adjust(10)
      client.write([Uint8Array.of(3)])
      yield* TestClock.adjust(10)
      assert.deepStrictEqual(received, [1, 2, 3])
      assert.strictEqual(logged.length, 1)
      assert.match(logged[0]!, /handler threw/)
    }).pipe(Effect.provide(SimulatedNetwork.layer().pipe(Layer.provide(capture))))
  })

  it.effect(
    "runs a 100-host full mesh: 9,900 connections, every unit delivered within latency + jitter",
    () =>
      Effect.gen(function* () {
        const network = yield* SimulatedNetwork
        const hosts = Array.from({ length: 100 }, (_, i) => `node-${i}`)
        const received = new Map<string, number>()
        let accepted = 0
        for (const host of hosts) {
          yield* network.bind(`${host}:9000`, (pipe) => {
            accepted++
            pipe.attach({
              data: (chunk) => {
                const key = `${pipe.remoteAddress.split(":")[0]}->${host}:${chunk[0]}`
                received.set(key, (received.get(key) ?? 0) + 1)
              },
              drain: () => {},
              close: () => {}
            })
          })
        }
        const pipes: Array<readonly [number, Pipe]> = []
        for (let i = 0; i < hosts.length; i++) {
          for (let j = 0; j < hosts.length; j++) {
            if (i !== j) pipes.push([i, yield* network.connect(hosts[i]!, `${hosts[j]}:9000`)])
          }
        }
        assert.strictEqual(accepted, 9900)
        for (const [i, pipe] of pipes) pipe.write([Uint8Array.of(i, 0, 0, 0)])

        yield* TestClock.adjust(9)
        assert.strictEqual(received.size, 0, "nothing before the latency")
        yield* TestClock.adjust(11)
        assert.strictEqual(received.size, 9900)
        for (let i = 0; i < hosts.length; i++) {
          for (let j = 0; j < hosts.length; j++) {
            if (i !== j) assert.strictEqual(received.get(`node-${i}->node-${j}:${i}`), 1)
          }
        }
        assert.strictEqual((yield* network.stats).deliveredWrites, 9900)
      }).pipe(Effect.provide(SimulatedNetwork.layer({ defaults: { latency: 10, jitter: 5 } })))
  )
})
