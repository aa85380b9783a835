// Free ports on 127.0.0.1 for a devnet, whose validators must know each other's addresses first.
import * as net from "node:net"
import * as Effect from "effect/Effect"

/** `count` distinct free ports on `host`: all are bound at once (so they differ), read, then released. */
export const reservePorts = (count: number, host = "127.0.0.1"): Effect.Effect<ReadonlyArray<number>> =>
  Effect.promise(async () => {
    const servers = Array.from({ length: count }, () => net.createServer())
    const ports = await Promise.all(
      servers.map(
        (server) =>
          new Promise<number>((resolve, reject) => {
            server.once("error", reject)
            server.listen({ host, port: 0, exclusive: true }, () =>
              resolve((server.address() as net.AddressInfo).port)
            )
          })
      )
    )
    await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))))
    return ports
  })
