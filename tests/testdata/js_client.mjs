// Drives the JavaScript client (transport/web/switchboard.js) against a
// real broker for the Go system tests: node js_client.mjs URL USER CHANNEL...
// It subscribes to each channel, then prints one JSON line per thing the
// client hands the application ({"event":"message"|"recovery_failed"|...}),
// "ready" once subscribed, and closes the client when stdin ends.
//
// Each stdin line may be a command, as an application would act:
// {"op":"read_history","channel":C,"since":N} reads C's history page by
// page from N, as an application does after recovery_failed, printing a
// "history" line per publication and "history_done" with the page count.
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

async function readHistory({ channel, since = 0 }) {
  let pages = 0;
  for (let more = true; more; ) {
    const page = await sb.history(channel, { since });
    pages++;
    for (const m of page.publications) out("history", { payload: m });
    more = page.more === true;
    if (page.publications.length) since = page.publications[page.publications.length - 1].offset;
  }
  out("history_done", { payload: { channel, pages } });
}

for await (const line of createInterface({ input: process.stdin })) {
  let command;
  try {
    command = JSON.parse(line);
  } catch {
    continue;
  }
  if (command.op === "read_history") {
    await readHistory(command).catch((err) => out("command_failed", { error: String(err), payload: { code: err.code } }));
  }
}
sb.close();
