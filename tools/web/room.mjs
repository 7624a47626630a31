// A split-inference room of browser tabs and native peers: the signaling server, native
// `peer` processes and tabs of the web example in headless Chromium, all talking over WebRTC.
// Run it inside a network namespace with an interface besides loopback (tools/web.sh room
// makes one); it reaches only 127.0.0.1 and that namespace's own address.
//
//   node tools/web/room.mjs --site DIR --bin DIR [--coordinator native|browser]
//        [--browser-workers 1] [--native-workers 1] [--rounds 2] [--plan PLAN]
//        [--close-tab-after-requests N] [--wrong-key-tab] [--timeout-s 240]
//
// Every event of every player goes to stderr as a JSON line ({"player": ..., ...}); the last
// line on stdout is the room's result: {"requests","matches_single_peer","lost",
// "browser_peers","native_peers","stages_run":{"browser","native"},"median_ms","p95_ms",
// "browser_adapter"} (and
// "lost_declared_ms" when a tab was closed mid-run; with --wrong-key-tab, an extra tab holding
// the wrong room key: "wrong_key_tab": {"refused": frames or handshakes it refused,
// "trusted_peers": peers it came to trust}). browser_peers and native_peers count the players
// that ran at least one stage of the coordinator's requests, in a tab or natively, as the
// coordinator's records of who ran each stage say (a worker tab says its id when it joins);
// stages_run counts those stages. Exits 1 if the coordinator gave
// no summary.
import { spawn } from "node:child_process";
import readline from "node:readline";
import { serveSite, launchChromium, openTab } from "./chromium.mjs";

const args = process.argv.slice(2);
const o = { site: null, bin: null, coordinator: "native", browserWorkers: 1, nativeWorkers: 1, rounds: 2, plan: "plans/fashion_3_int8.plan.ron", closeAfter: null, wrongKeyTab: false, timeoutS: 240, port: 8088 };
for (let i = 0; i < args.length; i += 2) {
  const v = args[i + 1];
  switch (args[i]) {
    case "--wrong-key-tab": o.wrongKeyTab = true; i--; break;
    case "--site": o.site = v; break;
    case "--bin": o.bin = v; break;
    case "--coordinator": o.coordinator = v; break;
    case "--browser-workers": o.browserWorkers = Number(v); break;
    case "--native-workers": o.nativeWorkers = Number(v); break;
    case "--rounds": o.rounds = Number(v); break;
    case "--plan": o.plan = v; break;
    case "--close-tab-after-requests": o.closeAfter = Number(v); break;
    case "--timeout-s": o.timeoutS = Number(v); break;
    default: console.error(`unknown argument ${args[i]}`); process.exit(2);
  }
}
if (!o.site || !o.bin || !["native", "browser"].includes(o.coordinator)) {
  console.error("usage: room.mjs --site DIR --bin DIR [--coordinator native|browser] ...");
  process.exit(2);
}
if (o.closeAfter !== null && o.browserWorkers === 0) {
  console.error("--close-tab-after-requests needs a browser worker");
  process.exit(2);
}

// Native peers pause 2 ms between frames: every player here shares the machine's cores, and
// Chromium's software WebGPU (SwiftShader) needs them.
const FRAME_SLEEP_US = "2000";
const log = (player, event) => process.stderr.write(JSON.stringify({ player, ...event }) + "\n");
const room = `ws://127.0.0.1:3536/web-room-${process.pid}`;
const key = "web-room-key";
const workers = o.browserWorkers + o.nativeWorkers;
const children = [];
let summary = null;
let adapter = null;
let requestsSeen = 0;
// Who ran each of the coordinator's stages, and the ids of the worker tabs.
const ranStages = new Map();
const tabIds = new Set();
let closedAt = null;
let lostDeclaredMs = null;
let finish;
const finished = new Promise((resolve) => { finish = resolve; });
const workerTabs = [];

function native(name, extra) {
  const child = spawn(`${o.bin}/${name}`, extra, { stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  return child;
}

/// What every coordinator event means to the room: progress, the tab to close, the summary.
function onCoordinatorEvent(player, event) {
  log(player, event);
  if (event.event === "request") {
    for (const stage of event.executors ?? (event.stages ?? []).map((s) => s.executor)) {
      ranStages.set(stage, (ranStages.get(stage) ?? 0) + 1);
    }
    requestsSeen++;
    if (o.closeAfter !== null && requestsSeen === o.closeAfter && closedAt === null) {
      closedAt = Date.now();
      log("room", { event: "closing_tab", tab: "worker0" });
      workerTabs[0].close().catch(() => {});
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

const signaling = native("signaling", ["--port", "3536"]);
signaling.stdout.resume();
signaling.stderr.resume();
await new Promise((resolve) => setTimeout(resolve, 500));
const server = await serveSite(o.site, o.port);
const browser = await launchChromium();
const page = (query, roomKey = key) => `http://127.0.0.1:${o.port}/index.html?room=${encodeURIComponent(room)}&key=${roomKey}&plan=${encodeURIComponent(o.plan)}&${query}`;
const onAdapter = (event) => { if (event.event === "adapter" && adapter === null) adapter = event.browser_adapter; };

for (let i = 0; i < o.nativeWorkers; i++) {
  const child = native("peer", ["--role", "worker", "--room", room, "--key", key, "--plan", o.plan, "--lifetime-s", String(o.timeoutS), "--frame-sleep-us", FRAME_SLEEP_US]);
  readline.createInterface({ input: child.stdout }).on("line", (line) => log(`native-worker${i}`, { line }));
  child.stderr.resume();
}
for (let i = 0; i < o.browserWorkers; i++) {
  workerTabs.push(await openTab(browser, page("role=worker"), (event) => {
    onAdapter(event);
    if (event.event === "joined") tabIds.add(event.id);
    log(`worker${i}`, event);
  }));
}
const wrongKey = { refused: 0, trusted_peers: 0 };
if (o.wrongKeyTab) {
  await openTab(browser, page("role=worker", "not-the-room-key"), (event) => {
    if (event.event === "handshake_failed" || event.event === "rejected") wrongKey.refused++;
    if (event.event === "peer_trusted") wrongKey.trusted_peers++;
    log("wrong-key-tab", event);
  });
}
if (o.coordinator === "native") {
  const child = native("peer", ["--role", "coordinator", "--room", room, "--key", key, "--plan", o.plan, "--workers", String(workers),
    "--rounds", String(o.rounds), "--stage-timeout-s", "10", "--lifetime-s", String(o.timeoutS), "--frame-sleep-us", FRAME_SLEEP_US]);
  readline.createInterface({ input: child.stdout }).on("line", (line) => {
    let event;
    try { event = JSON.parse(line); } catch { event = { event: "output", line }; }
    onCoordinatorEvent("native-coordinator", event);
  });
  child.stderr.resume();
  child.on("exit", () => finish());
} else {
  await openTab(browser, page(`role=coordinator&workers=${workers}&rounds=${o.rounds}&stage_timeout_s=10`), (event) => {
    onAdapter(event);
    onCoordinatorEvent("coordinator", event);
  });
}

const timer = setTimeout(() => { log("room", { event: "timeout", seconds: o.timeoutS }); finish(); }, o.timeoutS * 1000);
await finished;
clearTimeout(timer);
// A fast run can end before the wrong-key tab has loaded its page; the workers are still in
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
  console.log(JSON.stringify({ error: "the coordinator gave no summary" }));
  process.exit(1);
}
// Where each player that ran a stage runs: the coordinator ("local") where it was started, the
// others in a tab if a worker tab said that id.
const inBrowser = (executor) => executor === "local" ? o.coordinator === "browser" : tabIds.has(executor);
const players = { browser: 0, native: 0 };
const stagesRun = { browser: 0, native: 0 };
for (const [executor, count] of ranStages) {
  const where = inBrowser(executor) ? "browser" : "native";
  players[where]++;
  stagesRun[where] += count;
}
const result = {
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
