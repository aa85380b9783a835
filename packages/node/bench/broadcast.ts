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
import type * as net from "node:net"
import * as tls from "node:tls"
import { Bench, RawSocket } from "@hotstuff2/testing"
import { Codec, Envelope, Frame } from "@hotstuff2/wire"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { NodeNetwork } from "../src/index.js"
import { reservePorts } from "../src/internal/ports.js"
import { NETWORK } from "../test/fixtures/cluster.js"
import { benchConfig, directSlot, encodeFrame, identity, proposal, tlsMaterial, vote } from "./setup.js"

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
  readonly close: () => Promise<void>
}

const envelopeSlot = (sealed: Uint8Array): Uint8Array => {
  const slot = Buffer.allocUnsafe(1 + sealed.length)
  slot[0] = 2
  slot.set(sealed, 1)
  return slot
}

/** Waits for the current round's last Vote, or fails after `timeoutMs`. */
class RoundLatch {
  private resolve: ((r: Round) => void) | undefined
  private started = 0n
  private acks = 0
  private expected = 0
  deliveredAt = 0n

  start(expected: number, timeoutMs: number): Promise<Round> {
    this.acks = 0
    this.expected = expected
    this.deliveredAt = 0n
    this.started = now()
    return new Promise<Round>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.resolve = undefined
        reject(new Error(`broadcast round: ${this.acks} of ${expected} Votes within ${timeoutMs} ms`))
      }, timeoutMs)
      this.resolve = (r) => {
        clearTimeout(timer)
        resolve(r)
      }
    })
  }

  /** The round's start, for sides that take it after `start` (right before sending). */
  restart(): void {
    this.started = now()
  }

  delivered(): void {
    this.deliveredAt = now()
  }

  ack(n: number): void {
    this.acks += n
    if (this.acks >= this.expected && this.resolve !== undefined) {
      const at = now()
      const resolve = this.resolve
      this.resolve = undefined
      resolve({ delivered: Number(this.deliveredAt - this.started), acked: Number(at - this.started) })
    }
  }
}

/** Raw node:tls, leader to N-1 followers; with `signed`, an envelope sealed per round and opened by each. */
export const rawHarness = async (n: number, signed: boolean, timeoutMs: number): Promise<Harness> => {
  const leader = identity(0)
  const payload = Either.getOrThrow(Codec.encode(proposal(1n, leader.peerId)))
  let sequence = 1n
  const sealedSlot = () =>
    envelopeSlot(
      Either.getOrThrow(Envelope.seal(leader, { networkId: NETWORK, sequence: sequence++, payload })).bytes
    )
  const fixedFrame = encodeFrame(sealedSlot())
  const latch = new RoundLatch()
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
          socket.write(ackFrame)
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
    close: async () => {
      for (const socket of sockets) socket.destroy()
      await Promise.all(
        servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve())))
      )
    }
  }
}

/** N NodeNetwork validators over TLS, leader 0; resolves once the leader and every follower are connected. */
export const nodeHarness = async (n: number, timeoutMs: number): Promise<Harness> => {
  const scope = Effect.runSync(Scope.make())
  const latch = new RoundLatch()
  try {
    const leader = await Effect.runPromise(
      Effect.gen(function* () {
        const addresses = (yield* reservePorts(n)).map((port) => `127.0.0.1:${port}`)
        const networks = yield* Effect.forEach(
          addresses,
          (_, i) =>
            Effect.map(Layer.buildWithScope(NodeNetwork.layer(benchConfig(i, addresses)), scope), (c) =>
              Context.get(c, NodeNetwork)
            ),
          { concurrency: "unbounded" }
        )
        const leader = networks[0]!
        for (let i = 1; i < n; i++) {
          const follower = networks[i]!
          const ack = vote(1n, follower.self)
          yield* Effect.forkIn(
            Stream.runForEachChunk(follower.messages, (chunk) => {
              latch.delivered()
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
        // Every follower connected to the leader (the leader's view and each follower's own).
        const connected = (network: NodeNetwork.Shape) =>
          Effect.map(network.peers, (peers) => peers.filter((p) => p.state === "connected").map((p) => p.id))
        yield* Effect.gen(function* () {
          for (;;) {
            const fromLeader = yield* connected(leader)
            let ready = fromLeader.length >= n - 1
            for (let i = 1; ready && i < n; i++)
              ready = (yield* connected(networks[i]!)).includes(leader.self)
            if (ready) return
            yield* Effect.sleep(Duration.millis(20))
          }
        }).pipe(
          Effect.timeoutFail({ duration: Duration.millis(60_000), onTimeout: () => new Error("mesh not up") })
        )
        return leader
      })
    )
    const message = proposal(1n, leader.self)
    return {
      round: async () => {
        const done = latch.start(n - 1, timeoutMs)
        latch.restart()
        const receipt = await Effect.runPromise(leader.broadcast(message))
        if (receipt.failed.length > 0) throw new Error(`broadcast failed to ${receipt.failed.length} peers`)
        return await done
      },
      close: () => Effect.runPromise(Scope.close(scope, Exit.void))
    }
  } catch (error) {
    await Effect.runPromise(Scope.close(scope, Exit.void))
    throw error
  }
}
