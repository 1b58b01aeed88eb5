// Drives the JavaScript client (transport/web/switchboard.js) against a
// real broker for the Go system tests: node js_client.mjs URL USER CHANNEL...
// It subscribes to each channel, then prints one JSON line per thing the
// client hands the application ({"event":"message"|"recovery_failed"|...}),
// "ready" once subscribed, and closes the client when stdin ends.
import { createInterface } from "node:readline";
import { Switchboard } from "../../transport/web/switchboard.js";

const [url, user, ...channels] = process.argv.slice(2);
const out = (event, payload = {}) => process.stdout.write(JSON.stringify({ event, ...payload }) + "\n");
if (typeof WebSocket !== "function") {
  out("fatal", { error: "this node has no WebSocket (run it with --experimental-websocket)" });
  process.exit(1);
}
const sb = new Switchboard(url, { user, backoffBase: 100, backoffCap: 500 });
for (const event of ["message", "recovery_failed", "subscription_failed", "disconnected", "reconnecting", "connected"]) {
  sb.on(event, (payload) => out(event, { payload }));
}
await sb.connect();
for (const channel of channels) await sb.subscribe(channel);
out("ready");

for await (const line of createInterface({ input: process.stdin })) void line; // until stdin ends
sb.close();
