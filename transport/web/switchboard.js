// Switchboard browser and Node client: one dependency-free ES module.
// It reconnects by itself (exponential backoff with jitter), re-authenticates,
// re-subscribes every channel and recovers what it missed, so the
// application writes no reconnection code.

const RESERVED = new Set(["connected", "disconnected", "reconnecting", "reconnect_failed", "error"]);
// Refusals worth retrying: the server was busy, or the channel was moving.
const RETRYABLE = new Set(["rate_limited", "unavailable", "timeout"]);
// Re-subscriptions in flight at once after a reconnect.
const RESUBSCRIBE_AT_ONCE = 32;
// Close codes after which reconnecting cannot help.
const FINAL_CLOSE = new Set([1000, 4010, 4029]);

export class SwitchboardError extends Error {
  constructor(message, code, frame) {
    super(message);
    this.name = "SwitchboardError";
    this.code = code;
    this.frame = frame;
  }
}

export class Switchboard {
  /**
   * @param {string} url ws:// or wss:// URL of the broker's /ws endpoint
   * @param {object} [options] see switchboard.d.ts
   */
  constructor(url, options = {}) {
    this.url = url;
    this.options = {
      token: undefined,
      tokenMethod: "protocol", // "query" | "protocol" | "frame"
      getToken: undefined, // async () => fresh token; used on reconnect and before expiry
      refreshBeforeExpiry: 30_000,
      user: undefined, // development mode only: ?user=
      reconnect: true,
      backoffBase: 1_000,
      backoffCap: 30_000,
      maxAttempts: Infinity,
      pingInterval: 25_000,
      requestTimeout: 10_000,
      offlinePublish: "queue", // or "reject"
      offlineQueueSize: 100,
      WebSocket: globalThis.WebSocket,
      random: Math.random,
      ...options,
    };
    this.state = "idle"; // idle | connecting | connected | reconnecting | closed
    this.handlers = new Map();
    this.pending = new Map(); // id → {resolve, reject, timer}
    this.channels = new Map(); // channel → {presence, info, offset, epoch}
    this.queue = [];
    this.nextId = 1;
    this.attempts = 0;
    this.socket = null;
    this.user = undefined;
    this.token = this.options.token;
  }

  /** Registers handler for event; several per event; returns the function that removes it. */
  on(event, handler) {
    if (!this.handlers.has(event)) this.handlers.set(event, new Set());
    this.handlers.get(event).add(handler);
    return () => this.handlers.get(event)?.delete(handler);
  }

  emit(event, payload) {
    for (const handler of [...(this.handlers.get(event) ?? [])]) {
      try {
        handler(payload);
      } catch (err) {
        if (event !== "error") this.emit("error", err);
      }
    }
  }

  /** Opens the connection; resolves with the server's welcome frame. */
  connect() {
    if (this.state === "connected") return Promise.resolve(this.welcome);
    this.closing = false;
    return new Promise((resolve, reject) => {
      this.connectWaiters = { resolve, reject };
      this.open();
    });
  }

  /** Closes the connection and stops reconnecting. */
  close() {
    this.closing = true;
    this.state = "closed";
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.refreshTimer);
    clearInterval(this.pingTimer);
    this.failPending(new SwitchboardError("client closed", "closed"));
    for (const q of this.queue.splice(0)) q.reject(new SwitchboardError("client closed", "closed"));
    if (this.socket && this.socket.readyState <= 1) {
      try {
        this.socket.send(JSON.stringify({ type: "disconnect" }));
      } catch {}
      this.socket.close(1000);
    }
    this.connectWaiters?.reject(new SwitchboardError("client closed", "closed"));
    this.connectWaiters = null;
  }

  async open() {
    this.state = this.attempts === 0 ? "connecting" : "reconnecting";
    if (this.attempts > 0 && this.options.getToken) {
      try {
        this.token = await this.options.getToken();
      } catch (err) {
        this.emit("error", err);
      }
    }
    if (this.closing) return;
    let url = this.url;
    const params = [];
    if (this.options.user) params.push("user=" + encodeURIComponent(this.options.user));
    if (this.token && this.options.tokenMethod === "query") params.push("token=" + encodeURIComponent(this.token));
    if (params.length) url += (url.includes("?") ? "&" : "?") + params.join("&");
    const protocols = ["switchboard.v1"];
    if (this.token && this.options.tokenMethod === "protocol") protocols.push("auth." + this.token);
    let socket;
    try {
      socket = new this.options.WebSocket(url, protocols);
    } catch (err) {
      this.emit("error", err);
      this.scheduleReconnect();
      return;
    }
    this.socket = socket;
    socket.onopen = () => {
      if (this.token && this.options.tokenMethod === "frame") {
        socket.send(JSON.stringify({ type: "auth", token: this.token }));
      }
    };
    socket.onmessage = (event) => this.receive(event.data);
    socket.onerror = () => {
      // Node 20's WebSocket reports a connection that could not be opened
      // with an error event and no close event: without one the client
      // would wait forever instead of trying again.
      if (socket.readyState !== 1) setTimeout(() => this.closed(socket, { code: 1006, reason: "" }), 0);
    };
    socket.onclose = (event) => this.closed(socket, event);
  }

  receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      this.emit("error", new SwitchboardError("server sent invalid JSON", "invalid_json"));
      return;
    }
    if (frame.id !== undefined && this.pending.has(frame.id)) {
      const waiter = this.pending.get(frame.id);
      this.pending.delete(frame.id);
      clearTimeout(waiter.timer);
      if (frame.type === "error") {
        waiter.reject(new SwitchboardError(frame.error, frame.code, frame));
        return;
      }
      if (frame.type === "subscribed") this.subscribed(frame);
      waiter.resolve(frame);
      return;
    }
    switch (frame.type) {
      case "welcome":
        this.welcomed(frame);
        break;
      case "authenticated":
        this.user = frame.user_id;
        this.scheduleRefresh();
        break;
      case "message":
      case "skip":
        this.live(frame);
        break;
      case "gap":
        this.gap(frame);
        break;
      case "presence_batch":
        // Joins and leaves that happened together: handed on one by one.
        for (const event of frame.events) this.emit(event.type, event);
        break;
      case "unsubscribed":
        // The server ended it (a refreshed token no longer allows it): not
        // to be subscribed again after a reconnect.
        if (frame.code) this.channels.delete(frame.channel);
        this.emit("unsubscribed", frame);
        break;
      case "error":
        if (frame.code === "unauthenticated") this.authFailed = frame.error;
        this.emit("error", new SwitchboardError(frame.error, frame.code, frame));
        break;
      default:
        if (!RESERVED.has(frame.type)) this.emit(frame.type, frame);
    }
  }

  /**
   * A live (or recovered) message or skip. An offset jump the server did
   * not announce is taken as a gap: the missed ones are fetched first.
   */
  live(frame) {
    const ch = this.channels.get(frame.channel);
    if (ch && !ch.catchingUp && ch.epoch === frame.epoch && ch.offset !== undefined && frame.offset > ch.offset + 1) {
      this.gap({ channel: frame.channel, epoch: frame.epoch, offset: frame.offset - 1 });
    }
    if (ch?.catchingUp) {
      ch.catchingUp.push(frame); // handed on once the missed ones are
      return;
    }
    this.deliver(frame.channel, ch, frame);
  }

  /**
   * Hands a live or recovered message on, in order, once. A skip (a
   * publication that excluded this user) only moves the offset on.
   */
  deliver(channel, ch, frame) {
    if (ch) {
      // After a recovery, drop anything already seen.
      if (ch.epoch === frame.epoch && ch.offset !== undefined && frame.offset <= ch.offset) return;
      if (ch.epoch && frame.epoch !== ch.epoch) {
        // A new epoch with no word from the server: what came before is gone.
        this.emit("recovery_failed", { channel, offset: frame.offset - 1, epoch: frame.epoch });
      }
      ch.offset = frame.offset;
      ch.epoch = frame.epoch;
    }
    if (frame.type !== "skip") this.emit("message", frame);
  }

  /**
   * The server says the channel's stream jumps (or a live message jumped
   * unannounced): the next message follows frame.offset of frame.epoch. In
   * the same epoch the missed messages are fetched from history and handed
   * on first; otherwise (or if history no longer has them)
   * "recovery_failed" says the application must reload.
   */
  async gap(frame) {
    const channel = frame.channel;
    const ch = this.channels.get(channel);
    if (!ch || ch.catchingUp) return;
    const failed = () => {
      this.emit("recovery_failed", { channel, offset: frame.offset, epoch: frame.epoch });
      ch.offset = frame.offset;
      ch.epoch = frame.epoch;
    };
    if (ch.epoch !== frame.epoch || ch.offset === undefined || frame.offset <= ch.offset) {
      if (ch.epoch !== frame.epoch || ch.offset === undefined) failed();
      return;
    }
    ch.catchingUp = [];
    try {
      let since = ch.offset;
      while (since < frame.offset) {
        const page = await this.history(channel, { since, limit: frame.offset - since });
        const missed = page.publications.filter((m) => m.epoch === ch.epoch && m.offset > since && m.offset <= frame.offset);
        if (page.epoch !== ch.epoch || missed.length === 0 || missed[0].offset !== since + 1) throw new Error("history no longer holds them");
        for (const m of missed) this.deliver(channel, ch, m);
        since = ch.offset;
      }
    } catch {
      failed();
    } finally {
      const live = ch.catchingUp;
      ch.catchingUp = undefined;
      for (const m of live) this.live(m); // a jump among them starts another catch-up
    }
  }

  async welcomed(frame) {
    this.welcome = frame;
    this.user = frame.user;
    this.state = "connected";
    const reconnected = this.attempts > 0;
    this.attempts = 0;
    this.authFailed = undefined;
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => this.ping().catch(() => {}), this.options.pingInterval);
    this.emit("connected", { user: frame.user, connectionId: frame.connection_id, reconnected });
    this.connectWaiters?.resolve(frame);
    this.connectWaiters = null;
    // Paced: a page with hundreds of channels does not send them all at once.
    const channels = [...this.channels];
    const next = async () => {
      for (let entry = channels.shift(); entry; entry = channels.shift()) {
        await this.keepSubscribed(entry[0], entry[1]).catch(() => {});
      }
    };
    for (let i = 0; i < Math.min(RESUBSCRIBE_AT_ONCE, channels.length); i++) next();
    for (const q of this.queue.splice(0)) {
      this.request(q.frame).then(q.resolve, q.reject);
    }
  }

  async resubscribe(channel, ch) {
    const frame = { type: "subscribe", channel };
    if (ch.presence) frame.presence = true;
    if (ch.info !== undefined) frame.info = ch.info;
    if (ch.offset !== undefined && ch.epoch) frame.recover = { offset: ch.offset, epoch: ch.epoch };
    const reply = await this.request(frame);
    if (frame.recover && !reply.recovered) {
      this.emit("recovery_failed", { channel, offset: reply.offset, epoch: reply.epoch });
    }
    return reply;
  }

  /**
   * Takes a channel's place from a subscribe reply as it arrives, before
   * any frame that follows it: unless the subscription recovered from
   * where it stood, its stream starts there.
   */
  subscribed(frame) {
    const ch = this.channels.get(frame.channel);
    if (ch && !frame.recovered) {
      ch.offset = frame.offset;
      ch.epoch = frame.epoch;
    }
  }

  closed(socket, event) {
    if (socket !== this.socket) return; // an old socket, or this one's second word of its end
    this.socket = null;
    clearInterval(this.pingTimer);
    clearTimeout(this.refreshTimer);
    const wasConnected = this.state === "connected";
    this.failPending(new SwitchboardError("connection lost", "disconnected"));
    if (wasConnected || this.state === "reconnecting" || this.state === "connecting") {
      this.emit("disconnected", { code: event.code, reason: event.reason });
    }
    if (this.closing) return;
    const final = FINAL_CLOSE.has(event.code) || (event.code === 4001 && !this.options.getToken);
    if (!this.options.reconnect || final) {
      this.state = "closed";
      this.connectWaiters?.reject(new SwitchboardError(this.authFailed || `closed with ${event.code}`, "closed"));
      this.connectWaiters = null;
      return;
    }
    this.scheduleReconnect();
  }

  /** The delay before reconnect attempt n (0-based): exponential, capped, with jitter. */
  backoff(n) {
    const ceiling = Math.min(this.options.backoffCap, this.options.backoffBase * 2 ** n);
    return ceiling / 2 + this.options.random() * (ceiling / 2);
  }

  scheduleReconnect() {
    if (this.attempts >= this.options.maxAttempts) {
      this.state = "closed";
      this.emit("reconnect_failed", { attempts: this.attempts });
      this.connectWaiters?.reject(new SwitchboardError("could not reconnect", "reconnect_failed"));
      this.connectWaiters = null;
      for (const q of this.queue.splice(0)) q.reject(new SwitchboardError("could not reconnect", "reconnect_failed"));
      return;
    }
    const delay = this.backoff(this.attempts);
    this.attempts++;
    this.state = "reconnecting";
    this.emit("reconnecting", { attempt: this.attempts, delay });
    this.reconnectTimer = setTimeout(() => this.open(), delay);
  }

  scheduleRefresh() {
    clearTimeout(this.refreshTimer);
    const exp = tokenExpiry(this.token);
    if (!exp || !this.options.getToken) return;
    const wait = Math.max(0, exp - Date.now() - this.options.refreshBeforeExpiry);
    this.refreshTimer = setTimeout(async () => {
      try {
        this.token = await this.options.getToken();
        await this.request({ type: "auth", token: this.token });
      } catch (err) {
        this.emit("error", err);
      }
    }, wait);
  }

  failPending(err) {
    for (const [, waiter] of this.pending) {
      clearTimeout(waiter.timer);
      waiter.reject(err);
    }
    this.pending.clear();
  }

  /** Sends frame with a fresh id; resolves with the reply, rejects on an error reply or timeout. */
  request(frame, timeout = this.options.requestTimeout) {
    if (this.state !== "connected" || !this.socket || this.socket.readyState !== 1) {
      return Promise.reject(new SwitchboardError("not connected", "disconnected"));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new SwitchboardError(`no reply to ${frame.type} within ${timeout} ms`, "timeout"));
      }, timeout);
      this.pending.set(id, { resolve, reject, timer });
      this.socket.send(JSON.stringify({ ...frame, id }));
    });
  }

  /**
   * Subscribes to channel; it is re-subscribed (with recovery) after every
   * reconnect. A refusal that retrying can fix (rate_limited, unavailable,
   * timeout) is retried with backoff; it rejects only when retrying cannot
   * help (forbidden, channel_full, ...), and then the channel is dropped.
   */
  async subscribe(channel, { presence = false, info, recover } = {}) {
    const ch = this.channels.get(channel) ?? { presence, info };
    if (recover) Object.assign(ch, recover);
    this.channels.set(channel, ch);
    return this.keepSubscribed(channel, ch);
  }

  /**
   * Subscribes until the server accepts, emitting "subscription_failed"
   * ({channel, code, error, retrying}) for every refusal; never leaves the
   * client believing it is subscribed when the server refused.
   */
  async keepSubscribed(channel, ch) {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.resubscribe(channel, ch);
      } catch (err) {
        if (err.code === "disconnected" || err.code === "closed") throw err; // re-subscribed on reconnect, or done
        const retrying = RETRYABLE.has(err.code) && this.channels.get(channel) === ch;
        this.emit("subscription_failed", { channel, code: err.code, error: err.message, retrying });
        if (!retrying) {
          if (this.channels.get(channel) === ch) this.channels.delete(channel);
          throw err;
        }
        await new Promise((resolve) => setTimeout(resolve, this.backoff(Math.min(attempt, 5))));
        if (this.channels.get(channel) !== ch || this.state !== "connected") {
          throw new SwitchboardError("subscription abandoned", err.code);
        }
      }
    }
  }

  async unsubscribe(channel) {
    this.channels.delete(channel);
    if (this.state !== "connected") return { type: "unsubscribed", channel };
    return this.request({ type: "unsubscribe", channel });
  }

  /** Publishes data; while disconnected the publication is queued (bounded) or rejected, by option. */
  publish(channel, data, { expectOffset } = {}) {
    const frame = { type: "message", channel, data };
    if (expectOffset !== undefined) frame.expect_offset = expectOffset;
    if (this.state === "connected") return this.request(frame);
    if (this.options.offlinePublish !== "queue" || this.state === "closed") {
      return Promise.reject(new SwitchboardError("not connected", "disconnected"));
    }
    if (this.queue.length >= this.options.offlineQueueSize) {
      return Promise.reject(new SwitchboardError("offline queue is full", "queue_full"));
    }
    return new Promise((resolve, reject) => this.queue.push({ frame, resolve, reject }));
  }

  send(user, data) {
    return this.request({ type: "send", user, data });
  }

  presence(channel) {
    return this.request({ type: "presence", channel });
  }

  history(channel, { since, limit } = {}) {
    const frame = { type: "history", channel };
    if (since !== undefined) frame.since = since;
    if (limit !== undefined) frame.limit = limit;
    return this.request(frame);
  }

  ping() {
    return this.request({ type: "ping" });
  }
}

/** The exp claim of a JWT in milliseconds, or undefined. */
export function tokenExpiry(token) {
  if (!token) return undefined;
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
    return typeof claims.exp === "number" ? claims.exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}
