// A TCP relay that adds WAN latency (tc netem is missing from this kernel): run by the chaos tests in
// a network namespace of their own, it listens on HOST:PORT for each route and forwards every
// connection to its target, holding each chunk for the current one-way delay plus jitter in both
// directions. Chunks keep their order (a chunk never leaves before the one ahead of it), and a
// direction that holds more than MAX_HELD bytes stops reading its source until it drains.
//
//   node --import tsx relay.ts HOST PORT=TARGET_HOST:TARGET_PORT ...
//
// Prints "relay ready" once every route listens. Reads commands on stdin, one a line:
// "delay MS JITTER_MS" sets the delay of every chunk from then on (acknowledged with "delay set").
// Exits when stdin closes, so it never outlives the test that started it.
import * as net from "node:net"
import * as readline from "node:readline"

const MAX_HELD = 4 * 1024 * 1024

let delay = 0
let jitter = 0

interface Held {
  readonly due: number
  readonly chunk: Buffer
}

/** Copies `from` to `to` after the delay, in order; pauses `from` while too much is held. */
const forward = (from: net.Socket, to: net.Socket): void => {
  const queue: Array<Held> = []
  let held = 0
  let timer: NodeJS.Timeout | undefined
  let ended = false
  const flush = () => {
    timer = undefined
    const now = Date.now()
    while (queue.length > 0 && queue[0]!.due <= now) {
      const { chunk } = queue.shift()!
      held -= chunk.length
      to.write(chunk)
    }
    if (held <= MAX_HELD / 2 && from.isPaused()) from.resume()
    if (queue.length > 0) timer = setTimeout(flush, queue[0]!.due - now)
    else if (ended) to.end()
  }
  from.on("data", (chunk: Buffer) => {
    const last = queue.length > 0 ? queue[queue.length - 1]!.due : 0
    const due = Math.max(last, Date.now() + delay + (Math.random() * 2 - 1) * jitter)
    queue.push({ due, chunk })
    held += chunk.length
    if (held > MAX_HELD) from.pause()
    if (timer === undefined) timer = setTimeout(flush, Math.max(0, due - Date.now()))
  })
  from.on("end", () => {
    ended = true
    if (queue.length === 0 && timer === undefined) to.end()
  })
  from.on("close", () => {
    if (!ended) {
      // Reset, not ended: cut the other side too, as a broken link would.
      if (timer !== undefined) clearTimeout(timer)
      to.destroy()
    }
  })
}

const [host, ...routes] = process.argv.slice(2)
if (host === undefined || routes.length === 0) {
  console.error("usage: relay.ts HOST PORT=TARGET_HOST:TARGET_PORT ...")
  process.exit(2)
}

let listening = 0
for (const route of routes) {
  const match = /^(\d+)=(.+):(\d+)$/.exec(route)
  if (match === null) {
    console.error(`relay: bad route ${route}`)
    process.exit(2)
  }
  const [, port, targetHost, targetPort] = match
  const server = net.createServer((inbound) => {
    const outbound = net.connect({ host: targetHost!, port: Number(targetPort) })
    inbound.setNoDelay(true)
    outbound.setNoDelay(true)
    inbound.on("error", () => outbound.destroy())
    outbound.on("error", () => inbound.destroy())
    forward(inbound, outbound)
    forward(outbound, inbound)
  })
  server.listen({ host, port: Number(port) }, () => {
    if (++listening === routes.length) console.log("relay ready")
  })
  server.on("error", (e) => {
    console.error(`relay: ${route}: ${e.message}`)
    process.exit(1)
  })
}

const commands = readline.createInterface({ input: process.stdin })
commands.on("line", (line) => {
  const match = /^delay (\d+(?:\.\d+)?) (\d+(?:\.\d+)?)$/.exec(line.trim())
  if (match === null) return console.error(`relay: unknown command ${line}`)
  delay = Number(match[1])
  jitter = Math.min(Number(match[2]), delay)
  console.log(`delay set ${delay} ${jitter}`)
})
commands.on("close", () => process.exit(0))
