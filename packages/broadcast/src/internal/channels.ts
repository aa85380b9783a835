// Which channel each message type travels on, and the refusals of what an application may not send.
import { TransportConfig } from "@hotstuff2/transport"
import type { Message } from "@hotstuff2/wire"
import { InvalidOutbound } from "../Broadcaster.js"

type MessageTag = Message.MessageTag

const { Channel } = TransportConfig

const channels: Record<MessageTag, number | undefined> = {
  Proposal: Channel.consensus,
  Vote: Channel.consensus,
  QuorumCertificate: Channel.consensus,
  NewView: Channel.control,
  Timeout: Channel.control,
  TimeoutCertificate: Channel.control,
  AppMessage: Channel.control,
  SyncRequest: Channel.sync,
  SyncResponse: Channel.sync,
  // Point to point only (NodeRpc): refused in envelopes and reliable slots, both ways.
  RpcRequest: Channel.sync,
  RpcResponse: Channel.sync,
  // Internal to the peers and discovery packages.
  Ping: undefined,
  Pong: undefined,
  Ack: undefined,
  PeerRecord: undefined,
  PeerExchangeRequest: undefined,
  PeerExchangeResponse: undefined
}

/** The channel a message type travels on; undefined for types internal to the network layer. */
export const channelOf = (tag: MessageTag): number | undefined => channels[tag]

/** Why a message without an application channel cannot be sent. */
export const internalOnly = (message: Message.Message) =>
  new InvalidOutbound({
    what: message._tag,
    detail: "internal to the network layer; not sent by applications"
  })

/** Request/response frames: bare `send` only, never sealed in an envelope or held for retransmission. */
export const isPointToPointOnly = (tag: MessageTag): boolean => tag === "RpcRequest" || tag === "RpcResponse"

/** Why a point-to-point-only message cannot be broadcast, multicast, routed or sent reliably. */
export const pointToPointOnly = (message: Message.Message, how: string) =>
  new InvalidOutbound({
    what: message._tag,
    detail: `point to point only (a bare send); not ${how}`
  })

/** Why `message` cannot be sent, from the codec's (or the envelope's) refusal. */
export const invalid = (message: Message.Message, error: { readonly message: string }) =>
  new InvalidOutbound({ what: message._tag, detail: error.message })
