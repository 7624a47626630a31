// Shared by the web example's drivers: a static server for the site on 127.0.0.1, Debian's
// Chromium launched headless through playwright-core (WebGPU on SwiftShader), and tabs whose
// console JSON lines come back as events.
import http from "node:http";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm", ".json": "application/json", ".png": "image/png" };

/// Serves `site` on 127.0.0.1:`port`; resolves to the server once it listens.
export async function serveSite(site, port) {
  const root = path.resolve(site);
  const server = http.createServer((request, response) => {
    const url = new URL(request.url, "http://127.0.0.1");
    const file = path.join(root, decodeURIComponent(url.pathname === "/" ? "/index.html" : url.pathname));
    if (!file.startsWith(root)) {
      response.writeHead(403).end();
      return;
    }
    fs.readFile(file, (error, data) => {
      if (error) {
        response.writeHead(404).end();
        return;
      }
      response.writeHead(200, { "content-type": TYPES[path.extname(file)] || "application/octet-stream", "cache-control": "no-store" });
      response.end(data);
    });
  });
  await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
  return server;
}

/// The base64 SHA-256 of a PEM certificate's public key, as Chromium's
/// `--ignore-certificate-errors-spki-list` takes it.
export function spkiHash(pem) {
  const spki = new crypto.X509Certificate(pem).publicKey.export({ type: "spki", format: "der" });
  return crypto.createHash("sha256").update(spki).digest("base64");
}

/// Headless Chromium with WebGPU on SwiftShader (or, with `webgpu: false`, without WebGPU, as
/// a browser that lacks it), trusting certificates with the public keys whose `spkiHash` is in
/// `trustedKeys` (a test's own). The flags turn off what would reach outside this machine and
/// what would slow background tabs down.
export function launchChromium({ webgpu = true, trustedKeys = [] } = {}) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      ...(webgpu ? ["--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader"] : ["--disable-blink-features=WebGPU"]),
      // Compositing through SwiftShader's Vulkan too: without these a WebGPU canvas loses its
      // device at the first frame ("A valid external Instance reference no longer exists").
      "--use-angle=swiftshader",
      "--use-vulkan=swiftshader",
      "--enable-features=Vulkan,UseSkiaRenderer",
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
      ...(trustedKeys.length ? [`--ignore-certificate-errors-spki-list=${trustedKeys.join(",")}`] : []),
    ],
  });
}

/// Opens `url` in a new tab of `browser`. Every console line that is a JSON object reaches
/// `onEvent` as that object; other console text and page errors as {event: "console" |
/// "page_error"}. Resolves to the page.
export async function openTab(browser, url, onEvent, viewport = { width: 960, height: 600 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.on("console", (message) => {
    const text = message.text();
    let event = null;
    if (text.startsWith("{")) {
      try { event = JSON.parse(text); } catch { event = null; }
    }
    onEvent(event && typeof event === "object" ? event : { event: "console", level: message.type(), text });
  });
  page.on("pageerror", (error) => onEvent({ event: "page_error", error: String(error) }));
  page.on("crash", () => onEvent({ event: "page_error", error: "the page crashed" }));
  await page.goto(url);
  return page;
}
