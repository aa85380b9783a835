// The DNS source: SRV names (a Kubernetes headless Service's `_p2p._tcp.<svc>.<ns>.svc.cluster.local`)
// to dial addresses, and validators' configured host names to IPs, re-resolved on an interval bounded
// by the answers' TTLs. Answers are dial hints only: who is behind an address is proven by its key.
//
// What goes wrong, and what becomes of it:
// - A failed query (timeout, SERVFAIL, NXDOMAIN, refused, no server): the last good answer for that
//   query is kept, the failure counted, and logged when it starts or its code changes, then at most
//   once per `maxInterval` while it lasts. The next round comes after `minInterval`.
// - An answer with more than `maxRecords` records: the first `maxRecords` (in a stable order, so a
//   rotating server does not churn the set) are read, the rest counted as truncated and not resolved.
// - An address the policy refuses (`refuseHost`: loopback unless allowed, unspecified, multicast,
//   link-local): dropped and counted by reason. Counts are per round: a bad record counts each time
//   an answer holds it.
// - A server that never answers: each query is bounded by its own deadline and each round by one
//   overall deadline (both on Effect's Clock), so nothing holds the loop forever; an overrun round is
//   interrupted, its outstanding queries cancelled and counted as one failure.
import { promises as dns } from "node:dns"
import * as net from "node:net"
import { Transport } from "@hotstuff2/transport"
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Ref from "effect/Ref"
import type * as Scope from "effect/Scope"
import { type DnsConfig, InvalidDiscoveryConfig } from "../DiscoveryConfig.js"
import { type AddressPolicy, type AddressRefusal, check, refuseHost } from "./addresses.js"

/** One address found for a name. */
export interface DnsTarget {
  /** The SRV name or host name asked. */
  readonly name: string
  /** The SRV record's target, or the host name itself. */
  readonly target: string
  /** `ip:port` (IPv6 in brackets) for an SRV name; the bare IP for a host name. */
  readonly address: string
}

/** What the source has done since it started. */
export interface DnsStats {
  /** Resolution rounds completed (the loop's and `refresh`'s). */
  readonly rounds: number
  /** Queries sent (SRV, A, AAAA). */
  readonly queries: number
  /** Queries that failed (the last good answer was kept), and rounds that overran their deadline. */
  readonly failures: number
  /** Records past `maxRecords` in an answer, not read. */
  readonly truncated: number
  /** Addresses and names dropped by the address policy, by reason. */
  readonly refused: Readonly<Partial<Record<AddressRefusal, number>>>
}

export interface DnsSource {
  readonly stats: Effect.Effect<DnsStats>
  /** The last good answer of each name that has had one (as last given to `onAnswer`). */
  readonly current: Effect.Effect<ReadonlyMap<string, ReadonlyArray<DnsTarget>>>
  /** Runs one round now (after the one in progress, if any) and returns when it is done. */
  readonly refresh: Effect.Effect<void>
}

export interface DnsSourceOptions {
  readonly config: DnsConfig
  /** Host names in validators' configured addresses, resolved to their IPs. */
  readonly hosts: ReadonlyArray<string>
  readonly allowLoopback: boolean
  /**
   * Called when a name's good answer changes, the first good answer included (even an empty one);
   * never for a failed query. Targets are sorted and distinct. A failure or defect of this callback
   * is logged and does not stop the source.
   */
  readonly onAnswer: (name: string, targets: ReadonlyArray<DnsTarget>) => Effect.Effect<void>
}

/** A query that got no usable answer; `code` is node:dns's (`ETIMEOUT`, `ESERVFAIL`, `ENOTFOUND`...). */
export class DnsQueryFailed extends Data.TaggedError("DnsQueryFailed")<{
  readonly name: string
  readonly type: "SRV" | "A" | "AAAA"
  readonly code: string
}> {
  override get message() {
    return `DNS ${this.type} query for ${this.name} failed: ${this.code}`
  }
}

interface Resolved {
  readonly address: string
  readonly ttl: number
}

/** An answer: fresh, or the last good one in place of a failure (none when there never was one). */
interface Answer<A> {
  readonly records: ReadonlyArray<A> | undefined
  readonly fresh: boolean
}

/** What one round gathers: the TTLs of fresh A/AAAA answers, and whether any query failed. */
interface RoundState {
  readonly ttls: Array<number>
  failed: boolean
}

interface SrvRecord {
  readonly name: string
  readonly port: number
  readonly priority: number
  readonly weight: number
}

/** Per failing query: when it was last logged and with which code. */
interface FailureLog {
  readonly code: string
  readonly at: number
}

/**
 * How long the source waits, on Effect's Clock, for one query and for one round, whatever node:dns
 * does. c-ares (1.34 in Node 20) spaces its tries exponentially from `timeout`, with a floor of about
 * 250 ms a try (measured here: 1 s x 2 tries gives up after 4 s, 1 s x 3 after 7 s, 0.2 s x 1 after
 * 0.4 s): a query's deadline is max(timeout, 1 s) x 2^(tries + 1), above all of these, so node:dns
 * times out first and this only catches a query it never ends. A round has two stages one after the
 * other (SRV, then every target's A and AAAA at once, at most `maxRecords` per answer): twice that.
 */
export const deadlines = (
  config: DnsConfig
): { readonly query: Duration.Duration; readonly round: Duration.Duration } => {
  const query = Duration.millis(
    Math.max(Duration.toMillis(config.timeout), 1000) * 2 ** Math.min(config.tries + 1, 20)
  )
  return { query, round: Duration.times(query, 2) }
}

const byText = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0)

const sameTargets = (a: ReadonlyArray<DnsTarget>, b: ReadonlyArray<DnsTarget>): boolean =>
  a.length === b.length && a.every((t, i) => t.target === b[i]!.target && t.address === b[i]!.address)

const normalizeName = (name: string): string => name.toLowerCase().replace(/\.$/, "")

/**
 * Starts the source: a first round at once, then one per interval, in a fiber that ends with the
 * scope (its resolver's outstanding queries cancelled). Fails only on a server address node:dns
 * does not take (`dns.servers`: `ip` or `ip:port`, IPv6 as `[ip]:port`).
 */
export const make = (
  options: DnsSourceOptions
): Effect.Effect<DnsSource, InvalidDiscoveryConfig, Scope.Scope> =>
  Effect.gen(function* () {
    const { config } = options
    const policy: AddressPolicy = { allowLoopback: options.allowLoopback }
    const srvNames = [...new Set(config.srv.map(normalizeName))]
    const hosts = [...new Set(options.hosts.map(normalizeName))]
    const minInterval = Duration.toMillis(config.minInterval)
    const maxInterval = Math.max(minInterval, Duration.toMillis(config.maxInterval))
    const timeoutMs = Math.max(1, Math.round(Duration.toMillis(config.timeout)))
    const { query: queryDeadline, round: roundDeadline } = deadlines(config)

    const resolver = new dns.Resolver({ timeout: timeoutMs, tries: config.tries })
    const servers = config.servers ?? []
    if (servers.length > 0) {
      yield* Effect.try({
        try: () => resolver.setServers([...servers]),
        catch: (error) =>
          new InvalidDiscoveryConfig({
            field: "dns.servers",
            detail: `${servers.join(", ")}: ${error instanceof Error ? error.message : String(error)}`
          })
      })
    }
    yield* Effect.addFinalizer(() => Effect.sync(() => resolver.cancel()))

    const stats = yield* Ref.make<DnsStats>({ rounds: 0, queries: 0, failures: 0, truncated: 0, refused: {} })
    const current = yield* Ref.make<ReadonlyMap<string, ReadonlyArray<DnsTarget>>>(new Map())
    // Owned by the round (rounds never overlap: `serialized`).
    const lastGood = new Map<string, ReadonlyArray<unknown>>()
    const failureLog = new Map<string, FailureLog>()
    const serialized = yield* Effect.makeSemaphore(1)

    const count = (change: Partial<Omit<DnsStats, "refused">>, refusal?: AddressRefusal) =>
      Ref.update(stats, (s) => ({
        rounds: s.rounds + (change.rounds ?? 0),
        queries: s.queries + (change.queries ?? 0),
        failures: s.failures + (change.failures ?? 0),
        truncated: s.truncated + (change.truncated ?? 0),
        refused:
          refusal === undefined ? s.refused : { ...s.refused, [refusal]: (s.refused[refusal] ?? 0) + 1 }
      }))

    /** Logs a failing query when it starts failing or changes code, else at most once per maxInterval. */
    const logFailure = (failure: DnsQueryFailed) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const key = `${failure.type} ${failure.name}`
        const last = failureLog.get(key)
        if (last !== undefined && last.code === failure.code && now - last.at < maxInterval)
          return Effect.void
        failureLog.set(key, { code: failure.code, at: now })
        return Effect.logWarning("DNS query failed; the last good answer is kept").pipe(
          Effect.annotateLogs({ name: failure.name, type: failure.type, code: failure.code })
        )
      })

    /**
     * One query, with the last good answer in place of a failure (`records` undefined when there has
     * never been one). `fresh` is false for that fallback, whose TTLs do not set the next interval.
     */
    const ask = <A>(
      type: "SRV" | "A" | "AAAA",
      name: string,
      run: () => Promise<ReadonlyArray<A>>,
      round: RoundState
    ): Effect.Effect<Answer<A>> => {
      const key = `${type} ${name}`
      return count({ queries: 1 }).pipe(
        Effect.zipRight(
          Effect.tryPromise({
            try: run,
            catch: (error) =>
              new DnsQueryFailed({
                name,
                type,
                code: String((error as { code?: unknown } | undefined)?.code ?? error)
              })
          })
        ),
        // No record of this type for a name that exists (an IPv4-only host's AAAA): an empty answer.
        Effect.catchIf(
          (failure) => failure.code === dns.NODATA,
          () => Effect.succeed([] as ReadonlyArray<A>)
        ),
        Effect.timeoutFail({
          duration: queryDeadline,
          onTimeout: () => new DnsQueryFailed({ name, type, code: "deadline" })
        }),
        Effect.either,
        Effect.flatMap((result) => {
          if (Either.isRight(result)) {
            lastGood.set(key, result.right)
            const answer: Answer<A> = { records: result.right, fresh: true }
            if (!failureLog.delete(key)) return Effect.succeed(answer)
            return Effect.as(
              Effect.logInfo("DNS query answered again").pipe(Effect.annotateLogs({ name, type })),
              answer
            )
          }
          round.failed = true
          return count({ failures: 1 }).pipe(
            Effect.zipRight(logFailure(result.left)),
            Effect.as({ records: lastGood.get(key) as ReadonlyArray<A> | undefined, fresh: false })
          )
        })
      )
    }

    /** The first `maxRecords` records in a stable order; the rest counted as truncated. */
    const truncate = <A>(records: ReadonlyArray<A>, order: (a: A, b: A) => number) =>
      Effect.as(
        records.length > config.maxRecords
          ? count({ truncated: records.length - config.maxRecords })
          : Effect.void,
        [...records].sort(order).slice(0, config.maxRecords)
      )

    /**
     * A host's IPs (A and AAAA; an IP literal is its own). `known` is false when neither family has
     * ever had a good answer: there is nothing to say about the host yet.
     */
    const addressesOf = (
      host: string,
      round: RoundState
    ): Effect.Effect<{ readonly ips: ReadonlyArray<string>; readonly known: boolean }> => {
      if (net.isIP(host) !== 0) return Effect.succeed({ ips: [host], known: true })
      const family = (type: "A" | "AAAA") =>
        Effect.flatMap(
          ask<Resolved>(
            type,
            host,
            () =>
              type === "A" ? resolver.resolve4(host, { ttl: true }) : resolver.resolve6(host, { ttl: true }),
            round
          ),
          (answer) => {
            const found = answer.records
            if (found === undefined) return Effect.succeed(undefined)
            return Effect.map(
              truncate(found, (a, b) => byText(a.address, b.address)),
              (records) => {
                if (answer.fresh) for (const record of records) round.ttls.push(record.ttl)
                return records.map((record) => record.address)
              }
            )
          }
        )
      return Effect.map(
        Effect.all([family("A"), family("AAAA")], { concurrency: "unbounded" }),
        ([v4, v6]) => ({ ips: [...(v4 ?? []), ...(v6 ?? [])], known: v4 !== undefined || v6 !== undefined })
      )
    }

    /** Keeps the allowed targets, counting the rest by reason. */
    const allowed = (
      targets: ReadonlyArray<DnsTarget>,
      refusalOf: (target: DnsTarget) => AddressRefusal | undefined
    ): Effect.Effect<ReadonlyArray<DnsTarget>> =>
      Effect.filter(targets, (target) => {
        const refusal = refusalOf(target)
        return refusal === undefined ? Effect.succeed(true) : Effect.as(count({}, refusal), false)
      })

    /**
     * Tells `onAnswer` of a name's answer when it differs from the one held, and holds it once
     * `onAnswer` has returned: an answer whose delivery failed or was cut by the round's deadline is
     * given again next round. (Only the round writes `current`, and rounds never overlap.)
     */
    const publish = (name: string, found: ReadonlyArray<DnsTarget>) =>
      Effect.gen(function* () {
        const seen = new Set<string>()
        const targets = [...found]
          .sort((a, b) => byText(a.target, b.target) || byText(a.address, b.address))
          .filter((t) => {
            const key = `${t.target} ${t.address}`
            if (seen.has(key)) return false
            seen.add(key)
            return true
          })
        const before = (yield* Ref.get(current)).get(name)
        if (before !== undefined && sameTargets(before, targets)) return
        yield* options.onAnswer(name, targets).pipe(
          Effect.zipRight(Ref.update(current, (map) => new Map(map).set(name, targets))),
          Effect.catchAllCause((cause) =>
            Effect.logError("DNS answer handler failed; the answer is given again next round").pipe(
              Effect.annotateLogs({ name, cause })
            )
          )
        )
      })

    const resolveSrv = (name: string, round: RoundState) =>
      Effect.gen(function* () {
        const answer = yield* ask<SrvRecord>("SRV", name, () => resolver.resolveSrv(name), round)
        if (answer.records === undefined) return
        const records = yield* truncate(
          answer.records,
          (a, b) => a.priority - b.priority || byText(a.name, b.name) || a.port - b.port
        )
        const perRecord = yield* Effect.forEach(
          records,
          (record) => {
            const target = normalizeName(record.name)
            // "." is RFC 2782's "no service here".
            if (target === "") return Effect.succeed([])
            const refusal = refuseHost(target, policy)
            if (refusal !== undefined) return Effect.as(count({}, refusal), [])
            return Effect.flatMap(addressesOf(target, round), ({ ips }) =>
              allowed(
                ips.map((ip) => ({ name, target, address: Transport.formatAddress(ip, record.port) })),
                (t) => {
                  const checked = check(t.address, policy)
                  return typeof checked === "string" ? checked : undefined
                }
              )
            )
          },
          { concurrency: "unbounded" }
        )
        yield* publish(name, perRecord.flat())
      })

    const resolveHost = (host: string, round: RoundState) =>
      Effect.gen(function* () {
        const refusal = refuseHost(host, policy)
        if (refusal !== undefined) return yield* count({}, refusal)
        const { ips, known } = yield* addressesOf(host, round)
        if (!known) return
        const targets = yield* allowed(
          ips.map((ip) => ({ name: host, target: host, address: ip })),
          (t) => refuseHost(t.address, policy)
        )
        yield* publish(host, targets)
      })

    /** One round; gives the time until the next one. */
    const round: Effect.Effect<Duration.Duration> = Effect.gen(function* () {
      const state: RoundState = { ttls: [], failed: false }
      const overran = yield* Effect.all(
        [
          Effect.forEach(srvNames, (name) => resolveSrv(name, state), {
            concurrency: "unbounded",
            discard: true
          }),
          Effect.forEach(hosts, (host) => resolveHost(host, state), {
            concurrency: "unbounded",
            discard: true
          })
        ],
        { concurrency: "unbounded", discard: true }
      ).pipe(
        Effect.timeout(roundDeadline),
        Effect.as(false),
        Effect.catchTag("TimeoutException", () =>
          Effect.sync(() => resolver.cancel()).pipe(
            Effect.zipRight(count({ failures: 1 })),
            Effect.zipRight(
              Effect.logWarning("DNS resolution round overran its deadline; interrupted").pipe(
                Effect.annotateLogs({ deadline: Duration.format(roundDeadline) })
              )
            ),
            Effect.as(true)
          )
        )
      )
      yield* count({ rounds: 1 })
      // A failure is retried soon; else the shortest TTL seen, within [minInterval, maxInterval].
      if (overran || state.failed) return Duration.millis(minInterval)
      const ttl = state.ttls.reduce((shortest, seconds) => Math.min(shortest, seconds * 1000), maxInterval)
      return Duration.millis(Math.min(maxInterval, Math.max(minInterval, ttl)))
    }).pipe(
      // Nothing in a round should fail or die; if something does, the source lives on.
      Effect.catchAllCause((cause) =>
        Effect.as(
          Effect.logError("DNS resolution round failed").pipe(Effect.annotateLogs({ cause })),
          Duration.millis(minInterval)
        )
      ),
      serialized.withPermits(1)
    )

    yield* round.pipe(Effect.flatMap(Effect.sleep), Effect.forever, Effect.interruptible, Effect.forkScoped)

    return {
      stats: Ref.get(stats),
      current: Ref.get(current),
      refresh: Effect.asVoid(round)
    } satisfies DnsSource
  })
