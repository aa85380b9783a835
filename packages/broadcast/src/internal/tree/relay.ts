// A receiver's side of a tree broadcast. Once a tree envelope is verified (inbound.ts), its header
// says which tree it travels in: this node forwards the slot's bytes unchanged to its own children
// there, before delivering, and owes the origin a receipt. Receipts are batched per origin and sent
// when the chunk of frames that produced them is done: one slot per origin per chunk, never one
// frame per message. A copy received again (a repair, or a slow relay) is acknowledged again, so the
// origin stops repairing; it is not forwarded again.
import type { Envelope, Identity } from "@hotstuff2/wire"
import { type Core, charge } from "../core.js"
import { sendOnceConnected } from "../outbound.js"
import { decodeTreeHeader, encodeReceipt, MAX_RECEIPT_SEQUENCES, type TreeHeader } from "./header.js"
import { TreeCache } from "./layout.js"

type PeerId = Identity.PeerId

export const makeTreeRelay = (core: Core) => {
  const cache = new TreeCache(64)
  const owed = new Map<PeerId, { readonly channel: number; readonly sequences: Array<bigint> }>()
  const waitForChild = core.config.repairAfterMax

  /** The header and message of a verified tree envelope, or what is wrong with its header. */
  const open = (envelope: Envelope.Envelope) => {
    const decoded = decodeTreeHeader(envelope.payload)
    if (typeof decoded === "string") return decoded
    const members = core.sets.get(decoded.header.epoch)
    if (members !== undefined) {
      const last = decoded.header.demoted[decoded.header.demoted.length - 1]
      if (last !== undefined && last >= members.length) {
        return `tree header: demoted index ${last} outside the ${members.length} members of epoch ${decoded.header.epoch}`
      }
    }
    return decoded
  }

  /** Forwards `slot` (unchanged) to this node's children in the envelope's tree. */
  const forward = (origin: PeerId, header: TreeHeader, slot: Uint8Array, channel: number) => {
    const members = core.sets.get(header.epoch)
    if (members === undefined) {
      return
    }
    const tree = cache.get({
      members,
      origin,
      networkId: core.networkId,
      epoch: header.epoch,
      round: header.round,
      fanout: header.fanout,
      demoted: header.demoted
    })
    const children = tree.children(core.self)
    if (children.length === 0) return
    const batch = [slot]
    for (const child of children) {
      if (child === origin) continue
      const error = core.manager.unsafeSend(child, channel, batch)
      if (error === undefined) {
        charge(core, slot.length)
        core.observer.relayed?.(child, channel, slot.length)
      } else if (error._tag === "PeerNotConnected") {
        // Under a connection budget a child may not be connected yet: the send above started a
        // dial; the copy follows once it is up (the origin repairs the child meanwhile if it must).
        core.fork(sendOnceConnected(core, child, { slot, channel }, undefined, waitForChild))
      }
      // A full queue: the origin repairs the child.
    }
  }

  /** Owes `origin` a receipt for `sequence`, sent with the others at `flush`. */
  const acknowledge = (origin: PeerId, sequence: bigint, channel: number) => {
    let entry = owed.get(origin)
    if (entry === undefined) {
      entry = { channel, sequences: [] }
      owed.set(origin, entry)
    }
    entry.sequences.push(sequence)
  }

  /** Sends what is owed: one receipt slot per origin (per 256 sequences). */
  const flush = () => {
    if (owed.size === 0) return
    for (const [origin, { channel, sequences }] of owed) {
      const slots: Array<Uint8Array> = []
      for (let i = 0; i < sequences.length; i += MAX_RECEIPT_SEQUENCES) {
        slots.push(encodeReceipt(sequences.slice(i, i + MAX_RECEIPT_SEQUENCES)))
      }
      // Not connected: the origin repairs, and its copy brings another receipt.
      core.manager.unsafeSend(origin, channel, slots)
    }
    owed.clear()
  }

  return { open, forward, acknowledge, flush }
}

export type TreeRelay = ReturnType<typeof makeTreeRelay>
