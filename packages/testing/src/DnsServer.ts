/**
 * A real DNS server for tests, on 127.0.0.1: UDP and TCP on the same port (a resolver retries an
 * answer too large for UDP over TCP on the port it asked), answering SRV, A and AAAA from a record
 * table the test replaces at run time. Knobs for bad input: a delay before answering, an error code
 * (SERVFAIL, NXDOMAIN, REFUSED), no answer at all; a huge answer is a table with many records
 * (`headlessService` with a large `count`). Every query is recorded (name, type, protocol) so a test
 * waits for a re-resolve as an event (`awaitQueries`), never for a duration.
 *
 * The server runs in real time (its delay is a timer, not Effect's Clock): it stands for the world
 * outside the process, which TestClock does not drive.
 */
import * as net from "node:net"
import { Packet, type Question, TCPServer, UDPServer } from "dns2"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"

/** Record types the server answers from its table; any other type gets an empty answer. */
export type RecordType = "SRV" | "A" | "AAAA"

/** One record of the table. `ttl` in seconds, `defaultTtl` when absent. */
export type DnsRecord =
  | {
      readonly type: "SRV"
      readonly name: string
      readonly target: string
      readonly port: number
      readonly priority?: number
      readonly weight?: number
      readonly ttl?: number
    }
  | { readonly type: "A" | "AAAA"; readonly name: string; readonly address: string; readonly ttl?: number }

/**
 * How the server misbehaves. Applies to queries for `names` (all names when absent); `{}` is a
 * well-behaved server. A query is recorded before any of this happens.
 */
export interface Behaviour {
  readonly names?: ReadonlyArray<string>
  /** Wait this long (real time) before answering: a slow server. */
  readonly delay?: Duration.DurationInput
  /** Answer with this code and no records instead of the table's answer. */
  readonly rcode?: "SERVFAIL" | "NXDOMAIN" | "REFUSED"
  /** Never answer: a server that is gone, or a firewall that drops. */
  readonly silent?: boolean
}

/** One query received. `type` is the record type's name (`SRV`, `A`, `AAAA`, or another). */
export interface Query {
  readonly name: string
  readonly type: string
  readonly protocol: "udp" | "tcp"
}

/** Which queries to count: every field given must match (names case-insensitively). */
export interface QueryFilter {
  readonly name?: string
  readonly type?: string
  readonly protocol?: "udp" | "tcp"
}

/** A record the server could not put on the wire (an address that is not one, a port out of range). */
export class InvalidDnsRecord extends Data.TaggedError("InvalidDnsRecord")<{
  readonly record: DnsRecord
  readonly detail: string
}> {
  override get message() {
    return `DNS record ${this.record.type} ${this.record.name} refused by the test server: ${this.detail}`
  }
}

/** The server could not bind UDP and TCP to one port on 127.0.0.1. */
export class DnsServerBindError extends Data.TaggedError("DnsServerBindError")<{ readonly detail: string }> {
  override get message() {
    return `DNS test server: ${this.detail}`
  }
}

export interface DnsServer {
  readonly port: number
  /** `127.0.0.1:port`, as `Resolver.setServers` takes it. */
  readonly address: string
  /** Replaces the whole record table; the next query is answered from it. */
  readonly update: (records: ReadonlyArray<DnsRecord>) => Effect.Effect<void, InvalidDnsRecord>
  /** Replaces the misbehaviour; `behave({})` restores a well-behaved server. */
  readonly behave: (behaviour: Behaviour) => Effect.Effect<void>
  /** Every query received so far, in order. */
  readonly queries: Effect.Effect<ReadonlyArray<Query>>
  /** Queries received so far that match `filter`. */
  readonly count: (filter?: QueryFilter) => Effect.Effect<number>
  /** Waits until at least `atLeast` queries matching `filter` have been received; gives the count. */
  readonly awaitQueries: (filter: QueryFilter, atLeast: number) => Effect.Effect<number>
}

export interface Options {
  readonly records?: ReadonlyArray<DnsRecord>
  /** TTL (seconds) of records that give none. */
  readonly defaultTtl?: number
}

/** Attempts at finding a port free for both UDP and TCP. */
const bindAttempts = 20

/** dns2 writes IPv6 from hex groups only: an IPv4 tail (`::ffff:127.0.0.1`) becomes two groups. */
const hexGroups = (address: string): string =>
  address.replace(/(\d+)\.(\d+)\.(\d+)\.(\d+)$/, (_, a, b, c, d) =>
    [((Number(a) << 8) | Number(b)).toString(16), ((Number(c) << 8) | Number(d)).toString(16)].join(":")
  )

const normalize = (name: string): string => name.toLowerCase().replace(/\.$/, "")

const matches = (query: Query, filter: QueryFilter | undefined): boolean =>
  filter === undefined ||
  ((filter.name === undefined || normalize(filter.name) === query.name) &&
    (filter.type === undefined || filter.type === query.type) &&
    (filter.protocol === undefined || filter.protocol === query.protocol))

const validate = (record: DnsRecord): string | undefined => {
  if (
    record.ttl !== undefined &&
    !(Number.isInteger(record.ttl) && record.ttl >= 0 && record.ttl < 2 ** 31)
  ) {
    return `ttl ${record.ttl} is not a 31-bit count of seconds`
  }
  switch (record.type) {
    case "A":
      return net.isIPv4(record.address) ? undefined : `${record.address} is not an IPv4 address`
    case "AAAA":
      return net.isIPv6(record.address) ? undefined : `${record.address} is not an IPv6 address`
    case "SRV":
      for (const [field, value] of [
        ["port", record.port],
        ["priority", record.priority ?? 0],
        ["weight", record.weight ?? 0]
      ] as const) {
        if (!(Number.isInteger(value) && value >= 0 && value <= 65535))
          return `${field} ${value} out of range`
      }
      return undefined
  }
}

/**
 * The records of a Kubernetes headless Service with a named port: one SRV record per pod under
 * `_<portName>._tcp.<service>` pointing at `<pod>.<service>` on `port`, and that name's A (or AAAA)
 * record. `address(i)` gives pod `i`'s IP. A large `count` makes an answer too big for UDP.
 */
export const headlessService = (options: {
  readonly service: string
  readonly count: number
  readonly port: number
  readonly address: (i: number) => string
  readonly portName?: string
  readonly pod?: (i: number) => string
  readonly ttl?: number
}): { readonly srv: string; readonly records: ReadonlyArray<DnsRecord> } => {
  const srv = `_${options.portName ?? "p2p"}._tcp.${options.service}`
  const records: Array<DnsRecord> = []
  for (let i = 0; i < options.count; i++) {
    const target = `${options.pod?.(i) ?? `validator-${i}`}.${options.service}`
    const address = options.address(i)
    const ttl = options.ttl === undefined ? {} : { ttl: options.ttl }
    records.push({ type: "SRV", name: srv, target, port: options.port, ...ttl })
    records.push({ type: net.isIPv6(address) ? "AAAA" : "A", name: target, address, ...ttl })
  }
  return { srv, records }
}

const rcodes = {
  SERVFAIL: Packet.RCODE.SERVFAIL,
  NXDOMAIN: Packet.RCODE.NXDOMAIN,
  REFUSED: Packet.RCODE.REFUSED
}

/** Binds UDP to a free port on 127.0.0.1, then TCP to the same port; another port if TCP's is taken. */
const bind = async (
  udp: () => UDPServer,
  tcp: () => TCPServer
): Promise<{ readonly udp: UDPServer; readonly tcp: TCPServer; readonly port: number }> => {
  let lastError = ""
  for (let attempt = 0; attempt < bindAttempts; attempt++) {
    const socket = udp()
    await new Promise<void>((resolve, reject) => {
      socket.once("error", reject)
      socket.bind(0, "127.0.0.1", () => {
        socket.off("error", reject)
        resolve()
      })
    })
    const port = socket.address().port
    const server = tcp()
    const error = await new Promise<Error | undefined>((resolve) => {
      server.once("error", resolve)
      server.listen(port, "127.0.0.1", () => {
        server.off("error", resolve)
        resolve(undefined)
      })
    })
    if (error === undefined) return { udp: socket, tcp: server, port }
    lastError = error.message
    await new Promise<void>((resolve) => socket.close(() => resolve()))
  }
  throw new Error(`no port free for both UDP and TCP on 127.0.0.1 after ${bindAttempts} tries: ${lastError}`)
}

/** Starts the server; it stops (sockets closed, pending answers dropped) when the scope closes. */
export const make = (
  options: Options = {}
): Effect.Effect<DnsServer, DnsServerBindError | InvalidDnsRecord, Scope.Scope> =>
  Effect.gen(function* () {
    const defaultTtl = options.defaultTtl ?? 30
    let table: ReadonlyArray<DnsRecord> = []
    let behaviour: Behaviour = {}
    const log: Array<Query> = []
    const waiters = new Set<() => void>()
    const timers = new Set<NodeJS.Timeout>()
    const connections = new Set<net.Socket>()

    const setTable = (records: ReadonlyArray<DnsRecord>): InvalidDnsRecord | undefined => {
      for (const record of records) {
        const detail = validate(record)
        if (detail !== undefined) return new InvalidDnsRecord({ record, detail })
      }
      table = records.map((record) => ({ ...record, name: normalize(record.name) }))
      return undefined
    }
    const initial = setTable(options.records ?? [])
    if (initial !== undefined) return yield* initial

    const answer = (request: Packet, question: Question): Packet => {
      const name = normalize(question.name)
      const response = Packet.createResponseFromRequest(request)
      response.header.aa = 1
      const named = table.filter((record) => record.name === name)
      if (named.length === 0) {
        response.header.rcode = Packet.RCODE.NXDOMAIN
        return response
      }
      for (const record of named) {
        const type = Packet.TYPE[record.type]
        if (type !== question.type) continue
        const ttl = record.ttl ?? defaultTtl
        response.answers.push(
          record.type === "SRV"
            ? Packet.createResourceFromQuestion(question, {
                type,
                ttl,
                priority: record.priority ?? 0,
                weight: record.weight ?? 1,
                port: record.port,
                target: record.target
              })
            : Packet.createResourceFromQuestion(question, {
                type,
                ttl,
                address: record.type === "AAAA" ? hexGroups(record.address) : record.address
              })
        )
      }
      return response
    }

    const handle =
      (protocol: "udp" | "tcp") =>
      (request: Packet, send: (response: Packet | Buffer) => unknown): void => {
        const question = request.questions[0]
        if (question === undefined) return
        const name = normalize(question.name)
        log.push({ name, type: Packet.TYPE_NAME[question.type] ?? String(question.type), protocol })
        for (const waiter of waiters) waiter()
        const now = behaviour
        const applies = now.names === undefined || now.names.some((n) => normalize(n) === name)
        if (applies && now.silent) return
        const reply = () => {
          let response: Packet
          if (applies && now.rcode !== undefined) {
            response = Packet.createResponseFromRequest(request)
            response.header.rcode = rcodes[now.rcode]
          } else {
            response = answer(request, question)
          }
          try {
            // UDP's send returns a promise (rejected once the socket is closed); TCP's returns nothing.
            void Promise.resolve(send(response)).catch(() => {})
          } catch {
            // The connection went away while the answer was being written.
          }
        }
        const delay = applies && now.delay !== undefined ? Duration.toMillis(now.delay) : 0
        if (delay <= 0) {
          reply()
          return
        }
        const timer = setTimeout(() => {
          timers.delete(timer)
          reply()
        }, delay)
        timers.add(timer)
      }

    const sockets = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () =>
          bind(
            () => {
              const socket = new UDPServer()
              socket.on("request", handle("udp"))
              socket.on("error", () => {})
              socket.on("requestError", () => {})
              return socket
            },
            () => {
              const server = new TCPServer(handle("tcp"))
              server.on("requestError", () => {})
              server.on("connection", (socket) => {
                connections.add(socket)
                socket.on("error", () => {})
                socket.once("close", () => connections.delete(socket))
              })
              return server
            }
          ),
        catch: (error) =>
          new DnsServerBindError({ detail: error instanceof Error ? error.message : String(error) })
      }),
      ({ tcp, udp }) =>
        Effect.async<void>((resume) => {
          for (const timer of timers) clearTimeout(timer)
          timers.clear()
          // A resolver may keep its TCP connection open; `close` waits for every connection to end.
          for (const socket of connections) socket.destroy()
          let open = 2
          const closed = () => {
            open -= 1
            if (open === 0) resume(Effect.void)
          }
          udp.close(closed)
          tcp.close(closed)
        })
    )

    const count = (filter?: QueryFilter): number =>
      log.reduce((n, query) => (matches(query, filter) ? n + 1 : n), 0)

    return {
      port: sockets.port,
      address: `127.0.0.1:${sockets.port}`,
      update: (records) =>
        Effect.suspend(() => {
          const error = setTable(records)
          return error === undefined ? Effect.void : Effect.fail(error)
        }),
      behave: (next) =>
        Effect.sync(() => {
          behaviour = next
        }),
      queries: Effect.sync(() => log.slice()),
      count: (filter) => Effect.sync(() => count(filter)),
      awaitQueries: (filter, atLeast) =>
        Effect.async<number>((resume) => {
          const check = () => {
            const n = count(filter)
            if (n >= atLeast) {
              waiters.delete(check)
              resume(Effect.succeed(n))
            }
          }
          waiters.add(check)
          check()
          return Effect.sync(() => {
            waiters.delete(check)
          })
        })
    } satisfies DnsServer
  })
