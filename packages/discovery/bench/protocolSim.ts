// Gossip as a protocol, without a transport: N nodes, each with the real `Gossip` and `Book`, real
// Ed25519-signed records and the real codec (every byte counted is a byte the codec produced), driven
// in synchronous rounds of one `gossipInterval`. What the round models is what the core
// (src/internal/discovery.ts) does; see discovery.bench.ts for what is and is not modelled.
import { Codec, type Identity } from "@hotstuff2/wire"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Random from "effect/Random"
import * as DiscoveryConfig from "../src/DiscoveryConfig.js"
import { Book } from "../src/internal/book.js"
import { Gossip } from "../src/internal/gossip.js"
import { sign } from "../src/internal/record.js"
import { address, identity, NETWORK } from "../test/fixtures/cluster.js"

/** mulberry32: a small seeded PRNG, so every run draws the same connections and peers. */
const prng = (seed: number) => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const shuffle = <A>(xs: Array<A>, random: () => number): Array<A> => {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    const x = xs[i]!
    xs[i] = xs[j]!
    xs[j] = x
  }
  return xs
}

export interface SimOptions {
  readonly nodes: number
  readonly seed: number
  /** New connections a node makes per round (the peers' `maxConcurrentDials`). */
  readonly dialsPerRound: number
  /** Rounds of pure gossip measured once every node knows every address. */
  readonly steadyRounds: number
  /** Give up after this many rounds. */
  readonly maxRounds: number
  /** Called after each round with the nodes that have every address, and the fewest and mean addresses known. */
  readonly onRound?: (round: number, learned: number, fewest: number, mean: number) => void
}

export interface SimResult {
  readonly nodes: number
  /** Rounds (gossip intervals) after the start until every node had every validator's address; -1: never. */
  readonly roundsToLearn: number
  /** Discovery bytes sent, all nodes, during the learning rounds (round 0 included) and the steady ones. */
  readonly learnBytes: number
  readonly steadyBytes: number
  readonly learnMessages: number
  readonly steadyMessages: number
  /** Records per reply during learning, and during the steady rounds. */
  readonly learnReplies: ReadonlyArray<number>
  readonly steadyReplies: ReadonlyArray<number>
  /** Nodes with every address, after each round (round 0 first). */
  readonly progress: ReadonlyArray<number>
  /** Validators' addresses a node knows, mean over nodes, after each round (round 0 first). */
  readonly meanKnown: ReadonlyArray<number>
  /** Connections per node when everyone had learned, and Ed25519 verifications done in all. */
  readonly connectionsAtLearn: number
  readonly recordsAccepted: number
  readonly reports: number
  readonly wallSeconds: number
}

interface SimNode {
  readonly n: number
  readonly peer: Identity.PeerId
  readonly gossip: Gossip
  readonly connected: Set<Identity.PeerId>
  readonly addressed: Set<Identity.PeerId>
  /** Validators with an address and no connection yet, in the order they were learned. */
  readonly toDial: Set<Identity.PeerId>
}

interface InFlight {
  readonly from: Identity.PeerId
  readonly to: Identity.PeerId
  readonly messages: ReadonlyArray<Uint8Array>
}

const RESPONSE_TAG = "PeerExchangeResponse"

export const simulate = (options: SimOptions): SimResult => {
  const started = process.hrtime.bigint()
  // Every stale record a reply repeats is refused with a `RecordRefused` error; capturing its stack
  // trace is most of the simulation's time at 1,000 nodes, and no figure here depends on it.
  const stackTraceLimit = Error.stackTraceLimit
  Error.stackTraceLimit = 0
  const random = prng(options.seed)
  // The defaults, but host names in records, as in part 1 (the simulated network's hosts are names).
  const config = Either.getOrThrow(DiscoveryConfig.decode({ recordHostNames: true }))
  const intervalMillis = Duration.toMillis(config.gossipInterval)
  const policy = { allowLoopback: config.allowLoopback, allowNames: config.recordHostNames }
  const ns = Array.from({ length: options.nodes }, (_, i) => i + 1)
  const peers = ns.map((n) => identity(n).peerId)
  const byPeer = new Map<Identity.PeerId, SimNode>()
  const validators = new Set(peers)
  /** Every validator sorted by PeerId: the order of a request's bitmap (one epoch, 0, throughout). */
  const order = [...peers].sort()
  const randoms = new Map<Identity.PeerId, Random.Random>()

  // The clock: the round's start, plus a microsecond per delivered frame, so a book's "newest first"
  // sees the order in which records arrived, as it would on a real network.
  const base = 1_800_000_000_000
  let round = 0
  let tick = 0
  const now = () => base + round * intervalMillis + tick / 1000

  const queue: Array<InFlight> = []
  let bytes = 0
  let messages = 0
  let replies: Array<number> = []
  let reports = 0

  for (const n of ns) {
    const self = identity(n)
    const book = new Book(self.peerId, NETWORK, config, policy, false)
    const connected = new Set<Identity.PeerId>()
    const addressed = new Set<Identity.PeerId>()
    const toDial = new Set<Identity.PeerId>()
    // A variable, not a literal: it compiles whether or not `Port` asks for `isConnected` yet.
    const port = {
      send: (to: Identity.PeerId, batch: ReadonlyArray<Uint8Array>) => {
        for (const m of batch) bytes += m.byteLength
        messages += batch.length
        queue.push({ from: self.peerId, to, messages: batch })
      },
      connected: () => [...connected],
      isValidator: (peer: Identity.PeerId) => validators.has(peer) && peer !== self.peerId,
      isConnected: (peer: Identity.PeerId) => connected.has(peer),
      missingAddresses: () => addressed.size < options.nodes - 1,
      report: () =>
        Effect.sync(() => {
          reports++
        }),
      learned: (peer: Identity.PeerId) =>
        Effect.sync(() => {
          if (!validators.has(peer)) return
          addressed.add(peer)
          if (!connected.has(peer)) toDial.add(peer)
        }),
      refused: () => Effect.void,
      now,
      hint: () => {
        const bitmap = new Uint8Array(Math.ceil(order.length / 8))
        order.forEach((peer, i) => {
          if (connected.has(peer)) bitmap[i >> 3]! |= 1 << (i & 7)
        })
        return { epoch: 0n, connected: bitmap }
      },
      hinted: (_epoch: bigint, bitmap: Uint8Array) => {
        const named = new Set<Identity.PeerId>()
        for (let i = 0; i < order.length && i >> 3 < bitmap.length; i++) {
          if ((bitmap[i >> 3]! >> (i & 7)) & 1) named.add(order[i]!)
        }
        return named
      }
    }
    // Each node's replies draw from a seeded stream of its own, so a run repeats.
    randoms.set(self.peerId, Random.make(`${options.seed}/${n}`))
    const gossip = new Gossip(config, book, port, intervalMillis)
    byPeer.set(self.peerId, { n, peer: self.peerId, gossip, connected, addressed, toDial })
    gossip.setOwn(Either.getOrThrow(sign(self, NETWORK, [address(n)], BigInt(base), 0n)))
  }
  const nodes = [...byPeer.values()]

  const connect = (a: SimNode, b: SimNode) => {
    if (a.connected.has(b.peer)) return
    a.connected.add(b.peer)
    b.connected.add(a.peer)
    a.toDial.delete(b.peer)
    b.toDial.delete(a.peer)
    a.gossip.onConnected(b.peer)
    b.gossip.onConnected(a.peer)
  }

  const drain = () => {
    for (let i = 0; i < queue.length; i++) {
      const frame = queue[i]!
      tick++
      for (const m of frame.messages) {
        const decoded = Codec.decode(m)
        if (Either.isRight(decoded) && decoded.right._tag === RESPONSE_TAG) {
          replies.push(decoded.right.records.length)
        }
      }
      Effect.runSync(
        Effect.withRandom(
          byPeer.get(frame.to)!.gossip.onFrame(frame.from, frame.messages),
          randoms.get(frame.to)!
        )
      )
    }
    queue.length = 0
  }

  const learnedAll = () => nodes.filter((node) => node.addressed.size === options.nodes - 1).length
  const meanKnown: Array<number> = []
  const observe = () => {
    const learned = learnedAll()
    let fewest = Number.POSITIVE_INFINITY
    let sum = 0
    for (const node of nodes) {
      fewest = Math.min(fewest, node.addressed.size)
      sum += node.addressed.size
    }
    meanKnown.push(Math.round((10 * sum) / options.nodes) / 10)
    options.onRound?.(round, learned, fewest, sum / options.nodes)
    return learned
  }

  // Round 0: every node but the two entry points (nodes 1 and 2, validators themselves) connects to
  // both, in a seeded order; a bootstrap node is an address known from the config.
  const [first, second] = [nodes[0]!, nodes[1]!]
  for (const node of nodes.slice(2)) {
    node.addressed.add(first.peer)
    node.addressed.add(second.peer)
  }
  for (const node of shuffle(nodes.slice(2), random)) {
    for (const entry of random() < 0.5 ? [first, second] : [second, first]) connect(node, entry)
  }
  drain()
  const progress = [observe()]

  let roundsToLearn = progress[0] === options.nodes ? 0 : -1
  let connectionsAtLearn = 0
  const learn = { bytes: 0, messages: 0, replies: [] as Array<number> }
  const finishLearning = () => {
    learn.bytes = bytes
    learn.messages = messages
    learn.replies = replies
    connectionsAtLearn = nodes.reduce((s, node) => s + node.connected.size, 0) / options.nodes
    bytes = 0
    messages = 0
    replies = []
  }
  if (roundsToLearn === 0) finishLearning()

  let steady = 0
  while (round < options.maxRounds && (roundsToLearn < 0 || steady < options.steadyRounds)) {
    round++
    tick = 0
    // Connection formation: up to `dialsPerRound` newly learned validators per node, in learning order.
    for (const node of shuffle([...nodes], random)) {
      let dialled = 0
      for (const peer of [...node.toDial]) {
        if (dialled >= options.dialsPerRound) break
        if (node.connected.has(peer)) {
          node.toDial.delete(peer)
          continue
        }
        connect(node, byPeer.get(peer)!)
        dialled++
      }
    }
    // The gossip timer: one request to a random connected peer.
    for (const node of nodes) {
      const connected = [...node.connected]
      if (connected.length > 0) node.gossip.ask(connected[Math.floor(random() * connected.length)]!)
    }
    drain()
    progress.push(observe())
    if (roundsToLearn >= 0) steady++
    else if (progress[progress.length - 1] === options.nodes) {
      roundsToLearn = round
      finishLearning()
    }
  }

  if (roundsToLearn < 0) finishLearning()
  Error.stackTraceLimit = stackTraceLimit

  return {
    nodes: options.nodes,
    roundsToLearn,
    learnBytes: learn.bytes,
    steadyBytes: bytes,
    learnMessages: learn.messages,
    steadyMessages: messages,
    learnReplies: learn.replies,
    steadyReplies: replies,
    progress,
    meanKnown,
    connectionsAtLearn,
    recordsAccepted: nodes.reduce((s, node) => s + node.gossip.stats.recordsAccepted, 0),
    reports,
    wallSeconds: Number(process.hrtime.bigint() - started) / 1e9
  }
}
