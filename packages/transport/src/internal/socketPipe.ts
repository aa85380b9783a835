// A node:net or node:tls socket as a Pipe. Coalesced writes go out as one writev (cork/uncork).
import type * as net from "node:net"
import type { Pipe } from "./pipe.js"

export const socketPipe = (socket: net.Socket, remoteAddress: string): Pipe => {
  let lastError: Error | undefined
  // A socket without an 'error' listener crashes the process on error: always listen.
  socket.on("error", (error) => {
    lastError = error
  })
  return {
    remoteAddress,
    attach: (handlers) => {
      socket.on("data", handlers.data)
      socket.on("drain", handlers.drain)
      socket.once("close", () => handlers.close(lastError))
      if (socket.destroyed) queueMicrotask(() => handlers.close(lastError))
    },
    write: (chunks) => {
      if (socket.destroyed || !socket.writable) return true
      if (chunks.length === 1) return socket.write(chunks[0]!)
      socket.cork()
      let more = true
      for (const chunk of chunks) more = socket.write(chunk)
      socket.uncork()
      return more
    },
    pause: () => {
      socket.pause()
    },
    resume: () => {
      socket.resume()
    },
    end: (onFinished) => {
      if (socket.destroyed || socket.writableFinished) {
        if (onFinished !== undefined) queueMicrotask(onFinished)
        return
      }
      if (onFinished === undefined) socket.end()
      else {
        let called = false
        const once = () => {
          if (!called) {
            called = true
            onFinished()
          }
        }
        socket.end(once)
        socket.once("close", once)
      }
    },
    destroy: (error) => {
      socket.destroy(error)
    }
  }
}
