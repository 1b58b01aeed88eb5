// Type declarations for switchboard.js, served at /switchboard.d.ts.

export interface SwitchboardOptions {
  /** A JWT; sent as tokenMethod says. */
  token?: string;
  /** How the token travels: a Sec-WebSocket-Protocol entry (default), the query, or a first auth frame. */
  tokenMethod?: "protocol" | "query" | "frame";
  /** Returns a fresh token: called before reconnecting and refreshBeforeExpiry ms before exp. */
  getToken?: () => Promise<string> | string;
  refreshBeforeExpiry?: number;
  /** Development mode only: the user id, sent as ?user=. */
  user?: string;
  /** Reconnect automatically (default true). */
  reconnect?: boolean;
  /** First reconnect delay in ms (default 1000), doubling up to backoffCap (default 30000), with jitter. */
  backoffBase?: number;
  backoffCap?: number;
  /** Reconnect attempts before "reconnect_failed" (default Infinity). */
  maxAttempts?: number;
  /** Keep-alive ping interval in ms (default 25000). */
  pingInterval?: number;
  /** Default request timeout in ms (default 10000). */
  requestTimeout?: number;
  /** Publishes while disconnected: queued (default) up to offlineQueueSize, or rejected. */
  offlinePublish?: "queue" | "reject";
  offlineQueueSize?: number;
  /** WebSocket implementation (default globalThis.WebSocket). */
  WebSocket?: unknown;
  random?: () => number;
}

export interface Frame {
  type: string;
  id?: number | string;
  [key: string]: unknown;
}

export interface Welcome extends Frame { type: "welcome"; user: string; connection_id: string }
export interface Message extends Frame {
  type: "message"; channel: string; from?: string; data: unknown; offset: number; epoch: string; timestamp: number;
}
export interface Subscribed extends Frame { type: "subscribed"; channel: string; offset: number; epoch: string; recovered?: boolean }
export interface Published extends Frame { type: "published"; channel: string; offset: number }
export interface PresenceReply extends Frame {
  type: "presence"; channel: string; users: { user: string; connections: number; info?: unknown }[];
}
/** A publication that excluded this user: its offset is taken, its data is not for them. The client consumes it; no event. */
export interface Skip extends Frame { type: "skip"; channel: string; offset: number; epoch: string }
export interface HistoryReply extends Frame {
  type: "history"; channel: string; publications: (Message | Skip)[]; offset: number; epoch: string; more?: boolean;
}
export interface Join extends Frame { type: "join"; channel: string; user: string; info?: unknown }
export interface Leave extends Frame { type: "leave"; channel: string; user: string }
/** A subscription the server ended; code says why (forbidden: a refreshed token no longer allows it). */
export interface Unsubscribed extends Frame { type: "unsubscribed"; channel: string; code: string; reason: string }
export interface Direct extends Frame { type: "direct"; from?: string; data: unknown; timestamp: number }

export interface Events {
  connected: { user: string; connectionId: string; reconnected: boolean };
  disconnected: { code: number; reason: string };
  reconnecting: { attempt: number; delay: number };
  reconnect_failed: { attempts: number };
  recovery_failed: { channel: string; offset: number; epoch: string };
  subscription_failed: { channel: string; code: string; error: string; retrying: boolean };
  error: Error;
  message: Message;
  join: Join;
  leave: Leave;
  direct: Direct;
  unsubscribed: Unsubscribed;
}

export declare class SwitchboardError extends Error {
  code: string;
  frame?: Frame;
}

export declare class Switchboard {
  constructor(url: string, options?: SwitchboardOptions);
  readonly state: "idle" | "connecting" | "connected" | "reconnecting" | "closed";
  readonly user?: string;
  connect(): Promise<Welcome>;
  close(): void;
  on<E extends keyof Events>(event: E, handler: (payload: Events[E]) => void): () => void;
  on(event: string, handler: (payload: Frame) => void): () => void;
  request<T extends Frame = Frame>(frame: Frame, timeout?: number): Promise<T>;
  subscribe(channel: string, options?: { presence?: boolean; info?: unknown; recover?: { offset: number; epoch: string } }): Promise<Subscribed>;
  unsubscribe(channel: string): Promise<Frame>;
  publish(channel: string, data: unknown, options?: { expectOffset?: number }): Promise<Published>;
  send(user: string, data: unknown): Promise<Frame>;
  presence(channel: string): Promise<PresenceReply>;
  history(channel: string, options?: { since?: number; limit?: number }): Promise<HistoryReply>;
  ping(): Promise<Frame>;
}

export declare function tokenExpiry(token: string | undefined): number | undefined;
