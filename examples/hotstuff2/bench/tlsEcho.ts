// The raw baseline's other process, forked by rawTls.ts: a node:tls server on 127.0.0.1 that answers
// every frame with the same frame while the parent asks for echoes.
import * as tls from "node:tls"
import { BenchProcess } from "@hotstuff2/testing"
import { Frame, Identity } from "@hotstuff2/wire"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { tlsMaterial } from "./tlsMaterial.js"

const { serveRaw } = BenchProcess.peerSide()
const me = Effect.runSync(Identity.generate)

serveRaw(
  (onSocket) =>
    tls.createServer({ ...tlsMaterial(me), requestCert: true, rejectUnauthorized: false }, onSocket),
  () => new Frame.FrameDecoder(),
  (socket, frame) => {
    socket.write(Either.getOrThrow(Frame.encode(frame)))
  }
)
