// The PeerRegistry's machinery. One `Ref` holds an immutable `HashMap` PeerId -> PeerRecord; every
// change is one `Ref.modify` of a pure transition that also says which events to publish, which
// ban timers to (re)arm and whether the persisted part changed. A one-permit lock around "modify,
// then publish" makes `changes` list events in exactly the order the state went through them.
//
// Time is read only through `Clock`: scores decay lazily (stored as score + instant, decayed on read
// and before an event applies), bans end on a Clock-driven timer per banned peer (so `Unbanned` is
// published when a ban runs out, TestClock included) and reads treat an expired ban as none even
// before its timer has run.
//
// With a data directory, bans and the address book are written to `<dir>/peers.json` by one
// background writer: each persisted change bumps a version and raises a flag (a dropping queue of
// one), the writer snapshots the latest state and writes it atomically (temp file in the same
// directory, fsync, rename, fsync of the directory). Changes made while a write runs are coalesced
// into the next one; callers never wait on the disk. Closing the scope writes what is left.
import * as crypto from "node:crypto"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { Identity } from "@hotstuff2/wire"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as FiberMap from "effect/FiberMap"
import * as HashMap from "effect/HashMap"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Queue from "effect/Queue"
import * as Ref from "effect/Ref"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type {
  AddressInfo,
  AddressSource,
  Ban,
  ConnectionState,
  PeerEvent,
  PeerId,
  PeerRegistryShape,
  PeerState,
  ReputationEvent
} from "../PeerRegistry.js"
import {
  decode,
  type InvalidPeersConfig,
  type PeersConfigInput,
  type ReputationWeights
} from "../PeersConfig.js"

/** Bounds on what the registry keeps: `PeersConfig.maxKnownPeers`, `maxAddressesPerPeer`, `changesBuffer`. */
export interface RegistryLimits {
  /**
   * Non-validator peers kept. Past it, the least recently seen disconnected, unbanned non-validator
   * is forgotten (then, if there is none, the disconnected banned one whose ban ends first). Peers
   * with a connection and validators are never forgotten.
   */
  readonly maxNonValidatorPeers: number
  /**
   * Addresses kept per peer. A new address then replaces the least healthy non-config address if
   * that one has failed; otherwise the new one is ignored. Config addresses are always kept.
   */
  readonly maxAddressesPerPeer: number
  /**
   * Events buffered for a subscriber of `changes` that does not keep up (a sliding queue per
   * subscriber: past it, the oldest are dropped; publishers never wait). The registry itself stays
   * the source of truth. Nothing is allocated up front: a subscriber that keeps up holds no buffer.
   */
  readonly changesBuffer: number
}

/** The file, inside `dataDirectory`, holding bans and the address book. */
export const PEERS_FILE = "peers.json"

/** JS timers cannot wait longer than ~24.8 days; a longer ban's timer wakes up once a day. */
const TIMER_CHUNK_MILLIS = 24 * 60 * 60 * 1000

// ---------------------------------------------------------------------------------------------
// `changes`: a sliding queue per subscriber, made when it subscribes. A sliding PubSub would
// preallocate `changesBuffer` slots twice over (256 KiB per registry at the default 16,384), which a
// simulated cluster of a thousand nodes pays a thousand times; a queue grows only with what its
// subscriber has not taken yet.

interface ChangesHub {
  /** Offers the events to every subscriber, in order (the oldest dropped past a subscriber's buffer). */
  readonly publishAll: (events: ReadonlyArray<PeerEvent>) => Effect.Effect<void>
  /** Subscribes when run: the events published from then on, until the registry closes. */
  readonly stream: (buffer: number) => Stream.Stream<PeerEvent>
  /** Ends every subscriber's stream (what it has not taken is dropped), as a PubSub's shutdown does. */
  readonly shutdown: Effect.Effect<void>
}

const makeChanges = (): ChangesHub => {
  const subscribers = new Set<Queue.Queue<PeerEvent>>()
  let closed = false
  const subscribe = (buffer: number) =>
    Effect.acquireRelease(
      Effect.flatMap(Queue.sliding<PeerEvent>(buffer), (queue) =>
        closed
          ? Effect.as(Queue.shutdown(queue), queue)
          : Effect.sync(() => {
              subscribers.add(queue)
              return queue
            })
      ),
      (queue) =>
        Effect.zipRight(
          Effect.sync(() => subscribers.delete(queue)),
          Queue.shutdown(queue)
        )
    )
  return {
    publishAll: (events) =>
      subscribers.size === 0
        ? Effect.void
        : Effect.forEach(
            subscribers,
            // A subscriber whose stream is ending may be shut down already: nothing to offer it.
            (queue) => Effect.exit(Queue.offerAll(queue, events)),
            { discard: true }
          ),
    stream: (buffer) => Stream.unwrapScoped(Effect.map(subscribe(buffer), Stream.fromQueue)),
    shutdown: Effect.suspend(() => {
      closed = true
      const all = [...subscribers]
      subscribers.clear()
      return Effect.forEach(all, Queue.shutdown, { discard: true })
    })
  }
}

// ---------------------------------------------------------------------------------------------
// The file format

const BanUntil = Schema.transform(Schema.Union(Schema.Finite, Schema.Literal("never")), Schema.Number, {
  strict: true,
  decode: (until) => (until === "never" ? Number.POSITIVE_INFINITY : until),
  encode: (until) => (Number.isFinite(until) ? until : ("never" as const))
})

/** Files written before the sources were told apart say `discovery` for what gossip gave. */
const StoredSource = Schema.transform(
  Schema.Literal("config", "bootstrap", "dns", "anchor", "gossip", "inbound", "discovery"),
  Schema.Literal("config", "bootstrap", "dns", "anchor", "gossip", "inbound"),
  {
    strict: true,
    decode: (source) => (source === "discovery" ? "gossip" : source),
    encode: (source) => source
  }
)

const StoredAddress = Schema.Struct({
  address: Schema.String,
  source: StoredSource,
  lastSuccess: Schema.optional(Schema.Finite),
  lastFailure: Schema.optional(Schema.Finite),
  failures: Schema.NonNegativeInt
})

const StoredPeer = Schema.Struct({
  id: Identity.PeerId,
  banCount: Schema.NonNegativeInt,
  ban: Schema.optional(
    Schema.Struct({ until: BanUntil, reason: Schema.String, count: Schema.Int.pipe(Schema.positive()) })
  ),
  lastSeen: Schema.optional(Schema.Finite),
  addresses: Schema.Array(StoredAddress)
})

const PeersFile = Schema.Struct({ version: Schema.Literal(1), peers: Schema.Array(StoredPeer) })
type PeersFile = typeof PeersFile.Type

const PeersFileJson = Schema.parseJson(PeersFile, { space: 2 })
const decodePeersFile = Schema.decodeUnknownEither(PeersFileJson)
const encodePeersFile = Schema.encodeEither(PeersFileJson)

// ---------------------------------------------------------------------------------------------
// State and pure transitions

interface PeerRecord {
  readonly id: PeerId
  /** Insertion order among peers: the eviction tie-break and the order of `all`. */
  readonly seq: number
  readonly createdAt: number
  readonly validator: boolean
  /** In insertion order; `dialOrder` sorts a copy. */
  readonly addresses: ReadonlyArray<AddressInfo>
  readonly connection: ConnectionState
  /** The score as of `scoreAt`; decayed on read. */
  readonly score: number
  readonly scoreAt: number
  /** The ban as last set; may have expired (`until <= now`) before its timer cleared it. */
  readonly ban: Ban | undefined
  readonly banCount: number
  readonly lastSeen: number | undefined
  readonly rtt: number | undefined
  readonly consecutiveFailures: number
  /** Refusals of this peer's inbound connections since the last `Refused` event (not persisted). */
  readonly refusals: number
  /** Clock millis of the last `Refused` event. */
  readonly refusedEventAt: number
}

interface State {
  readonly peers: HashMap.HashMap<PeerId, PeerRecord>
  readonly nonValidators: number
  readonly nextSeq: number
  /** Bumped by every change to what is persisted; the writer saves when it differs from the file's. */
  readonly version: number
}

const emptyState: State = { peers: HashMap.empty(), nonValidators: 0, nextSeq: 0, version: 0 }

interface Settings {
  readonly weights: ReputationWeights
  readonly halfLifeMillis: number
  readonly maxScore: number
  readonly banThreshold: number
  readonly banBaseMillis: number
  readonly banFactor: number
  readonly banCapMillis: number
  readonly rttSmoothing: number
  readonly refusalEventMillis: number
  readonly limits: RegistryLimits
}

/** What one transition did besides the new state; filled in while it runs, acted upon after. */
class Effects {
  readonly events: Array<PeerEvent> = []
  /** Ban timers: arm for a finite `until`, cancel for `undefined` or an infinite one. */
  readonly timers: Array<readonly [PeerId, number | undefined]> = []
  dirty = false
  constructor(readonly now: number) {}
}

type Transition<A> = (state: State, fx: Effects) => readonly [A, State]

const decayed = (score: number, at: number, now: number, halfLifeMillis: number): number => {
  if (score === 0 || now <= at) return score
  if (!(halfLifeMillis > 0)) return 0
  const value = score * 0.5 ** ((now - at) / halfLifeMillis)
  return Math.abs(value) < 1e-9 ? 0 : value
}

const clamp = (value: number, bound: number): number => Math.max(-bound, Math.min(bound, value))

/** banBase * banFactor^(count-1), at most banCap. */
const escalatingBanMillis = (settings: Settings, count: number): number => {
  const millis = settings.banBaseMillis * settings.banFactor ** (count - 1)
  return Number.isNaN(millis) ? 0 : Math.min(millis, settings.banCapMillis)
}

const isHealthy = (address: AddressInfo): boolean =>
  address.lastSuccess !== undefined && address.failures === 0

/** Healthiest first: last dial succeeded (most recent first), then fewest failures, then insertion order. */
const sortForDialling = (addresses: ReadonlyArray<AddressInfo>): Array<AddressInfo> =>
  addresses
    .map((address, index) => ({ address, index }))
    .sort((a, b) => {
      const healthyA = isHealthy(a.address)
      const healthyB = isHealthy(b.address)
      if (healthyA !== healthyB) return healthyA ? -1 : 1
      if (healthyA && a.address.lastSuccess !== b.address.lastSuccess) {
        return b.address.lastSuccess! - a.address.lastSuccess!
      }
      if (a.address.failures !== b.address.failures) return a.address.failures - b.address.failures
      return a.index - b.index
    })
    .map(({ address }) => address)

export const protectedSources: ReadonlySet<AddressSource> = new Set(["config", "bootstrap", "dns", "anchor"])

const sourceRank: Record<AddressSource, number> = {
  config: 4,
  bootstrap: 3,
  dns: 3,
  anchor: 2,
  gossip: 1,
  inbound: 0
}

const newRecord = (id: PeerId, seq: number, now: number, validator: boolean): PeerRecord => ({
  id,
  seq,
  createdAt: now,
  validator,
  addresses: [],
  connection: "disconnected",
  score: 0,
  scoreAt: now,
  ban: undefined,
  banCount: 0,
  lastSeen: undefined,
  rtt: undefined,
  consecutiveFailures: 0,
  refusals: 0,
  refusedEventAt: Number.NEGATIVE_INFINITY
})

/** Clears a ban that has run out, publishing `Unbanned`. */
const settle = (record: PeerRecord, fx: Effects): PeerRecord => {
  if (record.ban === undefined || record.ban.until > fx.now) return record
  fx.events.push({ _tag: "Unbanned", peer: record.id })
  fx.dirty = true
  return { ...record, ban: undefined }
}

const applyBan = (
  settings: Settings,
  record: PeerRecord,
  fx: Effects,
  reason: string,
  millis: number | undefined
): PeerRecord => {
  const count = record.banCount + 1
  const requested = millis ?? escalatingBanMillis(settings, count)
  const until = fx.now + (record.validator ? Math.min(requested, settings.banCapMillis) : requested)
  fx.events.push({ _tag: "Banned", peer: record.id, until, reason, count })
  fx.timers.push([record.id, until])
  fx.dirty = true
  // A ban is a fresh start: the score it ends with is neutral.
  return { ...record, ban: { until, reason, count }, banCount: count, score: 0, scoreAt: fx.now }
}

/** Forgets non-validators past the limit, never `keep` (the peer being added). */
const enforceLimit = (settings: Settings, state: State, fx: Effects, keep: PeerId | undefined): State => {
  let current = state
  while (current.nonValidators > settings.limits.maxNonValidatorPeers) {
    let idle: PeerRecord | undefined
    let banned: PeerRecord | undefined
    for (const record of HashMap.values(current.peers)) {
      if (record.validator || record.connection !== "disconnected" || record.id === keep) continue
      if (record.ban !== undefined && record.ban.until > fx.now) {
        if (banned === undefined || record.ban.until < banned.ban!.until) banned = record
      } else {
        const seen = record.lastSeen ?? record.createdAt
        const idleSeen = idle === undefined ? 0 : (idle.lastSeen ?? idle.createdAt)
        if (idle === undefined || seen < idleSeen || (seen === idleSeen && record.seq < idle.seq))
          idle = record
      }
    }
    const victim = idle ?? banned
    if (victim === undefined) break // everyone left is connected: bounded by the transport's limits
    current = {
      ...current,
      peers: HashMap.remove(current.peers, victim.id),
      nonValidators: current.nonValidators - 1
    }
    if (victim.ban !== undefined) fx.timers.push([victim.id, undefined])
    fx.dirty = true
  }
  return current
}

/**
 * Runs `f` on the peer's record (its expired ban settled first). An unknown peer is created when
 * `create`, else `f` is skipped and `missing` returned.
 */
const modifyPeer = <A>(
  settings: Settings,
  state: State,
  fx: Effects,
  peer: PeerId,
  create: boolean,
  missing: A,
  f: (record: PeerRecord) => readonly [A, PeerRecord]
): readonly [A, State] => {
  const existing = HashMap.get(state.peers, peer)
  if (Option.isSome(existing)) {
    const [value, next] = f(settle(existing.value, fx))
    return next === existing.value
      ? [value, state]
      : [value, { ...state, peers: HashMap.set(state.peers, peer, next) }]
  }
  if (!create) return [missing, state]
  const [value, next] = f(newRecord(peer, state.nextSeq, fx.now, false))
  const added: State = {
    ...state,
    peers: HashMap.set(state.peers, peer, next),
    nextSeq: state.nextSeq + 1,
    nonValidators: state.nonValidators + (next.validator ? 0 : 1)
  }
  return [value, enforceLimit(settings, added, fx, peer)]
}

const view = (settings: Settings, record: PeerRecord, now: number): PeerState => ({
  id: record.id,
  validator: record.validator,
  addresses: record.addresses,
  connection: record.connection,
  score: decayed(record.score, record.scoreAt, now, settings.halfLifeMillis),
  ban: record.ban !== undefined && record.ban.until > now ? Option.some(record.ban) : Option.none(),
  banCount: record.banCount,
  lastSeen: record.lastSeen,
  rtt: record.rtt,
  consecutiveFailures: record.consecutiveFailures
})

// ---------------------------------------------------------------------------------------------
// Persistence

const errorText = (cause: unknown): string =>
  cause instanceof Error ? cause.message : typeof cause === "string" ? cause : String(cause)

const isNotFound = (cause: unknown): boolean =>
  typeof cause === "object" && cause !== null && (cause as NodeJS.ErrnoException).code === "ENOENT"

/** Temp file in the same directory (so rename is atomic), fsync, rename, fsync of the directory. */
const writeAtomically = (directory: string, file: string, text: string): Effect.Effect<void, unknown> =>
  Effect.tryPromise({
    try: async () => {
      const temp = path.join(
        directory,
        `.${PEERS_FILE}.${process.pid}.${crypto.randomBytes(6).toString("hex")}.tmp`
      )
      try {
        const handle = await fs.open(temp, "w", 0o600)
        try {
          await handle.writeFile(text, "utf8")
          await handle.sync()
        } finally {
          await handle.close()
        }
        await fs.rename(temp, file)
      } catch (cause) {
        await fs.rm(temp, { force: true }).catch(() => undefined)
        throw cause
      }
      // So that the rename itself survives a power cut; not every platform can open a directory.
      await fs
        .open(directory, "r")
        .then((dir) => dir.sync().finally(() => dir.close()))
        .catch(() => undefined)
    },
    catch: (cause) => cause
  })

/** Reads `<dir>/peers.json`; a missing file is an empty book, a bad one is set aside with a warning. */
const loadFile = (directory: string, file: string, now: number): Effect.Effect<PeersFile | undefined> =>
  Effect.gen(function* () {
    const made = yield* Effect.either(
      Effect.tryPromise({ try: () => fs.mkdir(directory, { recursive: true }), catch: (cause) => cause })
    )
    if (Either.isLeft(made)) {
      yield* Effect.logWarning(`peers: cannot create data directory ${directory}: ${errorText(made.left)}`)
      return undefined
    }
    const read = yield* Effect.either(
      Effect.tryPromise({ try: () => fs.readFile(file, "utf8"), catch: (cause) => cause })
    )
    if (Either.isLeft(read) && isNotFound(read.left)) return undefined
    const decoded = Either.isLeft(read)
      ? Either.left(`unreadable: ${errorText(read.left)}`)
      : Either.mapLeft(decodePeersFile(read.right), (error) =>
          ParseResult.TreeFormatter.formatErrorSync(error)
        )
    if (Either.isRight(decoded)) return decoded.right
    const aside = `${file}.corrupt-${now}`
    const renamed = yield* Effect.either(
      Effect.tryPromise({ try: () => fs.rename(file, aside), catch: (cause) => cause })
    )
    yield* Effect.logWarning(
      Either.isRight(renamed)
        ? `peers: ${file} is corrupt (${decoded.left}); set aside as ${aside}, starting with an empty peer book`
        : `peers: ${file} is corrupt (${decoded.left}) and could not be set aside (${errorText(renamed.left)}); starting with an empty peer book`
    )
    return undefined
  })

const fromFile = (settings: Settings, stored: PeersFile, now: number): State => {
  let state = emptyState
  for (const peer of stored.peers) {
    const ban = peer.ban !== undefined && peer.ban.until > now ? peer.ban : undefined
    const addresses: Array<AddressInfo> = []
    for (const a of peer.addresses) {
      if (addresses.length >= settings.limits.maxAddressesPerPeer) break
      if (addresses.some((known) => known.address === a.address)) continue
      addresses.push({
        address: a.address,
        source: a.source,
        lastSuccess: a.lastSuccess,
        lastFailure: a.lastFailure,
        failures: a.failures
      })
    }
    const existing = HashMap.get(state.peers, peer.id)
    const record: PeerRecord = {
      ...newRecord(peer.id, Option.isSome(existing) ? existing.value.seq : state.nextSeq, now, false),
      addresses,
      ban,
      banCount: Math.max(peer.banCount, ban?.count ?? 0),
      lastSeen: peer.lastSeen
    }
    state = {
      ...state,
      peers: HashMap.set(state.peers, peer.id, record),
      nextSeq: state.nextSeq + 1,
      nonValidators: state.nonValidators + (Option.isSome(existing) ? 0 : 1)
    }
  }
  return enforceLimit(settings, state, new Effects(now), undefined)
}

const toFile = (state: State, now: number): PeersFile => {
  const peers: Array<PeersFile["peers"][number]> = []
  const records = Array.from(HashMap.values(state.peers)).sort((a, b) => a.seq - b.seq)
  for (const record of records) {
    if (record.addresses.length === 0 && record.banCount === 0) continue
    const ban = record.ban !== undefined && record.ban.until > now ? record.ban : undefined
    peers.push({
      id: record.id,
      banCount: record.banCount,
      ...(ban === undefined ? {} : { ban: { until: ban.until, reason: ban.reason, count: ban.count } }),
      ...(record.lastSeen === undefined ? {} : { lastSeen: record.lastSeen }),
      addresses: record.addresses.map((a) => ({
        address: a.address,
        source: a.source,
        ...(a.lastSuccess === undefined ? {} : { lastSuccess: a.lastSuccess }),
        ...(a.lastFailure === undefined ? {} : { lastFailure: a.lastFailure }),
        failures: a.failures
      }))
    })
  }
  return { version: 1, peers }
}

// ---------------------------------------------------------------------------------------------
// The service

export const make = (
  input: PeersConfigInput,
  limits: Partial<RegistryLimits> = {}
): Effect.Effect<PeerRegistryShape, InvalidPeersConfig, Scope.Scope> =>
  Effect.gen(function* () {
    const config = yield* decode(input)
    const settings: Settings = {
      weights: config.weights,
      halfLifeMillis: Duration.toMillis(config.scoreHalfLife),
      maxScore: config.maxScore,
      banThreshold: config.banThreshold,
      banBaseMillis: Duration.toMillis(config.banBase),
      banFactor: config.banFactor,
      banCapMillis: Duration.toMillis(config.banCap),
      rttSmoothing: config.rttSmoothing,
      refusalEventMillis: Duration.toMillis(config.refusalEventInterval),
      limits: {
        maxNonValidatorPeers: config.maxKnownPeers,
        maxAddressesPerPeer: config.maxAddressesPerPeer,
        changesBuffer: config.changesBuffer,
        ...limits
      }
    }

    const directory = config.dataDirectory === undefined ? undefined : path.resolve(config.dataDirectory)
    const file = directory === undefined ? undefined : path.join(directory, PEERS_FILE)
    const startedAt = yield* Clock.currentTimeMillis
    const stored =
      directory === undefined || file === undefined ? undefined : yield* loadFile(directory, file, startedAt)
    const initial = stored === undefined ? emptyState : fromFile(settings, stored, startedAt)

    const ref = yield* Ref.make(initial)
    const lock = yield* Effect.makeSemaphore(1)
    const changes = yield* Effect.acquireRelease(Effect.sync(makeChanges), (hub) => hub.shutdown)

    // ---- persistence: one writer, one flag; the final flush runs after the timers have stopped ----
    const writeLock = yield* Effect.makeSemaphore(1)
    const written = yield* Ref.make({ version: initial.version, failing: false })
    const pending = yield* Queue.dropping<void>(1)
    const flush: Effect.Effect<void> =
      directory === undefined || file === undefined
        ? Effect.void
        : Effect.gen(function* () {
            const state = yield* Ref.get(ref)
            const last = yield* Ref.get(written)
            if (state.version === last.version) return
            const now = yield* Clock.currentTimeMillis
            const result = yield* Effect.either(
              Effect.flatMap(encodePeersFile(toFile(state, now)), (text) =>
                writeAtomically(directory, file, text)
              )
            )
            if (Either.isRight(result)) {
              if (last.failing) yield* Effect.logInfo(`peers: ${file} written again`)
              yield* Ref.set(written, { version: state.version, failing: false })
            } else if (!last.failing) {
              yield* Effect.logWarning(
                `peers: cannot write ${file} (will retry on the next change)`,
                result.left
              )
              yield* Ref.set(written, { version: last.version, failing: true })
            }
          }).pipe(writeLock.withPermits(1), Effect.uninterruptible)
    yield* Effect.addFinalizer(() => flush)

    const timers = yield* FiberMap.make<PeerId>()

    const update = <A>(transition: Transition<A>): Effect.Effect<A> =>
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        const [value, fx] = yield* Ref.modify(ref, (state) => {
          const fx = new Effects(now)
          const [value, next] = transition(state, fx)
          return [[value, fx] as const, fx.dirty ? { ...next, version: next.version + 1 } : next]
        })
        if (fx.events.length > 0) yield* changes.publishAll(fx.events)
        for (const [peer, until] of fx.timers) {
          if (until !== undefined && Number.isFinite(until))
            yield* FiberMap.run(timers, peer, expireAt(peer, until))
          else yield* FiberMap.remove(timers, peer)
        }
        if (fx.dirty && file !== undefined) yield* Queue.offer(pending, undefined)
        return value
      }).pipe(Effect.uninterruptible, lock.withPermits(1))

    // Sleeps until the ban ends, then settles it (publishing `Unbanned`). Re-banning replaces this
    // fiber, unbanning removes it; reads never depend on it having run.
    const expireAt = (peer: PeerId, until: number): Effect.Effect<void> =>
      Effect.gen(function* () {
        for (;;) {
          const now = yield* Clock.currentTimeMillis
          if (now >= until) break
          yield* Effect.sleep(Math.min(until - now, TIMER_CHUNK_MILLIS))
        }
        yield* update((state, fx) =>
          modifyPeer(settings, state, fx, peer, false, undefined, (record) => [undefined, record])
        )
      })

    for (const record of HashMap.values(initial.peers)) {
      if (record.ban !== undefined && Number.isFinite(record.ban.until)) {
        yield* FiberMap.run(timers, record.id, expireAt(record.id, record.ban.until))
      }
    }

    if (file !== undefined) {
      // Interruptible even when the registry is built in an uninterruptible region (an
      // acquireRelease acquire): closing its scope must stop it.
      yield* Effect.forkScoped(
        Effect.interruptible(Effect.forever(Effect.zipRight(Queue.take(pending), flush)))
      )
    }

    /**
     * For frequent updates that never publish, arm a timer or change what is persisted (`touch`,
     * `recordRtt`): one `Ref.modify`, without the lock, which only orders publications. A peer that is
     * unknown or has an expired ban to settle (which publishes) takes the locked path.
     */
    const quietly = (
      peer: PeerId,
      f: (record: PeerRecord, now: number) => PeerRecord,
      otherwise: Effect.Effect<void>
    ): Effect.Effect<void> =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.flatMap(
          Ref.modify(ref, (state) => {
            const existing = HashMap.get(state.peers, peer)
            if (Option.isNone(existing)) return [false, state]
            const record = existing.value
            if (record.ban !== undefined && record.ban.until <= now) return [false, state]
            return [true, { ...state, peers: HashMap.set(state.peers, peer, f(record, now)) }]
          }),
          (done) => (done ? Effect.void : otherwise)
        )
      )

    const onPeer = <A>(
      peer: PeerId,
      create: boolean,
      missing: A,
      f: (record: PeerRecord, fx: Effects) => readonly [A, PeerRecord]
    ): Effect.Effect<A> =>
      update((state, fx) => modifyPeer(settings, state, fx, peer, create, missing, (record) => f(record, fx)))

    const read = <A>(f: (state: State, now: number) => A): Effect.Effect<A> =>
      Effect.zipWith(Ref.get(ref), Clock.currentTimeMillis, f)

    const registry: PeerRegistryShape = {
      get: (peer) =>
        read((state, now) =>
          Option.map(HashMap.get(state.peers, peer), (record) => view(settings, record, now))
        ),

      all: read((state, now) =>
        Array.from(HashMap.values(state.peers))
          .sort((a, b) => a.seq - b.seq)
          .map((record) => view(settings, record, now))
      ),

      setValidators: (peers) =>
        update((state, fx) => {
          const members = new Set(peers)
          let map = HashMap.map(state.peers, (existing) => {
            const record = settle(existing, fx)
            const validator = members.has(record.id)
            const capped = fx.now + settings.banCapMillis
            if (validator && record.ban !== undefined && record.ban.until > capped) {
              fx.timers.push([record.id, capped])
              fx.dirty = true
              return { ...record, validator, ban: { ...record.ban, until: capped } }
            }
            return record.validator === validator && record === existing ? existing : { ...record, validator }
          })
          let nextSeq = state.nextSeq
          for (const id of members) {
            if (!HashMap.has(map, id)) map = HashMap.set(map, id, newRecord(id, nextSeq++, fx.now, true))
          }
          let nonValidators = 0
          for (const record of HashMap.values(map)) if (!record.validator) nonValidators++
          return [
            undefined,
            enforceLimit(settings, { ...state, peers: map, nextSeq, nonValidators }, fx, undefined)
          ]
        }),

      addAddress: (peer, address, source) =>
        onPeer(peer, true, undefined, (record, fx) => {
          const known = record.addresses.findIndex((a) => a.address === address)
          if (known >= 0) {
            const info = record.addresses[known]
            if (sourceRank[source] <= sourceRank[info.source]) return [undefined, record]
            fx.dirty = true
            const addresses = record.addresses.map((a, i) => (i === known ? { ...a, source } : a))
            return [undefined, { ...record, addresses }]
          }
          let kept = record.addresses
          if (kept.length >= settings.limits.maxAddressesPerPeer) {
            // The least healthy address of a lower source makes room; an operator's address (config,
            // bootstrap, DNS, anchor) is never pushed out by gossip or an inbound connection, and
            // always finds room.
            const mine = protectedSources.has(source)
            const victim = sortForDialling(kept)
              .filter((a) => !protectedSources.has(a.source) && sourceRank[a.source] <= sourceRank[source])
              .at(-1)
            if (victim !== undefined && (victim.failures > 0 || mine)) {
              kept = kept.filter((a) => a !== victim)
            } else if (!mine) {
              return [undefined, record]
            }
          }
          fx.events.push({ _tag: "Discovered", peer, address, source })
          fx.dirty = true
          const added: AddressInfo = {
            address,
            source,
            lastSuccess: undefined,
            lastFailure: undefined,
            failures: 0
          }
          return [undefined, { ...record, addresses: [...kept, added] }]
        }),

      replaceAddresses: (peer, source, addresses) =>
        Effect.gen(function* () {
          const wanted = new Set(addresses)
          yield* onPeer(peer, false, undefined, (record, fx) => {
            const kept = record.addresses.filter((a) => a.source !== source || wanted.has(a.address))
            if (kept.length === record.addresses.length) return [undefined, record]
            fx.dirty = true
            return [undefined, { ...record, addresses: kept }]
          })
          for (const address of addresses) yield* registry.addAddress(peer, address, source)
        }),

      recordDial: (peer, address, ok) =>
        onPeer(peer, false, undefined, (record, fx) => {
          let matched = false
          const addresses = record.addresses.map((a) => {
            if (a.address !== address) return a
            matched = true
            return ok
              ? { ...a, lastSuccess: fx.now, failures: 0 }
              : { ...a, lastFailure: fx.now, failures: a.failures + 1 }
          })
          if (matched) fx.dirty = true
          const consecutiveFailures = ok ? 0 : record.consecutiveFailures + 1
          return [
            undefined,
            { ...record, addresses: matched ? addresses : record.addresses, consecutiveFailures }
          ]
        }),

      dialOrder: (peer) =>
        read((state) =>
          Option.match(HashMap.get(state.peers, peer), {
            onNone: () => [],
            onSome: (record) => sortForDialling(record.addresses).map((a) => a.address)
          })
        ),

      setConnection: (peer, connection, detail) =>
        onPeer(peer, true, undefined, (record, fx) => {
          if (record.connection === connection) return [undefined, record]
          if (connection === "connected") {
            fx.events.push({
              _tag: "Connected",
              peer,
              address: detail?.address ?? "unknown",
              direction: detail?.direction ?? "outbound"
            })
            return [undefined, { ...record, connection, lastSeen: fx.now, consecutiveFailures: 0 }]
          }
          if (record.connection === "connected") {
            fx.events.push({ _tag: "Disconnected", peer, reason: detail?.reason ?? "closed" })
            return [undefined, { ...record, connection, lastSeen: fx.now }]
          }
          return [undefined, { ...record, connection }]
        }),

      recordRtt: (peer, millis) => {
        if (!(Number.isFinite(millis) && millis >= 0)) return Effect.void
        const smoothed = (record: PeerRecord): PeerRecord => ({
          ...record,
          rtt: record.rtt === undefined ? millis : record.rtt + settings.rttSmoothing * (millis - record.rtt)
        })
        return quietly(
          peer,
          smoothed,
          onPeer(peer, true, undefined, (record) => [undefined, smoothed(record)])
        )
      },

      touch: (peer) =>
        quietly(
          peer,
          (record, now) => ({ ...record, lastSeen: now }),
          onPeer(peer, true, undefined, (record, fx) => [undefined, { ...record, lastSeen: fx.now }])
        ),

      report: (peer, event: ReputationEvent, detail?: string) =>
        onPeer(peer, true, 0, (record, fx) => {
          // A banned peer's connections are being closed; what it still sends does not count, and
          // it starts afresh at 0 when the ban ends.
          if (record.ban !== undefined) return [record.score, record]
          const current = decayed(record.score, record.scoreAt, fx.now, settings.halfLifeMillis)
          const score = clamp(current + settings.weights[event], settings.maxScore)
          if (score !== current) {
            fx.events.push({
              _tag: "ScoreChanged",
              peer,
              score,
              event,
              ...(detail === undefined ? {} : { detail })
            })
          }
          const next: PeerRecord = { ...record, score, scoreAt: fx.now }
          if (score > settings.banThreshold) return [score, next]
          const reason = `reputation ${Math.round(score * 100) / 100} reached the ban threshold ${settings.banThreshold} (last: ${event}${detail === undefined ? "" : `: ${detail}`})`
          return [score, applyBan(settings, next, fx, reason, undefined)]
        }),

      refused: (peer, reason, detail) =>
        onPeer(peer, false, undefined, (record, fx) => {
          const refusals = record.refusals + 1
          if (fx.now - record.refusedEventAt < settings.refusalEventMillis) {
            return [undefined, { ...record, refusals }]
          }
          fx.events.push({ _tag: "Refused", peer, reason, detail, count: refusals })
          return [undefined, { ...record, refusals: 0, refusedEventAt: fx.now }]
        }),

      ban: (peer, reason, duration) =>
        Effect.flatMap(
          duration === undefined
            ? Effect.succeed(undefined)
            : Effect.sync(() => Duration.toMillis(Duration.decode(duration))),
          (millis) =>
            onPeer(peer, true, undefined, (record, fx) => [
              undefined,
              applyBan(settings, record, fx, reason, millis)
            ])
        ),

      unban: (peer) =>
        onPeer(peer, false, undefined, (record, fx) => {
          if (record.ban === undefined) return [undefined, record]
          fx.events.push({ _tag: "Unbanned", peer })
          fx.timers.push([peer, undefined])
          fx.dirty = true
          return [undefined, { ...record, ban: undefined }]
        }),

      isBanned: (peer) =>
        read((state, now) => {
          const record = HashMap.get(state.peers, peer)
          return Option.isSome(record) && record.value.ban !== undefined && record.value.ban.until > now
        }),

      changes: changes.stream(settings.limits.changesBuffer)
    }
    return registry
  })
