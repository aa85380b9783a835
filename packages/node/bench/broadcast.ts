// The broadcast case of the node benchmark, all in this process (one JS thread, one shared clock):
// a leader (validator 0) and N-1 followers on 127.0.0.1. A round: the leader broadcasts a 1 KiB
// Proposal; each follower, on delivery, notes the time and answers the leader with a Vote; the round
// ends when the leader has all N-1 Votes. Two times per round, from the call to `broadcast`: the last
// follower's delivery, and the leader's receipt of the last Vote.
//
// Baselines, same process, same rounds: raw node:tls sockets leader -> each follower (the same
// certificates), the envelope bytes written to each and a Vote frame written back; and the same with
// the signatures our broadcast needs (the leader seals an envelope per round, every follower opens
// it: decode and Ed25519 verify), which on one thread cost (N-1) verifications per round.
//
// `HarnessOptions` change the message size, end a round at the last delivery with no Votes sent, and
// pass a broadcast config (strategy, fanout) to the validators: treeTls.ts runs them that way.
import * as net from "node:net"
import * as tls from "node:tls"
import type { BroadcastConfig } from "@hotstuff2/broadcast"
import { Bench, RawSocket } from "@hotstuff2/testing"
import { Codec, Envelope, Frame } from "@hotstuff2/wire"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { type NodeConfig, NodeNetwork } from "../src/index.js"
import { reservePorts } from "../src/internal/ports.js"
import { NETWORK } from "../test/fixtures/cluster.js"
import {
  benchConfig,
  directSlot,
  encodeFrame,
  envelopeSlot,
  identity,
  proposal,
  tlsMaterial,
  vote
} from "./setup.js"

const { now } = Bench

/** Nanoseconds from the start of a round to the last follower's delivery and to the last Vote back. */
export interface Round {
  readonly delivered: number
  readonly acked: number
}

export type Side = "raw" | "raw+sig" | "node"

/** A set-up that runs one round at a time. */
export interface Harness {
  readonly round: () => Promise<Round>
  /** Bytes the leader has written to its sockets so far (its upload), for differences over rounds. */
  readonly leaderBytesWritten: () => number
  readonly close: () => Promise<void>
}

export interface HarnessOptions {
  /** Bytes of the Proposal's block payload (default 1024). */
  readonly payloadBytes?: number
  /**
   * With Votes (the default) a round ends at the leader's last Vote; without, followers send nothing
   * and a round ends when the last follower has the Proposal (`acked` is then `delivered`).
   */
  readonly votes?: boolean
}

/** Options of the NodeNetwork validators. */
export interface NodeHarnessOptions extends HarnessOptions {
  /** The validators' broadcast config (strategy, fanout...); default the node's default (direct). */
  readonly broadcast?: BroadcastConfig.BroadcastConfigInput
  /**
   * Wait until every validator is connected to every other, not only the followers to the leader
   * (default true: the validators form the full mesh in any case, and rounds timed while most of it
   * is still forming, 64 validators in one process, measure the handshakes as much as the
   * broadcast; a tree's relays also send to each other). `false`: only to the leader.
   */
  readonly fullMesh?: boolean
  /**
   * Changes to each validator's config (after `broadcast`). Without it the handshake timeout and
   * the dial pacing are the libraries' defaults, as a deployment runs them.
   */
  readonly configure?: (config: NodeConfig.NodeConfigInput) => NodeConfig.NodeConfigInput
  /**
   * Start the validators one at a time, each once the one before is connected to all earlier ones
   * (default false: all at once). With many validators in one busy process, n (n-1) dials at once
   * time out faster than they complete.
   */
  readonly oneByOne?: boolean
  /**
   * How long to wait for the connections (default 180 s, a deadline for a hang, not a pace: the
   * wait ends on the connection events; with `oneByOne`, for each validator too).
   */
  readonly connectTimeoutMs?: number
}

/**
 * The test fixtures' config of validator `i`, with the transport's own handshake timeout (the
 * fixtures shorten it to 2 s so that a test's dial into a dead port fails fast): a benchmark forms
 * its mesh with the timeout and dial pacing (peers' `dialGrace`, `maxConcurrentDials`) a deployment
 * has.
 */
const deploymentConfig = (i: number, addresses: ReadonlyArray<string>): NodeConfig.NodeConfigInput => {
  const base = benchConfig(i, addresses)
  const { handshakeTimeout: _fixtures, ...limits } = base.limits ?? {}
  return { ...base, limits }
}

/** How often the connected sets are read afresh while waiting on the events. */
const BACKSTOP_MS = 1000

/**
 * Waits until `readyFrom` holds of the validators' connected sets, checking it again at each
 * connection event of `networks` (the sets kept from the events answer at once; a fresh read
 * confirms). Every `BACKSTOP_MS` the sets are read afresh, for events before the subscriptions
 * began. Fails with `timeout()` after `timeoutMs`.
 */
const awaitConnections = (
  networks: ReadonlyArray<NodeNetwork.Shape>,
  readyFrom: (connected: ReadonlyArray<ReadonlySet<string>>) => boolean,
  timeoutMs: number,
  timeout: () => Error
) =>
  Effect.scoped(
    Effect.gen(function* () {
      const sets = networks.map(() => new Set<string>())
      const changed = yield* Queue.sliding<void>(1)
      yield* Effect.forEach(
        networks,
        (network, i) =>
          Stream.runForEach(network.peerEvents, (event) => {
            if (event._tag === "Connected") sets[i]!.add(event.peer)
            else if (event._tag === "Disconnected") sets[i]!.delete(event.peer)
            else return Effect.void
            return Queue.offer(changed, undefined)
          }).pipe(Effect.forkScoped),
        { discard: true }
      )
      const readAll = Effect.forEach(networks, (network, i) =>
        Effect.map(network.peers, (peers) => {
          sets[i] = new Set(peers.filter((p) => p.state === "connected").map((p) => p.id))
        })
      )
      yield* readAll
      for (;;) {
        if (readyFrom(sets)) {
          yield* readAll
          if (readyFrom(sets)) return
        }
        const event = yield* Effect.timeoutOption(Queue.take(changed), Duration.millis(BACKSTOP_MS))
        if (Option.isNone(event)) yield* readAll
      }
    })
  ).pipe(Effect.timeoutFail({ duration: Duration.millis(timeoutMs), onTimeout: timeout }))

/** Waits for the current round's last Vote (or, `untilDelivered`, its last delivery), or fails after `timeoutMs`. */
class RoundLatch {
  private resolve: ((r: Round) => void) | undefined
  private started = 0n
  private acks = 0
  private deliveries = 0
  private expected = 0
  private timer: ReturnType<typeof setTimeout> | undefined
  deliveredAt = 0n

  constructor(private readonly untilDelivered: boolean) {}

  start(expected: number, timeoutMs: number): Promise<Round> {
    // A round given up (its broadcast failed) must not time out into this one.
    clearTimeout(this.timer)
    this.acks = 0
    this.deliveries = 0
    this.expected = expected
    this.deliveredAt = 0n
    this.started = now()
    const round = new Promise<Round>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.resolve = undefined
        reject(
          new Error(
            this.untilDelivered
              ? `broadcast round: ${this.deliveries} of ${expected} deliveries within ${timeoutMs} ms`
              : `broadcast round: ${this.acks} of ${expected} Votes within ${timeoutMs} ms`
          )
        )
      }, timeoutMs)
      this.timer = timer
      this.resolve = (r) => {
        clearTimeout(timer)
        resolve(r)
      }
    })
    // Handled here too: a caller that fails before awaiting it must not leave it unhandled.
    round.catch(() => {})
    return round
  }

  /** The round's start, for sides that take it after `start` (right before sending). */
  restart(): void {
    this.started = now()
  }

  delivered(n = 1): void {
    this.deliveredAt = now()
    this.deliveries += n
    if (this.untilDelivered && this.deliveries >= this.expected) this.finish(this.deliveredAt)
  }

  ack(n: number): void {
    this.acks += n
    if (this.acks >= this.expected) this.finish(now())
  }

  private finish(at: bigint): void {
    if (this.resolve === undefined) return
    const resolve = this.resolve
    this.resolve = undefined
    resolve({ delivered: Number(this.deliveredAt - this.started), acked: Number(at - this.started) })
  }
}

/**
 * The sockets of validator `self` of a set listening on `ports` (its own first): the raw TCP sockets
 * it accepted (their counts are TLS records; found by local port) and the TLS sockets it dialled to
 * the others (found by remote port and its own certificate: other sets in this process share its
 * key; Node counts their cleartext, about 22 bytes of record per 16 KiB short). Node keeps no list of
 * sockets but its active handles (`process._getActiveHandles`, undocumented).
 */
const socketsOf = (self: string, ports: ReadonlyArray<number>): Array<net.Socket> => {
  const handles = (
    process as unknown as { _getActiveHandles: () => ReadonlyArray<unknown> }
  )._getActiveHandles()
  const others = new Set(ports.slice(1))
  const found: Array<net.Socket> = []
  for (const handle of handles) {
    if (handle instanceof tls.TLSSocket) {
      if (handle.remotePort === undefined || !others.has(handle.remotePort)) continue
      const key = handle.getX509Certificate()?.publicKey.export({ format: "jwk" }).x
      if (key !== undefined && Buffer.from(key, "base64url").toString("hex") === self) found.push(handle)
    } else if (handle instanceof net.Socket && handle.localPort === ports[0]) {
      found.push(handle)
    }
  }
  return found
}

/**
 * Bytes written so far by those sockets. The scan allocates (a certificate export per TLS socket):
 * done once and again only when one of them has closed, whose count is kept.
 */
const socketBytesCounter = (self: string, ports: ReadonlyArray<number>): (() => number) => {
  let sockets: Array<net.Socket> = []
  let closed = 0
  return () => {
    if (sockets.length === 0 || sockets.some((socket) => socket.destroyed)) {
      for (const socket of sockets) if (socket.destroyed) closed += socket.bytesWritten
      sockets = socketsOf(self, ports).filter((socket) => !socket.destroyed)
    }
    return sockets.reduce((sum, socket) => sum + socket.bytesWritten, closed)
  }
}

/** Raw node:tls, leader to N-1 followers; with `signed`, an envelope sealed per round and opened by each. */
export const rawHarness = async (
  n: number,
  signed: boolean,
  timeoutMs: number,
  options: HarnessOptions = {}
): Promise<Harness> => {
  const votes = options.votes ?? true
  const leader = identity(0)
  const payload = Either.getOrThrow(Codec.encode(proposal(1n, leader.peerId, options.payloadBytes)))
  let sequence = 1n
  const sealedSlot = () =>
    envelopeSlot(
      Either.getOrThrow(Envelope.seal(leader, { networkId: NETWORK, sequence: sequence++, payload })).bytes
    )
  const fixedFrame = encodeFrame(sealedSlot())
  const latch = new RoundLatch(!votes)
  const sockets: Array<net.Socket> = []
  const servers: Array<tls.Server> = []
  const failures: Array<string> = []
  for (let i = 1; i < n; i++) {
    const ackFrame = encodeFrame(directSlot(vote(1n, identity(i).peerId)))
    const server = tls.createServer(
      { ...tlsMaterial(identity(i)), requestCert: true, rejectUnauthorized: false },
      (socket) => {
        socket.setNoDelay(true)
        socket.on("error", () => {})
        sockets.push(socket)
        const decoder = new Frame.FrameDecoder()
        const onFrame = (frame: Frame.Frame) => {
          if (signed) {
            const opened = Envelope.open(frame.messages[0]!.subarray(1), NETWORK)
            if (Either.isLeft(opened)) failures.push(opened.left.message)
          }
          latch.delivered()
          if (votes) socket.write(ackFrame)
        }
        socket.on("data", (chunk: Buffer) => {
          const error = decoder.push(chunk, onFrame)
          if (error !== undefined) failures.push(error._tag)
        })
      }
    )
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject)
      server.listen({ host: "127.0.0.1", port: 0 }, () => resolve())
    })
    servers.push(server)
  }
  const links = await Promise.all(
    servers.map((server) => {
      const address = server.address() as net.AddressInfo
      return RawSocket.connect("tls", `127.0.0.1:${address.port}`, tlsMaterial(leader), timeoutMs)
    })
  )
  for (const socket of links) {
    sockets.push(socket)
    const decoder = new Frame.FrameDecoder()
    const onFrame = () => latch.ack(1)
    socket.on("data", (chunk: Buffer) => {
      const error = decoder.push(chunk, onFrame)
      if (error !== undefined) failures.push(error._tag)
    })
  }
  return {
    round: async () => {
      const done = latch.start(n - 1, timeoutMs)
      latch.restart()
      const frame = signed ? encodeFrame(sealedSlot()) : fixedFrame
      for (const socket of links) socket.write(frame)
      const result = await done
      if (failures.length > 0) throw new Error(`raw broadcast: ${failures[0]}`)
      return result
    },
    leaderBytesWritten: () => links.reduce((sum, socket) => sum + socket.bytesWritten, 0),
    close: async () => {
      for (const socket of sockets) socket.destroy()
      await Promise.all(
        servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve())))
      )
    }
  }
}

/** N NodeNetwork validators over TLS, leader 0; resolves once the leader and every follower are connected. */
export const nodeHarness = async (
  n: number,
  timeoutMs: number,
  options: NodeHarnessOptions = {}
): Promise<Harness> => {
  const votes = options.votes ?? true
  const connectTimeoutMs = options.connectTimeoutMs ?? 180_000
  const scope = Effect.runSync(Scope.make())
  const latch = new RoundLatch(!votes)
  let ports: ReadonlyArray<number> = []
  try {
    const leader = await Effect.runPromise(
      Effect.gen(function* () {
        ports = yield* reservePorts(n)
        const addresses = ports.map((port) => `127.0.0.1:${port}`)
        const configOf = (i: number): NodeConfig.NodeConfigInput => {
          const base = deploymentConfig(i, addresses)
          const config = options.broadcast === undefined ? base : { ...base, broadcast: options.broadcast }
          return options.configure === undefined ? config : options.configure(config)
        }
        const start = (i: number) =>
          Effect.map(Layer.buildWithScope(NodeNetwork.layer(configOf(i)), scope), (c) =>
            Context.get(c, NodeNetwork)
          )
        // One by one: validator i starts once validator i-1 is connected to all before it, so at most
        // i handshakes run at once rather than n (n-1).
        const joined = (network: NodeNetwork.Shape, i: number) =>
          awaitConnections(
            [network],
            ([peers]) => peers!.size >= i,
            connectTimeoutMs,
            () =>
              new Error(
                `validator ${i} not connected to the ${i} before it within ${connectTimeoutMs / 1000} s`
              )
          )
        const networks = yield* options.oneByOne === true
          ? Effect.forEach(addresses, (_, i) => Effect.tap(start(i), (network) => joined(network, i)))
          : Effect.forEach(addresses, (_, i) => start(i), { concurrency: "unbounded" })
        const leader = networks[0]!
        for (let i = 1; i < n; i++) {
          const follower = networks[i]!
          const ack = vote(1n, follower.self)
          yield* Effect.forkIn(
            Stream.runForEachChunk(follower.messages, (chunk) => {
              latch.delivered(chunk.length)
              if (!votes) return Effect.void
              return Effect.forEach(chunk, () => Effect.ignore(follower.send(leader.self, ack)), {
                discard: true
              })
            }),
            scope
          )
        }
        yield* Effect.forkIn(
          Stream.runForEachChunk(leader.messages, (chunk) => Effect.sync(() => latch.ack(chunk.length))),
          scope
        )
        // Every validator connected to every other (with `fullMesh: false`, only every follower to the
        // leader, in the leader's view and its own). `missing` says what is not, for the error.
        let missing = ""
        yield* awaitConnections(
          networks,
          (connected) => {
            const counts = connected.map((peers) => peers.size)
            const toLeader = connected.slice(1).filter((peers) => peers.has(leader.self)).length
            missing =
              `leader connected to ${counts[0]} of ${n - 1}, ${toLeader} followers to the leader` +
              (options.fullMesh !== false
                ? `, ${counts.reduce((a, c) => a + c, 0)} of ${n * (n - 1)} connection ends up`
                : "")
            return (
              counts[0]! >= n - 1 &&
              (options.fullMesh !== false ? counts.every((c) => c >= n - 1) : toLeader === n - 1)
            )
          },
          connectTimeoutMs,
          () => new Error(`mesh not up within ${connectTimeoutMs / 1000} s: ${missing}`)
        )
        return leader
      })
    )
    const message = proposal(1n, leader.self, options.payloadBytes)
    return {
      round: async () => {
        const done = latch.start(n - 1, timeoutMs)
        latch.restart()
        const receipt = await Effect.runPromise(leader.broadcast(message))
        if (receipt.failed.length > 0) throw new Error(`broadcast failed to ${receipt.failed.length} peers`)
        return await done
      },
      leaderBytesWritten: socketBytesCounter(leader.self, ports),
      close: () => Effect.runPromise(Scope.close(scope, Exit.void))
    }
  } catch (error) {
    await Effect.runPromise(Scope.close(scope, Exit.void))
    throw error
  }
}
