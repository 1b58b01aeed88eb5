// Unit tests of the client's logic against a scripted WebSocket: node --test
import { test } from "node:test";
import assert from "node:assert/strict";
import { Switchboard, tokenExpiry } from "./switchboard.js";

class FakeSocket {
  static all = [];
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = 0;
    this.sent = [];
    FakeSocket.all.push(this);
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close(code = 1000) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    setTimeout(() => this.onclose?.({ code, reason: "" }), 0);
  }
  // What the server does:
  accept(user = "u") {
    this.readyState = 1;
    this.onopen?.();
    this.push({ type: "welcome", user, connection_id: "c" + FakeSocket.all.length });
  }
  push(frame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  drop(code = 1006) {
    this.readyState = 3;
    this.onclose?.({ code, reason: "" });
  }
  last() {
    return this.sent[this.sent.length - 1];
  }
}

const tick = (ms = 5) => new Promise((r) => setTimeout(r, ms));
const latest = () => FakeSocket.all[FakeSocket.all.length - 1];

function client(options = {}) {
  FakeSocket.all = [];
  return new Switchboard("ws://broker/ws", { WebSocket: FakeSocket, backoffBase: 2, backoffCap: 8, pingInterval: 60_000, ...options });
}

// Answers every request the client sends on socket, as a broker would.
function autoReply(socket, reply = (f) => ({ type: f.type === "ping" ? "pong" : f.type + "d", channel: f.channel })) {
  const send = socket.send.bind(socket);
  socket.send = (text) => {
    send(text);
    const f = JSON.parse(text);
    if (f.id !== undefined) setTimeout(() => socket.push({ ...reply(f), id: f.id }), 0);
  };
}

// connectSubscribed connects c and subscribes it to channels, each
// answered at offset 3 of epoch e1.
async function connectSubscribed(c, ...channels) {
  const connected = c.connect();
  autoReply(latest(), (f) => ({ type: "subscribed", channel: f.channel, offset: 3, epoch: "e1" }));
  latest().accept();
  await connected;
  for (const channel of channels) await c.subscribe(channel);
}

test("backoff doubles from the base up to the cap, with jitter", () => {
  const c = new Switchboard("ws://x", { backoffBase: 1000, backoffCap: 30_000, random: () => 0 });
  assert.deepEqual([0, 1, 2, 5, 9].map((n) => c.backoff(n)), [500, 1000, 2000, 15_000, 15_000]);
  c.options.random = () => 0.999999;
  assert.ok(c.backoff(0) > 999 && c.backoff(0) <= 1000);
  assert.ok(c.backoff(20) <= 30_000);
  const spread = new Set(Array.from({ length: 20 }, () => new Switchboard("ws://x").backoff(3)));
  assert.ok(spread.size > 1, "jitter spreads reconnects");
});

test("requests correlate replies by id, reject on error replies and on timeout", async () => {
  const c = client({ requestTimeout: 30 });
  const connected = c.connect();
  latest().accept();
  await connected;
  const s = latest();
  const pong = c.ping();
  s.push({ type: "pong", id: s.last().id });
  assert.equal((await pong).type, "pong");

  const refused = c.subscribe("nope:1");
  s.push({ type: "error", error: "Not allowed", code: "forbidden", id: s.last().id });
  await assert.rejects(refused, { code: "forbidden" });

  await assert.rejects(c.ping(), { code: "timeout" });
  c.close();
});

test("several handlers per event, each removable", async () => {
  const c = client();
  const seen = [];
  const off = c.on("message", (m) => seen.push("a" + m.data));
  c.on("message", (m) => seen.push("b" + m.data));
  const connected = c.connect();
  latest().accept();
  await connected;
  latest().push({ type: "message", channel: "x", data: 1, offset: 1, epoch: "e" });
  off();
  latest().push({ type: "message", channel: "x", data: 2, offset: 2, epoch: "e" });
  assert.deepEqual(seen, ["a1", "b1", "b2"]);
  c.close();
});

test("after a drop it reconnects, re-subscribes with recovery and reports a failed recovery", async () => {
  const c = client();
  const events = [];
  for (const e of ["connected", "disconnected", "reconnecting", "recovery_failed"]) c.on(e, (p) => events.push([e, p]));
  await connectSubscribed(c, "doc:1", "doc:2");
  latest().push({ type: "message", channel: "doc:1", data: "x", offset: 4, epoch: "e1" });

  latest().drop();
  await tick(20);
  const second = latest();
  assert.equal(FakeSocket.all.length, 2);
  autoReply(second, (f) =>
    f.channel === "doc:1"
      ? { type: "subscribed", channel: f.channel, offset: 4, epoch: "e1", recovered: true }
      : { type: "subscribed", channel: f.channel, offset: 9, epoch: "e2", recovered: false });
  second.accept();
  await tick(10);
  const resubscribes = second.sent.filter((f) => f.type === "subscribe");
  assert.deepEqual(resubscribes.map((f) => [f.channel, f.recover]), [
    ["doc:1", { offset: 4, epoch: "e1" }],
    ["doc:2", { offset: 3, epoch: "e1" }],
  ]);
  const names = events.map(([e]) => e);
  assert.deepEqual(names.slice(0, 4), ["connected", "disconnected", "reconnecting", "connected"]);
  assert.equal(events[3][1].reconnected, true);
  assert.deepEqual(events.find(([e]) => e === "recovery_failed")[1], { channel: "doc:2", offset: 9, epoch: "e2" });

  // Replayed messages already seen are dropped.
  const got = [];
  c.on("message", (m) => got.push(m.offset));
  second.push({ type: "message", channel: "doc:1", data: "x", offset: 4, epoch: "e1" });
  second.push({ type: "message", channel: "doc:1", data: "y", offset: 5, epoch: "e1" });
  assert.deepEqual(got, [5]);
  c.close();
});

test("a connection that fails with an error event and no close event (Node 20) is tried again, once", async () => {
  const c = client();
  const events = [];
  for (const e of ["disconnected", "reconnecting"]) c.on(e, () => events.push(e));
  const connected = c.connect();
  latest().accept();
  await connected;
  latest().drop();
  await tick(20);
  const refused = latest();
  refused.readyState = 3;
  refused.onerror?.({ type: "error" }); // and no close event
  await tick(20);
  assert.equal(FakeSocket.all.length, 3, "a new attempt after the error alone");
  const failing = latest();
  failing.readyState = 3;
  failing.onerror?.({ type: "error" }); // a browser says both
  failing.onclose?.({ code: 1006, reason: "" });
  await tick(20);
  assert.equal(FakeSocket.all.length, 4, "one attempt for an error and a close");
  assert.deepEqual(events.filter((e) => e === "reconnecting").length, 3);
  latest().accept();
  await tick(5);
  assert.equal(c.state, "connected");
  c.close();
});

test("gives up after maxAttempts and close() really stops", async () => {
  const c = client({ maxAttempts: 2 });
  let failed = null;
  c.on("reconnect_failed", (p) => (failed = p));
  const connected = c.connect();
  latest().accept();
  await connected;
  latest().drop();
  for (let i = 0; i < 3; i++) {
    await tick(20);
    latest().drop();
  }
  await tick(20);
  assert.deepEqual(failed, { attempts: 2 });
  assert.equal(c.state, "closed");
  const sockets = FakeSocket.all.length;
  await tick(40);
  assert.equal(FakeSocket.all.length, sockets, "no attempt after giving up");

  const d = client();
  const p = d.connect();
  latest().accept();
  await p;
  d.close();
  assert.deepEqual(latest().sent.at(-1), { type: "disconnect" });
  await tick(40);
  assert.equal(FakeSocket.all.length, 1, "close() stops reconnecting");
});

test("publishes made while disconnected are queued and sent after reconnecting, or rejected", async () => {
  const c = client({ offlineQueueSize: 2 });
  const connected = c.connect();
  latest().accept();
  await connected;
  latest().drop();
  const p1 = c.publish("chat:1", "a");
  const p2 = c.publish("chat:1", "b");
  await assert.rejects(c.publish("chat:1", "c"), { code: "queue_full" });
  await tick(20);
  autoReply(latest(), (f) => ({ type: "published", channel: f.channel, offset: 1 }));
  latest().accept();
  assert.equal((await p1).type, "published");
  await p2;
  assert.deepEqual(latest().sent.filter((f) => f.type === "message").map((f) => f.data), ["a", "b"]);
  c.close();

  const r = client({ offlinePublish: "reject" });
  const rc = r.connect();
  latest().accept();
  await rc;
  latest().drop();
  await assert.rejects(r.publish("chat:1", "x"), { code: "disconnected" });
  r.close();
});

test("tokens go by protocol entry, query or first frame", async () => {
  const token = "h." + btoa(JSON.stringify({ sub: "a", exp: 2_000_000_000 })) + ".s";
  client({ token }).connect().catch(() => {});
  assert.deepEqual(latest().protocols, ["switchboard.v1", "auth." + token]);
  client({ token, tokenMethod: "query" }).connect().catch(() => {});
  assert.ok(latest().url.endsWith("?token=" + encodeURIComponent(token)));
  client({ token, tokenMethod: "frame" }).connect().catch(() => {});
  latest().readyState = 1;
  latest().onopen();
  assert.deepEqual(latest().sent[0], { type: "auth", token });
  assert.equal(tokenExpiry(token), 2_000_000_000_000);
  assert.equal(tokenExpiry("garbage"), undefined);
});

test("an authentication failure without getToken does not loop", async () => {
  const c = client({ token: "bad" });
  const connected = c.connect();
  latest().push({ type: "error", error: "Invalid token", code: "unauthenticated" });
  latest().drop(4001);
  await assert.rejects(connected, /Invalid token/);
  await tick(20);
  assert.equal(FakeSocket.all.length, 1);
});

test("a gap in the same epoch is filled from history, in order, before live messages", async () => {
  const c = client();
  const connected = c.connect();
  autoReply(latest(), (f) =>
    f.type === "subscribe"
      ? { type: "subscribed", channel: f.channel, offset: 3, epoch: "e1" }
      : { type: "history", channel: f.channel, offset: 6, epoch: "e1",
          publications: [4, 5].map((o) => ({ type: "message", channel: f.channel, data: o, offset: o, epoch: "e1" })) });
  latest().accept();
  await connected;
  await c.subscribe("doc:1");
  const got = [];
  const failed = [];
  c.on("message", (m) => got.push(m.offset));
  c.on("recovery_failed", (e) => failed.push(e));
  latest().push({ type: "gap", channel: "doc:1", epoch: "e1", offset: 5 });
  latest().push({ type: "message", channel: "doc:1", data: 6, offset: 6, epoch: "e1" });
  await tick(10);
  assert.deepEqual(got, [4, 5, 6]);
  assert.deepEqual(failed, []);
  const asked = latest().sent.find((f) => f.type === "history");
  assert.deepEqual([asked.since, asked.limit], [3, 2]);
  c.close();
});

test("a gap into a new epoch, or a new epoch unannounced, is a failed recovery", async () => {
  const c = client();
  await connectSubscribed(c, "doc:1", "doc:2");
  const failed = [];
  const got = [];
  c.on("recovery_failed", (e) => failed.push(e));
  c.on("message", (m) => got.push([m.channel, m.offset]));
  latest().push({ type: "gap", channel: "doc:1", epoch: "e2", offset: 0 });
  latest().push({ type: "message", channel: "doc:1", data: 1, offset: 1, epoch: "e2" });
  latest().push({ type: "message", channel: "doc:2", data: 1, offset: 1, epoch: "e9" });
  await tick(10);
  assert.deepEqual(failed, [
    { channel: "doc:1", offset: 0, epoch: "e2" },
    { channel: "doc:2", offset: 0, epoch: "e9" },
  ]);
  assert.deepEqual(got, [["doc:1", 1], ["doc:2", 1]]);
  c.close();
});

test("a subscription refused for now is retried until accepted; one refused for good is dropped", async () => {
  const c = client();
  const failures = [];
  c.on("subscription_failed", (e) => failures.push([e.channel, e.code, e.retrying]));
  const connected = c.connect();
  let busy = 2;
  autoReply(latest(), (f) => {
    if (f.channel === "busy:1" && busy-- > 0) return { type: "error", code: "rate_limited", error: "Rate limit exceeded" };
    if (f.channel === "vault:1") return { type: "error", code: "forbidden", error: "Not allowed" };
    return { type: "subscribed", channel: f.channel, offset: 0, epoch: "e" };
  });
  latest().accept();
  await connected;
  const reply = await c.subscribe("busy:1");
  assert.equal(reply.type, "subscribed");
  await assert.rejects(c.subscribe("vault:1"), (err) => err.code === "forbidden");
  assert.deepEqual(failures, [["busy:1", "rate_limited", true], ["busy:1", "rate_limited", true], ["vault:1", "forbidden", false]]);
  assert.equal(c.channels.has("busy:1"), true);
  assert.equal(c.channels.has("vault:1"), false);
  c.close();
});

test("after a reconnect, hundreds of channels are re-subscribed a few at a time", async () => {
  const c = client();
  const connected = c.connect();
  autoReply(latest(), (f) => ({ type: "subscribed", channel: f.channel, offset: 0, epoch: "e" }));
  latest().accept();
  await connected;
  await Promise.all(Array.from({ length: 200 }, (_, i) => c.subscribe(`room:${i}`)));
  latest().drop();
  await tick(20);
  const second = latest();
  let inFlight = 0, most = 0;
  const send = second.send.bind(second);
  second.send = (text) => {
    send(text);
    const f = JSON.parse(text);
    if (f.type !== "subscribe") return;
    most = Math.max(most, ++inFlight);
    setTimeout(() => { inFlight--; second.push({ type: "subscribed", channel: f.channel, offset: 0, epoch: "e", recovered: true, id: f.id }); }, 1);
  };
  second.accept();
  await tick(200);
  assert.equal(second.sent.filter((f) => f.type === "subscribe").length, 200);
  assert.ok(most <= 32, `${most} re-subscriptions in flight at once`);
  c.close();
});

test("a subscription the server ends is not subscribed again after a reconnect", async () => {
  const c = client();
  const ended = [];
  c.on("unsubscribed", (f) => ended.push(f.channel));
  const connected = c.connect();
  autoReply(latest(), (f) => ({ type: "subscribed", channel: f.channel, offset: 0, epoch: "e1" }));
  latest().accept();
  await connected;
  await c.subscribe("chat:a");
  await c.subscribe("lobby:1");
  latest().push({ type: "unsubscribed", channel: "lobby:1", code: "forbidden", reason: "The refreshed token does not allow lobby:1" });
  latest().push({ type: "unsubscribed", channel: "chat:a" }); // no code: not the server's doing, nothing forgotten
  assert.deepEqual(ended, ["lobby:1", "chat:a"]);
  latest().drop();
  await tick(20);
  const second = latest();
  autoReply(second, (f) => ({ type: "subscribed", channel: f.channel, offset: 0, epoch: "e1" }));
  second.accept();
  await tick(10);
  assert.deepEqual(second.sent.filter((f) => f.type === "subscribe").map((f) => f.channel), ["chat:a"]);
  c.close();
});

test("a skip moves the offset on silently: live, in a history page and in a recovery backlog", async () => {
  const c = client();
  const connected = c.connect();
  const m = (channel, o) => ({ type: "message", channel, data: o, offset: o, epoch: "e1" });
  const skip = (channel, o) => ({ type: "skip", channel, offset: o, epoch: "e1" });
  autoReply(latest(), (f) =>
    f.type === "subscribe"
      ? { type: "subscribed", channel: f.channel, offset: 3, epoch: "e1" }
      : { type: "history", channel: f.channel, offset: 9, epoch: "e1", publications: [skip(f.channel, 7), m(f.channel, 8)] });
  latest().accept();
  await connected;
  await c.subscribe("doc:1");
  const got = [];
  const other = [];
  c.on("message", (msg) => got.push(msg.offset));
  c.on("recovery_failed", (e) => other.push(["recovery_failed", e]));
  c.on("skip", (e) => other.push(["skip", e]));
  latest().push(m("doc:1", 4));
  latest().push(skip("doc:1", 5));
  latest().push(m("doc:1", 6));
  assert.equal(latest().sent.filter((f) => f.type === "history").length, 0, "a skip is not a gap");
  // A gap filled from a page holding a skip.
  latest().push({ type: "gap", channel: "doc:1", epoch: "e1", offset: 8 });
  latest().push(m("doc:1", 9));
  await tick(10);
  assert.deepEqual(got, [4, 6, 8, 9]);
  assert.equal(c.channels.get("doc:1").offset, 9);

  // A recovery backlog with a skip in it.
  latest().drop();
  await tick(20);
  const second = latest();
  autoReply(second, (f) => ({ type: "subscribed", channel: f.channel, offset: 11, epoch: "e1", recovered: true }));
  second.accept();
  await tick(10);
  assert.deepEqual(second.sent.find((f) => f.type === "subscribe").recover, { offset: 9, epoch: "e1" });
  second.push(skip("doc:1", 10));
  second.push(m("doc:1", 11));
  second.push(m("doc:1", 12));
  await tick(10);
  assert.deepEqual(got, [4, 6, 8, 9, 11, 12]);
  assert.deepEqual(other, []);
  assert.equal(second.sent.filter((f) => f.type === "history").length, 0);
  c.close();
});

test("an unannounced offset jump on a live stream is filled from history before later messages", async () => {
  const c = client();
  const connected = c.connect();
  autoReply(latest(), (f) =>
    f.type === "subscribe"
      ? { type: "subscribed", channel: f.channel, offset: 3, epoch: "e1" }
      : { type: "history", channel: f.channel, offset: 7, epoch: "e1", publications: [
          { type: "message", channel: f.channel, data: 4, offset: 4, epoch: "e1" },
          { type: "skip", channel: f.channel, offset: 5, epoch: "e1" },
        ] });
  latest().accept();
  await connected;
  await c.subscribe("doc:1");
  const got = [];
  const failed = [];
  c.on("message", (m) => got.push(m.offset));
  c.on("recovery_failed", (e) => failed.push(e));
  latest().push({ type: "message", channel: "doc:1", data: 6, offset: 6, epoch: "e1" });
  latest().push({ type: "message", channel: "doc:1", data: 7, offset: 7, epoch: "e1" });
  await tick(10);
  assert.deepEqual(got, [4, 6, 7]);
  assert.deepEqual(failed, []);
  const asked = latest().sent.filter((f) => f.type === "history");
  assert.deepEqual(asked.map((f) => [f.since, f.limit]), [[3, 2]]);
  c.close();
});

test("an unannounced jump that history cannot fill is a failed recovery", async () => {
  const c = client();
  const connected = c.connect();
  autoReply(latest(), (f) =>
    f.type === "subscribe"
      ? { type: "subscribed", channel: f.channel, offset: 3, epoch: "e1" }
      : { type: "history", channel: f.channel, offset: 6, epoch: "e1", publications: [] });
  latest().accept();
  await connected;
  await c.subscribe("doc:1");
  const got = [];
  const failed = [];
  c.on("message", (m) => got.push(m.offset));
  c.on("recovery_failed", (e) => failed.push(e));
  latest().push({ type: "message", channel: "doc:1", data: 6, offset: 6, epoch: "e1" });
  await tick(10);
  assert.deepEqual(failed, [{ channel: "doc:1", offset: 5, epoch: "e1" }]);
  assert.deepEqual(got, [6]);
  c.close();
});

test("a subscribe reply sets the channel's place before the frames that follow it in the same tick", async () => {
  const c = client();
  await connectSubscribed(c, "doc:1");
  latest().drop();
  await tick(20);
  const second = latest();
  const send = second.send.bind(second);
  second.send = (text) => {
    send(text);
    const f = JSON.parse(text);
    if (f.type !== "subscribe") return;
    // Recovery refused (history too long to replay), and a live message right behind the reply.
    setTimeout(() => {
      second.push({ type: "subscribed", channel: f.channel, offset: 20, epoch: "e1", recovered: false, id: f.id });
      second.push({ type: "message", channel: f.channel, data: 21, offset: 21, epoch: "e1" });
    }, 0);
  };
  const got = [];
  const failed = [];
  c.on("message", (m) => got.push(m.offset));
  c.on("recovery_failed", (e) => failed.push(e.offset));
  second.accept();
  await tick(20);
  assert.deepEqual(got, [21]);
  assert.deepEqual(failed, [20]);
  assert.equal(second.sent.filter((f) => f.type === "history").length, 0, "no jump from 3 to 21");
  assert.equal(c.channels.get("doc:1").offset, 21);
  c.close();
});

test("a recovery answered with a gap right behind the reply is read from history page by page, live messages held back", async () => {
  const c = client();
  await connectSubscribed(c, "doc:1");
  latest().drop();
  await tick(20);
  const second = latest();
  const send = second.send.bind(second);
  const msg = (o) => ({ type: "message", channel: "doc:1", data: o, offset: o, epoch: "e1" });
  second.send = (text) => {
    send(text);
    const f = JSON.parse(text);
    setTimeout(() => {
      if (f.type === "subscribe") {
        // A backlog too big to replay: recovered, a gap up to the channel's offset, then a live one, in one tick.
        second.push({ type: "subscribed", channel: f.channel, offset: 10, epoch: "e1", recovered: true, id: f.id });
        second.push({ type: "gap", channel: f.channel, epoch: "e1", offset: 10 });
        second.push(msg(11));
      } else if (f.type === "history") {
        // Pages bounded by bytes: fewer than asked for, with more:true.
        const page = { 3: [4, 5], 5: [6, 7, 8], 8: [9, 10] }[f.since];
        second.push({ type: "history", channel: f.channel, offset: 11, epoch: "e1", more: f.since !== 8, publications: page.map(msg), id: f.id });
        if (f.since === 5) second.push(msg(12));
      }
    }, 0);
  };
  const got = [];
  const failed = [];
  c.on("message", (m) => got.push(m.offset));
  c.on("recovery_failed", (e) => failed.push(e));
  second.accept();
  await tick(30);
  c.close();
  assert.deepEqual(got, [4, 5, 6, 7, 8, 9, 10, 11, 12]);
  assert.deepEqual(failed, []);
  assert.deepEqual(second.sent.find((f) => f.type === "subscribe").recover, { offset: 3, epoch: "e1" });
  assert.deepEqual(second.sent.filter((f) => f.type === "history").map((f) => [f.since, f.limit]), [[3, 7], [5, 5], [8, 2]]);
});

test("joins and leaves that came together are handed on one by one, in order", async () => {
  const c = client();
  const events = [];
  c.on("join", (e) => events.push("join " + e.user));
  c.on("leave", (e) => events.push("leave " + e.user));
  c.on("presence_batch", () => events.push("a batch leaked through"));
  const connected = c.connect();
  latest().accept();
  await connected;
  latest().push({ type: "join", channel: "lobby", user: "a" });
  latest().push({
    type: "presence_batch",
    channel: "lobby",
    events: [
      { type: "join", channel: "lobby", user: "b", info: { name: "B" } },
      { type: "leave", channel: "lobby", user: "a" },
      { type: "join", channel: "lobby", user: "c" },
    ],
  });
  assert.deepEqual(events, ["join a", "join b", "leave a", "join c"]);
  c.close();
});

test("a catch-up cut short by a dropped connection is resumed by the re-subscription, not reported as lost", async () => {
  const c = client();
  const connected = c.connect();
  const first = latest();
  const send = first.send.bind(first);
  first.send = (text) => {
    send(text);
    const f = JSON.parse(text);
    // Subscribes are answered; history requests never are.
    if (f.type === "subscribe") setTimeout(() => first.push({ type: "subscribed", channel: f.channel, offset: 3, epoch: "e1", id: f.id }), 0);
  };
  first.accept();
  await connected;
  await c.subscribe("doc:1");
  const got = [];
  const failed = [];
  c.on("message", (m) => got.push(m.offset));
  c.on("recovery_failed", (e) => failed.push(e));
  // A gap: the client asks history, holding back live messages.
  latest().push({ type: "gap", channel: "doc:1", epoch: "e1", offset: 9 });
  latest().push({ type: "message", channel: "doc:1", data: 10, offset: 10, epoch: "e1" });
  await tick(5);
  assert.equal(latest().sent.filter((f) => f.type === "history").length, 1);
  latest().drop();
  await tick(20);
  const second = latest();
  autoReply(second, (f) => ({ type: "subscribed", channel: f.channel, offset: 10, epoch: "e1", recovered: true }));
  second.accept();
  await tick(20);
  const resubscribe = second.sent.find((f) => f.type === "subscribe");
  assert.deepEqual(resubscribe.recover, { offset: 3, epoch: "e1" }, "recovers from the last message handed on");
  assert.deepEqual(failed, [], "no recovery_failed for a catch-up the reconnect resumes");
  assert.deepEqual(got, [], "the held-back live message waits for the recovery");
  c.close();
});
