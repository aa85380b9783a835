// The other validator of the node benchmark, forked by node.bench.ts: `peer.js raw` runs a raw
// node:tls server (the baseline), `peer.js node <address0> <address1>` runs validator 1 of a
// two-validator NodeNetwork. It reports its address over IPC, then, as the parent commands, counts
// messages and reports when the expected number has arrived (`sink`), or answers every message with
// one Vote (`echo`). Exits when the parent goes away.
import * as tls from "node:tls"
import { BenchProcess } from "@hotstuff2/testing"
import { Frame } from "@hotstuff2/wire"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import { NodeNetwork } from "../src/index.js"
import { benchConfig, directSlot, encodeFrame, identity, isMode, tlsMaterial, vote } from "./setup.js"

const { send, fail, echoing, count, serveRaw } = BenchProcess.peerSide()

const me = identity(1)
/** The answer to a ping: a Vote of this validator. */
const reply = vote(1n, me.peerId)

/** The baseline: frames decoded in the 'data' handler; counted, or answered with one Vote frame each. */
const raw = (): void => {
  const replySlot = directSlot(reply)
  serveRaw(
    (onSocket) =>
      tls.createServer({ ...tlsMaterial(me), requestCert: true, rejectUnauthorized: false }, onSocket),
    () => new Frame.FrameDecoder(),
    (socket) => socket.write(encodeFrame(replySlot))
  )
}

/** How validator 1 takes its messages: `receive` in a loop (default), or the `messages` stream. */
const consumer = process.env.BENCH_CONSUMER === "stream" ? "stream" : "receive"

/** Validator 1: takes its messages a chunk at a time; answers with `send`. */
const node = (addresses: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const context = yield* Layer.build(NodeNetwork.layer(benchConfig(1, addresses)))
    const network = Context.get(context, NodeNetwork)
    send({ type: "listening", address: network.address })
    if (consumer === "receive") {
      for (;;) {
        const chunk = yield* network.receive
        if (!echoing()) count(chunk.length)
        else for (const delivery of chunk) yield* Effect.ignore(network.send(delivery.from, reply))
      }
    }
    yield* Stream.runForEachChunk(network.messages, (chunk) => {
      if (!echoing()) {
        count(chunk.length)
        return Effect.void
      }
      return Effect.forEach(chunk, (delivery) => Effect.ignore(network.send(delivery.from, reply)), {
        discard: true
      })
    })
  }).pipe(Effect.scoped)

const mode = process.argv[2]
if (!isMode(mode) || process.send === undefined) {
  process.stderr.write("peer.ts: forked by node.bench.ts with a mode argument\n")
  process.exit(2)
}
if (mode === "raw") raw()
else {
  Effect.runPromise(node(process.argv.slice(3))).then(
    () => process.exit(0),
    (error: unknown) => fail(`node: ${String(error)}`)
  )
}
