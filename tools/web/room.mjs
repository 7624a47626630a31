// A split-inference room of browser tabs and native peers: the signaling server, native
// `peer` processes and tabs of the web example in headless Chromium, all talking over WebRTC.
// Run it inside a network namespace with an interface besides loopback (tools/web.sh room
// makes one); it reaches only 127.0.0.1 and that namespace's own address.
//
//   node tools/web/room.mjs --site DIR --bin DIR [--asker native|browser]
//        [--browser-servers 1] [--native-servers 1] [--rounds 2] [--plan PLAN]
//        [--close-tab-after-requests N] [--wrong-key-tab] [--timeout-s 240] [--tls DIR]
//
// Every event of every player goes to stderr as a JSON line ({"player": ..., ...}); the last
// line on stdout is the room's result: {"room","requests","matches_single_peer","lost",
// "browser_peers","native_peers","stages_run":{"browser","native"},"median_ms","p95_ms",
// "browser_adapter"} (and
// "lost_declared_ms" when a tab was closed mid-run; with --wrong-key-tab, an extra tab holding
// the wrong room key: "wrong_key_tab": {"refused": frames or handshakes it refused,
// "trusted_peers": peers it came to trust}). browser_peers and native_peers count the players
// that ran at least one stage of the asker's requests, in a tab or natively, as the
// asker's records of who ran each stage say (a server tab says its id when it joins);
// stages_run counts those stages. Exits 1 if the asker gave
// no summary.
import { spawn } from "node:child_process";
import readline from "node:readline";
import fs from "node:fs";
import { serveSite, launchChromium, openTab, spkiHash } from "./chromium.mjs";

const args = process.argv.slice(2);
const o = { tls: null, site: null, bin: null, asker: "native", browserServers: 1, nativeServers: 1, rounds: 2, plan: "plans/fashion_3_int8.plan.ron", closeAfter: null, wrongKeyTab: false, timeoutS: 240 };
for (let i = 0; i < args.length; i += 2) {
  const v = args[i + 1];
  switch (args[i]) {
    case "--wrong-key-tab": o.wrongKeyTab = true; i--; break;
    case "--site": o.site = v; break;
    case "--bin": o.bin = v; break;
    // --coordinator, --browser-workers and --native-workers are the names they had before.
    case "--asker": case "--coordinator": o.asker = v; break;
    case "--browser-servers": case "--browser-workers": o.browserServers = Number(v); break;
    case "--native-servers": case "--native-workers": o.nativeServers = Number(v); break;
    case "--rounds": o.rounds = Number(v); break;
    case "--plan": o.plan = v; break;
    case "--close-tab-after-requests": o.closeAfter = Number(v); break;
    case "--timeout-s": o.timeoutS = Number(v); break;
    // A folder with cert.pem and key.pem: the signalling server serves wss:// with them, the
    // native players trust that certificate, and Chromium trusts its key.
    case "--tls": o.tls = v; break;
    default: console.error(`unknown argument ${args[i]}`); process.exit(2);
  }
}
if (!o.site || !o.bin || !["native", "browser"].includes(o.asker)) {
  console.error("usage: room.mjs --site DIR --bin DIR [--asker native|browser] ...");
  process.exit(2);
}
if (o.closeAfter !== null && o.browserServers === 0) {
  console.error("--close-tab-after-requests needs a browser server");
  process.exit(2);
}

// Native peers pause 2 ms between frames: every player here shares the machine's cores, and
// Chromium's software WebGPU (SwiftShader) needs them.
const FRAME_SLEEP_US = "2000";
const log = (player, event) => process.stderr.write(JSON.stringify({ player, ...event }) + "\n");
const room = `${o.tls ? "wss" : "ws"}://127.0.0.1:3536/web-room-${process.pid}`;
// Native players trust the test's certificate for a wss:// room.
const trust = o.tls ? ["--signaling-root", `${o.tls}/cert.pem`] : [];
const key = "web-room-key";
const servers = o.browserServers + o.nativeServers;
const children = [];
let summary = null;
let adapter = null;
let requestsSeen = 0;
// Who ran each of the asker's stages, the players it trusted, and the ids of the server tabs.
const ranStages = new Map();
const trusted = new Set();
const tabIds = new Set();
let closedAt = null;
let lostDeclaredMs = null;
let finish;
const finished = new Promise((resolve) => { finish = resolve; });
const serverTabs = [];

function native(name, extra) {
  const child = spawn(`${o.bin}/${name}`, extra, { stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  return child;
}

/// What every asker event means to the room: progress, the tab to close, the summary.
function onAskerEvent(player, event) {
  log(player, event);
  if (event.event === "peer_trusted") trusted.add(event.peer);
  if (event.event === "request") {
    for (const stage of event.executors ?? (event.stages ?? []).map((s) => s.executor)) {
      ranStages.set(stage, (ranStages.get(stage) ?? 0) + 1);
    }
    requestsSeen++;
    if (o.closeAfter !== null && requestsSeen === o.closeAfter && closedAt === null) {
      closedAt = Date.now();
      log("room", { event: "closing_tab", tab: "server0" });
      serverTabs[0].close().catch(() => {});
    }
  }
  if (event.event === "peer_lost" && closedAt !== null && lostDeclaredMs === null) {
    lostDeclaredMs = Date.now() - closedAt;
  }
  if (event.event === "summary") {
    summary = event;
    finish();
  }
}

const signaling = native("signaling", ["--port", "3536", ...(o.tls ? ["--cert", `${o.tls}/cert.pem`, "--key", `${o.tls}/key.pem`] : [])]);
signaling.stdout.resume();
signaling.stderr.resume();
await new Promise((resolve) => setTimeout(resolve, 500));
const server = await serveSite(o.site, 0);
const port = server.address().port;
const browser = await launchChromium({ trustedKeys: o.tls ? [spkiHash(fs.readFileSync(`${o.tls}/cert.pem`))] : [] });
const page = (query, roomKey = key) => `http://127.0.0.1:${port}/index.html?room=${encodeURIComponent(room)}&key=${roomKey}&plan=${encodeURIComponent(o.plan)}&${query}`;
const onAdapter = (event) => { if (event.event === "adapter" && adapter === null) adapter = event.browser_adapter; };

for (let i = 0; i < o.nativeServers; i++) {
  const child = native("peer", ["--role", "server", "--room", room, "--key", key, "--plan", o.plan, "--lifetime-s", String(o.timeoutS), "--frame-sleep-us", FRAME_SLEEP_US, ...trust]);
  readline.createInterface({ input: child.stdout }).on("line", (line) => log(`native-server${i}`, { line }));
  child.stderr.resume();
}
for (let i = 0; i < o.browserServers; i++) {
  serverTabs.push(await openTab(browser, page("role=server"), (event) => {
    onAdapter(event);
    if (event.event === "joined") tabIds.add(event.id);
    log(`server${i}`, event);
  }));
}
const wrongKey = { refused: 0, trusted_peers: 0 };
if (o.wrongKeyTab) {
  await openTab(browser, page("role=server", "not-the-room-key"), (event) => {
    if (event.event === "handshake_failed" || event.event === "rejected") wrongKey.refused++;
    if (event.event === "peer_trusted") wrongKey.trusted_peers++;
    log("wrong-key-tab", event);
  });
}
if (o.asker === "native") {
  const child = native("peer", ["--role", "asker", "--room", room, "--key", key, "--plan", o.plan, "--servers", String(servers),
    "--rounds", String(o.rounds), "--stage-timeout-s", "10", "--lifetime-s", String(o.timeoutS), "--frame-sleep-us", FRAME_SLEEP_US, ...trust]);
  readline.createInterface({ input: child.stdout }).on("line", (line) => {
    let event;
    try { event = JSON.parse(line); } catch { event = { event: "output", line }; }
    onAskerEvent("native-asker", event);
  });
  child.stderr.resume();
  child.on("exit", () => finish());
} else {
  await openTab(browser, page(`role=asker&servers=${servers}&rounds=${o.rounds}&stage_timeout_s=10`), (event) => {
    onAdapter(event);
    onAskerEvent("asker", event);
  });
}

const timer = setTimeout(() => { log("room", { event: "timeout", seconds: o.timeoutS }); finish(); }, o.timeoutS * 1000);
await finished;
clearTimeout(timer);
// A fast run can end before the wrong-key tab has loaded its page; the servers are still in
// the room, so it is given up to a minute more to try them and be refused.
if (o.wrongKeyTab) {
  const deadline = Date.now() + 60_000;
  while (wrongKey.refused === 0 && wrongKey.trusted_peers === 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}
for (const child of children) child.kill("SIGTERM");
await browser.close();
server.close();
if (summary === null) {
  console.log(JSON.stringify({ error: "the asker gave no summary" }));
  process.exit(1);
}
// Where each player that ran a stage runs: the asker ("local") where it was started, the
// others in a tab if a server tab said that id.
const inBrowser = (executor) => executor === "local" ? o.asker === "browser" : tabIds.has(executor);
// A stage's player the asker did not trust is neither (and the tests expect none).
const players = { browser: 0, native: 0, unknown: 0 };
const stagesRun = { browser: 0, native: 0, unknown: 0 };
for (const [executor, count] of ranStages) {
  const where = inBrowser(executor) ? "browser" : executor === "local" || trusted.has(executor) ? "native" : "unknown";
  players[where]++;
  stagesRun[where] += count;
}
const result = {
  room,
  requests: summary.requests,
  matches_single_peer: summary.matches_single_peer,
  lost: summary.lost,
  browser_peers: players.browser,
  native_peers: players.native,
  stages_run: stagesRun,
  median_ms: summary.median_ms,
  p95_ms: summary.p95_ms,
  browser_adapter: adapter,
};
if (closedAt !== null) result.lost_declared_ms = lostDeclaredMs;
if (o.wrongKeyTab) result.wrong_key_tab = wrongKey;
console.log(JSON.stringify(result));
process.exit(0);
