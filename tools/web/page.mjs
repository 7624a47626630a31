// Opens pages of the web example in headless Chromium and prints every event they log as one
// JSON line on stdout, with the tab's index added.
//
//   node tools/web/page.mjs --site DIR [--port PORT (default: a free one)] [--timeout-s 300] [--screenshot FILE]
//        [--without-webgpu] --page 'QUERY' [--page 'QUERY' ...]
//
// Exits 0 once every page has logged {"event":"done"}, 1 at the timeout. --screenshot saves
// the first tab's page then.
import { serveSite, launchChromium, openTab } from "./chromium.mjs";

const args = process.argv.slice(2);
const options = { site: null, port: 0, timeoutS: 300, screenshot: null, pages: [], webgpu: true };
for (let i = 0; i < args.length; i += 2) {
  const value = args[i + 1];
  switch (args[i]) {
    case "--without-webgpu": options.webgpu = false; i--; break;
    case "--site": options.site = value; break;
    case "--port": options.port = Number(value); break;
    case "--timeout-s": options.timeoutS = Number(value); break;
    case "--screenshot": options.screenshot = value; break;
    case "--page": options.pages.push(value.replace(/^\?/, "")); break;
    default: console.error(`unknown argument ${args[i]}`); process.exit(2);
  }
}
if (!options.site || options.pages.length === 0) {
  console.error("usage: page.mjs --site DIR --page QUERY [--page QUERY ...]");
  process.exit(2);
}

const emit = (object) => process.stdout.write(JSON.stringify(object) + "\n");
const server = await serveSite(options.site, options.port);
const port = server.address().port;
const browser = await launchChromium({ webgpu: options.webgpu });
let done = 0;
let finish;
const finished = new Promise((resolve) => { finish = resolve; });
const pages = [];
for (const [tab, query] of options.pages.entries()) {
  pages.push(await openTab(browser, `http://127.0.0.1:${port}/index.html?${query}`, (event) => {
    emit({ tab, ...event });
    if (event.event === "done" && ++done === options.pages.length) finish("done");
  }));
}
const timer = setTimeout(() => { emit({ event: "timeout", seconds: options.timeoutS }); finish("timeout"); }, options.timeoutS * 1000);
const outcome = await finished;
clearTimeout(timer);
if (options.screenshot) await pages[0].screenshot({ path: options.screenshot });
await browser.close();
server.close();
process.exit(outcome === "done" ? 0 : 1);
