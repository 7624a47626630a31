// The browser benchmark: per-request time of this crate's web example (end to end, request
// spawned to PredictionReady) against ONNX Runtime Web's WebGPU and wasm providers (one
// thread) on the same model and input in the same headless Chromium, and a mixed room's
// latency. Not part of CI; results go to BENCHMARKS.md.
//
//   bash tools/web.sh build && (cd benches/web && npm install) && node benches/web/bench.mjs [--runs 12]
//
// The site is target/web-site (the web example) plus this page and ORT Web's files.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { serveSite, launchChromium, openTab } from "../../tools/web/chromium.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "../..");
const args = process.argv.slice(2);
const runs = Number(args[args.indexOf("--runs") + 1] || 12);
const target = process.env.CARGO_TARGET_DIR || path.join(repo, "target");
const site = path.join(target, "web-bench-site");
fs.rmSync(site, { recursive: true, force: true });
fs.mkdirSync(site, { recursive: true });
for (const entry of ["index.html", "pkg", "assets"]) fs.symlinkSync(path.join(target, "web-site", entry), path.join(site, entry));
fs.copyFileSync(path.join(here, "ort.html"), path.join(site, "ort.html"));
fs.symlinkSync(path.join(here, "node_modules/onnxruntime-web/dist"), path.join(site, "ort"));

const port = 8089;
const server = await serveSite(site, port);
const browser = await launchChromium();

/// Opens `page?query` and resolves to its events once it logs "done".
function run(page, query, timeoutS = 600) {
  return new Promise(async (resolve) => {
    const events = [];
    const timer = setTimeout(() => resolve(events), timeoutS * 1000);
    const tab = await openTab(browser, `http://127.0.0.1:${port}/${page}?${query}`, (event) => {
      events.push(event);
      if (event.event === "done") {
        clearTimeout(timer);
        tab.close().catch(() => {});
        resolve(events);
      }
    });
  });
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const models = [
  { name: "shipped (Fashion-MNIST MobileNetV2, 1x1x28x28)", model: "assets/models/fashion_mobilenetv2.onnx", asset: "models/fashion_mobilenetv2.onnx", input: "assets/fixtures/fashion_input.npy" },
  { name: "CIFAR-shaped MobileNetV2 (1x3x32x32)", model: "assets/models/mobilenetv2_cifar_synthetic.onnx", asset: "models/mobilenetv2_cifar_synthetic.onnx", input: "assets/fixtures/cifar_input.npy" },
];
const rows = [];
let adapter = null;
for (const m of models) {
  // Ours: the first two requests compile pipelines and upload weights; the rest are steady.
  const ours = await run("index.html", `model=${m.asset}&input=${m.input}&rows=1&requests=${runs + 2}`);
  adapter = adapter || ours.find((e) => e.event === "adapter")?.browser_adapter;
  const latencies = ours.filter((e) => e.event === "prediction").slice(2).map((e) => e.latency_ms);
  const row = { model: m.name, ours_ms: latencies.length ? median(latencies) : null };
  for (const ep of ["webgpu", "wasm"]) {
    const events = await run("ort.html", `model=${m.model}&input=${m.input}&rows=1&ep=${ep}&runs=${runs}`);
    const result = events.find((e) => e.event === "ort");
    row[`ort_${ep}_ms`] = result ? result.median_ms : null;
    if (!result) row[`ort_${ep}_error`] = events.find((e) => e.event === "page_error")?.error;
  }
  rows.push(row);
  process.stderr.write(JSON.stringify(row) + "\n");
}
await browser.close();
server.close();
console.log("| model | this crate (end to end) | ORT Web, WebGPU | ORT Web, wasm (1 thread) |");
console.log("|---|---|---|---|");
const ms = (v) => (v === null || v === undefined ? "failed" : `${v.toFixed(1)} ms`);
for (const r of rows) console.log(`| ${r.model} | ${ms(r.ours_ms)} | ${ms(r.ort_webgpu_ms)} | ${ms(r.ort_wasm_ms)} |`);
console.log(JSON.stringify({ adapter, runs, rows }));
