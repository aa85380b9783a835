// The receiver process of the transport benchmark, forked by transport.bench.ts with its mode as the
// only argument. It listens on 127.0.0.1 (any free port), reports the address over IPC, accepts one
// connection, and then, as the parent commands: counts messages and reports when the expected number
// has arrived (`sink`), or sends every frame straight back (`echo`). Exits when the parent goes away.
import * as net from "node:net"
import * as tls from "node:tls"
import { BenchProcess } from "@hotstuff2/testing"
import { Frame } from "@hotstuff2/wire"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import { QuicTransport, TcpTransport, TlsTransport, Transport, TransportConfig } from "../src/index.js"

import {
  encodeFrame,
  isMode,
  type Mode,
  quicOptions,
  receiverIdentity,
  tlsMaterial,
  tlsVersions,
  transportConfig
} from "./setup.js"

const { consensus } = TransportConfig.Channel
const { send, fail, echoing, count, serveRaw } = BenchProcess.peerSide()

const LISTEN = { host: "127.0.0.1", port: 0 }

/** The raw baselines: decode synchronously in the data handler, count or echo each frame. */
const raw = (kind: "tls" | "tcp"): void =>
  serveRaw(
    (onSocket) =>
      kind === "tls"
        ? tls.createServer(
            {
              ...tlsMaterial(receiverIdentity),
              ...tlsVersions,
              requestCert: true,
              rejectUnauthorized: false
            },
            onSocket
          )
        : net.createServer({ noDelay: true }, onSocket),
    () => new Frame.FrameDecoder(),
    // Re-encoded, as the transport's echo re-encodes through `send`.
    (socket, frame) => {
      for (const message of frame.messages) socket.write(encodeFrame(message))
    }
  )

/** Our Transport: consume with `connection.receive` (a batch per take); echo with `unsafeSend`. */
const transport = (kind: "tls" | "tcp" | "quic") =>
  Effect.gen(function* () {
    const layer =
      kind === "tls"
        ? TlsTransport.layer({ identity: receiverIdentity, config: transportConfig })
        : kind === "quic"
          ? QuicTransport.layer({ identity: receiverIdentity, config: transportConfig, quic: quicOptions })
          : TcpTransport.layer({
              identity: receiverIdentity,
              config: transportConfig,
              allowUnencrypted: true
            })
    const context = yield* Layer.build(layer)
    const listener = yield* Context.get(context, Transport.Transport).listen(`${LISTEN.host}:${LISTEN.port}`)
    send({ type: "listening", address: listener.address })
    const connection = yield* Stream.runHead(listener.connections).pipe(
      Effect.flatMap((first) =>
        first._tag === "Some" ? Effect.succeed(first.value) : Effect.dieMessage("listener closed")
      )
    )
    for (;;) {
      const taken = yield* Effect.either(connection.receive)
      if (taken._tag === "Left") return // the parent closed the connection: done
      const frames = taken.right
      if (echoing()) {
        for (const frame of frames) connection.unsafeSend(consensus, frame.messages)
      } else {
        let n = 0
        for (const frame of frames) n += frame.messages.length
        count(n)
      }
    }
  }).pipe(Effect.scoped)

const mode: Mode | undefined = isMode(process.argv[2]) ? process.argv[2] : undefined
if (mode === undefined || process.send === undefined) {
  process.stderr.write("receiver.ts: forked by transport.bench.ts with a mode argument\n")
  process.exit(2)
}
if (mode === "raw-tls" || mode === "raw-tcp") raw(mode === "raw-tls" ? "tls" : "tcp")
else {
  // The stream ends when the parent closes the connection: done.
  Effect.runPromise(
    transport(mode === "transport-tls" ? "tls" : mode === "transport-quic" ? "quic" : "tcp")
  ).then(
    () => process.exit(0),
    (error: unknown) => fail(`transport: ${String(error)}`)
  )
}
