/**
 * The reference app as a devnet: N validator processes on 127.0.0.1, each running `NodeNetwork` over
 * TLS and `Consensus` over it with its own key and data directory, forked from this process with an
 * IPC channel. A live table while they run (committed height, commits/s, commit latency, view,
 * timeouts), then a clean stop and a summary that reads every validator's ledger and says whether
 * they all committed the same chain.
 */
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { Identity } from "@hotstuff2/wire"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Schedule from "effect/Schedule"
import type { Status } from "../Validator.js"
import { type Agreement, agreement, readChain } from "./chain.js"
import type { StatusReport, ValidatorSetup } from "./protocol.js"
import * as Table from "./table.js"
import { spawn, type ValidatorProcess } from "./ValidatorProcess.js"

/** A validator killed with SIGKILL, or started again with its key and data, this long into the run. */
export interface ScheduledEvent {
  readonly index: number
  readonly at: Duration.DurationInput
}

export interface DevnetOptions {
  /** Validators. Default 4 (one fault tolerated). */
  readonly validators?: number
  /** How long the validators run once all of them are up. Default 30 seconds. */
  readonly duration?: Duration.DurationInput
  /** Bytes of each proposed block body. Default 256. */
  readonly payloadBytes?: number
  /** The view timer after progress, ms. Default 1,000. */
  readonly baseTimeout?: number
  /** Keys and data here (`v0/`, `v1/`, ...), reused when present; default: a temporary directory, removed at the end. */
  readonly dataDirectory?: string
  readonly kills?: ReadonlyArray<ScheduledEvent>
  readonly restarts?: ReadonlyArray<ScheduledEvent>
  /** How often each validator reports its status, ms. Default 1,000. */
  readonly statusInterval?: number
  /** Forward every line the validators write to `log`, prefixed with the validator. Default false. */
  readonly verbose?: boolean
  /** Where the table and the summary go. Default stdout. */
  readonly write?: (text: string) => void
  /** Where logs go. Default stderr. */
  readonly log?: (text: string) => void
  /** Redraw the table in place each second (else print it as plain lines every 5 s). Default: stdout is a TTY. */
  readonly tty?: boolean
  /** Every validator must be up within this (tsx on a busy machine is slow). Default 60 seconds. */
  readonly startTimeout?: Duration.DurationInput
  /** Stop at SIGINT/SIGTERM and still print the summary. Default true. */
  readonly handleSignals?: boolean
  /**
   * Every validator's `telemetry.otlpEndpoint`: an OTLP/HTTP collector (Jaeger on 4318) gets each
   * one's spans (the block-life spans and the node's own) and metrics, under the service
   * `hotstuff2-<8 hex of its PeerId>`; spans leave in batches every 500 ms and the rest when a
   * validator stops (at most `telemetry.exportTimeout`, 2 s). Default none: the validators inherit
   * `OTEL_EXPORTER_OTLP_ENDPOINT` from this process's environment, as any node does.
   */
  readonly otlpEndpoint?: string
}

/** What the devnet ended with. */
export interface DevnetResult {
  readonly seconds: number
  /** `Date.now()` when every validator was up and the run's `duration` began; undefined if it never did. */
  readonly startedAt: number | undefined
  readonly validators: ReadonlyArray<{
    readonly index: number
    readonly peerId: string | undefined
    /** The height of its ledger's last block, read back after the stop. */
    readonly committedHeight: number
    readonly state: string
    readonly status: Status | undefined
    /** Its status reports, oldest first (of its last start): commits and timeouts over any window. */
    readonly reports: ReadonlyArray<StatusReport>
  }>
  readonly agreement: Agreement
  readonly failures: ReadonlyArray<string>
}

/** The devnet could not start, a validator failed, nothing was committed or the chains differ. */
export class DevnetFailed extends Data.TaggedError("DevnetFailed")<{
  readonly reason: string
  readonly result?: DevnetResult | undefined
}> {
  override get message() {
    return `devnet failed: ${this.reason}`
  }
}

/** The network id of every devnet. */
export const NETWORK_ID = "hotstuff2-example-devnet"
/** A validator asked to stop that has not exited after this is killed (and counted as failed). */
export const STOP_TIMEOUT = Duration.seconds(15)
const REDRAW_TTY = Duration.seconds(1)
const REDRAW_PLAIN = Duration.seconds(5)
const MAX_VALIDATORS = 64

/** `count` distinct free ports on 127.0.0.1: all bound at once (so they differ), read, then released. */
export const reservePorts = (count: number): Effect.Effect<ReadonlyArray<number>> =>
  Effect.promise(async () => {
    const servers = Array.from({ length: count }, () => net.createServer())
    const ports = await Promise.all(
      servers.map(
        (server) =>
          new Promise<number>((resolve, reject) => {
            server.once("error", reject)
            server.listen({ host: "127.0.0.1", port: 0, exclusive: true }, () =>
              resolve((server.address() as net.AddressInfo).port)
            )
          })
      )
    )
    await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))))
    return ports
  })

export interface Prepared {
  readonly root: string
  /** The root was made for this run (and is removed at its end). */
  readonly temporary: boolean
  readonly setups: ReadonlyArray<ValidatorSetup>
}

/**
 * Keys and data directories for `validators` validators under `dataDirectory` (a new temporary one
 * when not given; a key already there is reused, so a devnet can be resumed), free ports on
 * 127.0.0.1, and each validator's setup: TLS, every validator's address, its network state in
 * `network/` beside its ledger.
 */
export const prepare = (options: {
  readonly validators: number
  readonly dataDirectory?: string | undefined
  readonly payloadBytes?: number | undefined
  readonly baseTimeout?: number | undefined
  readonly statusInterval?: number | undefined
  /** Every validator's `telemetry.otlpEndpoint` (see `DevnetOptions`). */
  readonly otlpEndpoint?: string | undefined
}): Effect.Effect<Prepared, DevnetFailed> =>
  Effect.gen(function* () {
    const n = options.validators
    const temporary = options.dataDirectory === undefined
    const root =
      options.dataDirectory === undefined
        ? fs.mkdtempSync(path.join(os.tmpdir(), "hotstuff2-devnet-"))
        : path.resolve(options.dataDirectory)
    const identities: Array<{ identity: Identity.Identity; keyFile: string; directory: string }> = []
    for (let i = 0; i < n; i++) {
      const directory = path.join(root, `v${i}`)
      const keyFile = path.join(directory, "key.pem")
      fs.mkdirSync(path.join(directory, "network"), { recursive: true })
      const identity = fs.existsSync(keyFile)
        ? yield* Identity.load(keyFile)
        : yield* Effect.tap(Identity.generate, (identity) => Identity.save(identity, keyFile))
      identities.push({ identity, keyFile, directory })
    }
    const ports = yield* reservePorts(n)
    const addresses = ports.map((port) => `127.0.0.1:${port}`)
    const setups = identities.map(
      ({ keyFile, directory }, i): ValidatorSetup => ({
        index: i,
        keyFile,
        dataDirectory: directory,
        networkId: NETWORK_ID,
        payloadBytes: options.payloadBytes ?? 256,
        baseTimeout: options.baseTimeout ?? 1_000,
        statusInterval: options.statusInterval ?? 1_000,
        config: {
          identity: { keyFile },
          listen: addresses[i]!,
          transport: "tls",
          networkId: NETWORK_ID,
          validators: identities.map((v, j) => ({ id: v.identity.peerId, addresses: [addresses[j]!] })),
          dataDirectory: path.join(directory, "network"),
          // Every validator shares 127.0.0.1.
          limits: { maxConnectionsPerIp: 4 * n + 16 },
          // One machine: loopback records are fine.
          discovery: { allowLoopback: true },
          ...(options.otlpEndpoint === undefined ? {} : { telemetry: { otlpEndpoint: options.otlpEndpoint } })
        }
      })
    )
    return { root, temporary, setups }
  }).pipe(Effect.mapError((e) => new DevnetFailed({ reason: `preparing keys and data: ${e.message}` })))

const secondsOf = (at: Duration.DurationInput) => Duration.toMillis(Duration.decode(at)) / 1000

/** Runs the devnet to its end and prints its summary; fails when it did not go well. */
export const run = (options: DevnetOptions = {}): Effect.Effect<DevnetResult, DevnetFailed> =>
  Effect.gen(function* () {
    const n = options.validators ?? 4
    const duration = Duration.decode(options.duration ?? "30 seconds")
    const write = options.write ?? ((text: string) => void process.stdout.write(text))
    const log = options.log ?? ((text: string) => void process.stderr.write(text))
    const tty = options.tty ?? process.stdout.isTTY === true
    const startTimeout = Duration.decode(options.startTimeout ?? "60 seconds")
    if (!Number.isInteger(n) || n < 1 || n > MAX_VALIDATORS) {
      return yield* new DevnetFailed({ reason: `validators must be 1 to ${MAX_VALIDATORS}, got ${n}` })
    }
    const events = [
      ...(options.kills ?? []).map((e) => ({ ...e, kind: "kill" as const })),
      ...(options.restarts ?? []).map((e) => ({ ...e, kind: "restart" as const }))
    ].sort((a, b) => secondsOf(a.at) - secondsOf(b.at))
    const outside = events.find((e) => !Number.isInteger(e.index) || e.index < 0 || e.index >= n)
    if (outside !== undefined) {
      return yield* new DevnetFailed({
        reason: `--${outside.kind} names validator ${outside.index}, not 0 to ${n - 1}`
      })
    }

    const prepared = yield* prepare({
      validators: n,
      dataDirectory: options.dataDirectory,
      payloadBytes: options.payloadBytes,
      baseTimeout: options.baseTimeout,
      statusInterval: options.statusInterval,
      otlpEndpoint: options.otlpEndpoint
    })
    const body = Effect.gen(function* () {
      const processes: Array<ValidatorProcess> = []
      const peerIds: Array<string | undefined> = prepared.setups.map(() => undefined)
      const failures: Array<string> = []
      const failed = yield* Deferred.make<void>()
      const stopSignal = yield* Deferred.make<void>()
      let startedAt: number | undefined
      let stoppedAt: number | undefined

      const spawnOptions = {
        onFailure: (index: number, reason: string) => {
          failures.push(`validator ${index}: ${reason}`)
          log(`devnet: validator ${index} failed: ${reason}\n`)
          Deferred.unsafeDone(failed, Exit.void)
        },
        ...(options.verbose === true
          ? { onLine: (index: number, line: string) => log(`[v${index}] ${line}\n`) }
          : {})
      }
      const start = (index: number) =>
        Effect.gen(function* () {
          const p = yield* spawn(prepared.setups[index]!, spawnOptions)
          processes[index] = p
          yield* Effect.forkDaemon(
            Effect.tap(Effect.option(Deferred.await(p.ready)), (id) =>
              Effect.sync(() => {
                if (id._tag === "Some") peerIds[index] = id.value
              })
            )
          )
          return p
        })
      const stopAll = Effect.suspend(() => {
        stoppedAt ??= Date.now()
        return Effect.forEach(processes, (p) => p.stop(STOP_TIMEOUT), {
          concurrency: "unbounded",
          discard: true
        })
      })

      const redraw = (drawn: { lines: number }) =>
        Effect.sync(() => {
          const elapsed = startedAt === undefined ? 0 : (Date.now() - startedAt) / 1000
          const lines = [
            `devnet: ${n} validators over TLS  ${elapsed.toFixed(0)} s of ${Duration.format(duration)}`,
            Table.header(),
            ...processes.map((p) =>
              Table.row({
                index: p.index,
                peerId: peerIds[p.index],
                state: p.state(),
                latest: p.latest(),
                previous: p.previous()
              })
            )
          ]
          if (tty) {
            const up = drawn.lines > 0 ? `\x1b[${drawn.lines}F\x1b[0J` : ""
            drawn.lines = lines.length
            write(`${up}${lines.join("\n")}\n`)
          } else {
            write(`${lines.join("\n")}\n\n`)
          }
        })

      const scheduled = Effect.forEach(
        events,
        (event) =>
          Effect.gen(function* () {
            const wait = secondsOf(event.at) * 1000 - (Date.now() - (startedAt ?? Date.now()))
            if (wait > 0) yield* Effect.sleep(Duration.millis(wait))
            const current = processes[event.index]!
            if (event.kind === "kill") {
              log(`devnet: SIGKILL to validator ${event.index}\n`)
              yield* current.kill
            } else if (current.state() === "killed" || current.state() === "exited") {
              log(`devnet: restarting validator ${event.index} with its key and data\n`)
              yield* start(event.index)
            }
          }),
        { discard: true }
      )

      const session = Effect.gen(function* () {
        if (options.handleSignals ?? true) {
          // Ctrl-C reaches the validators too (one process group): their exits are expected.
          const onSignal = () => {
            for (const p of processes) p.expectExit()
            Deferred.unsafeDone(stopSignal, Exit.void)
          }
          yield* Effect.acquireRelease(
            Effect.sync(() => {
              process.on("SIGINT", onSignal)
              process.on("SIGTERM", onSignal)
            }),
            () =>
              Effect.sync(() => {
                process.off("SIGINT", onSignal)
                process.off("SIGTERM", onSignal)
              })
          )
        }
        const launchedAt = Date.now()
        yield* Effect.acquireRelease(
          Effect.forEach(prepared.setups, (_, i) => start(i), { discard: true }),
          () =>
            Effect.gen(function* () {
              const at = Date.now()
              log(`devnet: stopping the validators\n`)
              yield* stopAll
              log(`devnet: all stopped in ${((Date.now() - at) / 1000).toFixed(1)} s\n`)
            })
        )
        log(
          `devnet: ${n} validators over TLS on ${prepared.setups.map((s) => s.config.listen).join(", ")}; ` +
            `data in ${prepared.root}${prepared.temporary ? " (removed at the end)" : ""}` +
            `${options.otlpEndpoint === undefined ? "" : `; spans to ${options.otlpEndpoint}`}\n`
        )
        const allReady = Effect.forEach(processes, (p) => Deferred.await(p.ready), { discard: true })
        const up = yield* Effect.raceFirst(
          Effect.either(allReady),
          Effect.as(Deferred.await(stopSignal), undefined)
        ).pipe(Effect.timeout(startTimeout), Effect.option)
        if (up._tag === "None") {
          failures.push(
            `validators ${processes
              .filter((p) => p.state() === "starting")
              .map((p) => p.index)
              .join(", ")} not up within ${Duration.format(startTimeout)}`
          )
          return
        }
        if (up.value === undefined || up.value._tag === "Left") return
        startedAt = Date.now()
        log(`devnet: all ${n} validators up in ${((startedAt - launchedAt) / 1000).toFixed(1)} s\n`)
        const drawn = { lines: 0 }
        yield* Effect.forkScoped(
          Effect.repeat(redraw(drawn), Schedule.spaced(tty ? REDRAW_TTY : REDRAW_PLAIN)).pipe(
            Effect.delay(tty ? 0 : REDRAW_PLAIN)
          )
        )
        yield* Effect.forkScoped(scheduled)
        yield* Effect.raceAll([Effect.sleep(duration), Deferred.await(failed), Deferred.await(stopSignal)])
        stoppedAt = Date.now()
        if (tty) yield* redraw(drawn)
      })
      yield* Effect.scoped(session)

      const chains = yield* Effect.forEach(prepared.setups, (s) =>
        readChain(s.index, s.dataDirectory).pipe(
          Effect.catchAll((e) =>
            Effect.sync(() => {
              failures.push(`validator ${s.index}: its ledger does not read back: ${e.message}`)
              return { index: s.index, hashes: [] as ReadonlyArray<string> }
            })
          )
        )
      )
      const agreed = agreement(chains)
      const result: DevnetResult = {
        seconds: startedAt === undefined ? 0 : ((stoppedAt ?? Date.now()) - startedAt) / 1000,
        startedAt,
        validators: prepared.setups.map((_, i) => ({
          index: i,
          peerId: peerIds[i],
          committedHeight: chains[i]!.hashes.length,
          state: processes[i]?.state() ?? "not started",
          status: processes[i]?.latest()?.status,
          reports: processes[i]?.history() ?? []
        })),
        agreement: agreed,
        failures
      }
      write(summary(result))
      if (failures.length > 0) {
        for (const p of processes) {
          if (p.failure() === undefined) continue
          for (const line of p.output()) log(`  [v${p.index}] ${line}\n`)
        }
      }
      const reason =
        failures.length > 0
          ? failures.join("; ")
          : agreed._tag === "Differ"
            ? `validators committed different blocks at height ${agreed.height}`
            : agreed.height === 0
              ? "no block was committed by every validator"
              : undefined
      if (reason !== undefined) return yield* new DevnetFailed({ reason, result })
      return result
    })
    return yield* body.pipe(
      Effect.ensuring(
        Effect.sync(() => {
          if (prepared.temporary) fs.rmSync(prepared.root, { recursive: true, force: true })
        })
      )
    )
  })

const short = (hash: string | undefined) => (hash === undefined ? "-" : hash.slice(0, 16))

/** The summary: each validator's committed height and figures, then whether they agree (and a JSON line). */
export const summary = (result: DevnetResult): string => {
  const n = result.validators.length
  const a = result.agreement
  const lines = [
    "",
    `devnet summary: ${n} validators over TLS, ${result.seconds.toFixed(1)} s`,
    ...result.validators.map((v) => {
      const s = v.status
      const figures =
        s === undefined
          ? "no report"
          : `view ${s.view}  commits ${s.commits}  p50 ${s.latency.p50 ?? "-"} ms  p99 ${s.latency.p99 ?? "-"} ms  ` +
            `timeouts ${s.timeouts}  synced ${s.synced}  refused ${s.refused}`
      return `  v${v.index} ${v.peerId?.slice(0, 8) ?? "--------"}  committed height ${v.committedHeight}  ${figures}  (${v.state})`
    }),
    a._tag === "Agree"
      ? a.height > 0
        ? `all ${n} validators committed the same chain up to height ${a.height} (hash ${a.hash})`
        : `no block was committed by all ${n} validators`
      : `validators differ at height ${a.height}: ${a.holders
          .map((h) => `${h.validators.map((i) => `v${i}`).join(",")} hold ${short(h.hash)}`)
          .join("; ")}`,
    ...result.failures.map((f) => `  failure: ${f}`)
  ]
  const json = {
    summary: {
      ok: result.failures.length === 0 && a._tag === "Agree" && a.height > 0,
      validators: n,
      seconds: result.seconds,
      agreement: a,
      nodes: result.validators.map((v) => ({
        index: v.index,
        peerId: v.peerId ?? null,
        committedHeight: v.committedHeight,
        state: v.state,
        view: v.status === undefined ? null : String(v.status.view),
        commits: v.status?.commits ?? null,
        timeouts: v.status?.timeouts ?? null,
        synced: v.status?.synced ?? null,
        latencyP50: v.status?.latency.p50 ?? null,
        latencyP99: v.status?.latency.p99 ?? null
      })),
      failures: result.failures
    }
  }
  return `${lines.join("\n")}\n${JSON.stringify(json)}\n`
}
