// Serves the web example's site on 127.0.0.1 and opens pages of it in headless Chromium
// (Debian's /usr/bin/chromium through playwright-core; WebGPU on SwiftShader). Prints every
// JSON line a page writes to its console, with the tab's index added, as one JSON line on
// stdout; other console text and page errors become {"tab":i,"event":"console"|"page_error"}.
//
//   node tools/web/drive.mjs --site DIR [--port 8088] [--timeout-s 300] [--screenshot FILE]
//        [--close-after-s TAB:SECONDS ...] --page 'QUERY' [--page 'QUERY' ...]
//
// Exits when every page has logged {"event":"done"} (0), or at the timeout (1). A tab named in
// --close-after-s is closed that many seconds after it started (a player leaving mid-run).
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

const args = process.argv.slice(2);
const options = { site: null, port: 8088, timeoutS: 300, screenshot: null, pages: [], closeAfter: new Map(), viewport: null };
for (let i = 0; i < args.length; i++) {
  const value = args[i + 1];
  switch (args[i]) {
    case "--site": options.site = value; i++; break;
    case "--port": options.port = Number(value); i++; break;
    case "--timeout-s": options.timeoutS = Number(value); i++; break;
    case "--screenshot": options.screenshot = value; i++; break;
    case "--page": options.pages.push(value); i++; break;
    case "--close-after-s": { const [tab, s] = value.split(":"); options.closeAfter.set(Number(tab), Number(s)); i++; break; }
    default: console.error(`unknown argument ${args[i]}`); process.exit(2);
  }
}
if (!options.site || options.pages.length === 0) {
  console.error("usage: drive.mjs --site DIR --page QUERY [--page QUERY ...]");
  process.exit(2);
}

const types = { ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm", ".json": "application/json", ".png": "image/png" };
const server = http.createServer((request, response) => {
  const url = new URL(request.url, "http://127.0.0.1");
  const file = path.join(options.site, decodeURIComponent(url.pathname === "/" ? "/index.html" : url.pathname));
  if (!path.resolve(file).startsWith(path.resolve(options.site))) {
    response.writeHead(403).end();
    return;
  }
  fs.readFile(file, (error, data) => {
    if (error) {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { "content-type": types[path.extname(file)] || "application/octet-stream", "cache-control": "no-store" });
    response.end(data);
  });
});
await new Promise((resolve) => server.listen(options.port, "127.0.0.1", resolve));

const emit = (object) => process.stdout.write(JSON.stringify(object) + "\n");
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox",
    "--enable-unsafe-webgpu",
    "--use-webgpu-adapter=swiftshader",
    "--enable-webgpu-developer-features",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
  ],
});

let done = 0;
let finished;
const allDone = new Promise((resolve) => { finished = resolve; });
const pages = [];
for (const [tab, query] of options.pages.entries()) {
  const context = await browser.newContext({ viewport: { width: 960, height: 600 } });
  const page = await context.newPage();
  pages.push(page);
  page.on("console", (message) => {
    const text = message.text();
    let event = null;
    if (text.startsWith("{")) {
      try { event = JSON.parse(text); } catch { event = null; }
    }
    if (event && typeof event === "object") {
      emit({ tab, ...event });
      if (event.event === "done" && ++done === options.pages.length) finished();
    } else {
      emit({ tab, event: "console", level: message.type(), text });
    }
  });
  page.on("pageerror", (error) => emit({ tab, event: "page_error", error: String(error) }));
  page.on("crash", () => emit({ tab, event: "page_error", error: "the page crashed" }));
  await page.goto(`http://127.0.0.1:${options.port}/index.html${query.startsWith("?") ? query : "?" + query}`);
  if (options.closeAfter.has(tab)) {
    setTimeout(async () => {
      emit({ tab, event: "closed" });
      await page.close();
      if (++done === options.pages.length) finished();
    }, options.closeAfter.get(tab) * 1000);
  }
}

const timer = setTimeout(() => { emit({ event: "timeout", seconds: options.timeoutS }); finished("timeout"); }, options.timeoutS * 1000);
const outcome = await allDone;
clearTimeout(timer);
if (options.screenshot && !pages[0].isClosed()) {
  await pages[0].screenshot({ path: options.screenshot });
}
await browser.close();
server.close();
process.exit(outcome === "timeout" ? 1 : 0);
