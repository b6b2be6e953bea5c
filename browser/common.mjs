// What every headless-Chromium scenario of this directory shares: the
// browser's flags, a log with the time since start, bounded polling,
// counted checks, pages that report their errors, an overall time limit,
// and the "N passed, M failed" line the Rust harness
// (engine/tests/server_browser.rs) and browser/ci.sh read.

import { join } from 'node:path';

export const CHROME_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--auto-select-desktop-capture-source=Entire screen',
  '--allow-loopback-in-peer-connection',
  '--autoplay-policy=no-user-gesture-required',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  // Pages in background contexts must keep decoding.
  '--disable-background-timer-throttling',
  '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
];

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A scenario named `name` that gives up (exit 3) after `runLimitMs`;
 *  `waitMs` and `pollMs` are `until`'s default bound and polling interval. */
export function harness(name, runLimitMs, { waitMs = 20_000, pollMs = 250 } = {}) {
  const started = Date.now();
  const log = (msg) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);
  const abort = setTimeout(() => {
    console.error(`${name}: gave up after ${runLimitMs / 1000} s`);
    process.exit(3);
  }, runLimitMs);
  const pages = new Map(); // label -> page
  const pageErrors = [];
  let passed = 0;

  function check(cond, what) {
    if (!cond) throw new Error(`check failed: ${what}`);
    passed += 1;
    log(`ok - ${what}`);
  }

  /** Poll `fn` (in node) until it returns a truthy value or `ms` pass. */
  async function until(what, fn, ms = waitMs, every = pollMs) {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      const last = await fn();
      if (last) return last;
      await sleep(every);
    }
    throw new Error(`timed out after ${ms / 1000} s waiting for: ${what}`);
  }

  /** A page in its own context; `onResponse(label, response)` sees every HTTP response. */
  async function openPage(browser, label, url, onResponse) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
    const page = await context.newPage();
    page.on('pageerror', (e) => pageErrors.push(`${label}: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') log(`${label} console ${m.type()}: ${m.text()}`);
    });
    if (onResponse) page.on('response', (r) => onResponse(label, r));
    pages.set(label, page);
    await page.goto(url);
    return page;
  }

  /** Launch Chromium (playwright's `chromium`, at `executablePath`) with
   *  CHROME_ARGS and run `scenario(browser)`; on failure, screenshot every
   *  open page into `outDir` (then `onFailure(label, page)`, if given) and
   *  rethrow. The browser is closed either way. */
  async function inChromium(chromium, executablePath, outDir, scenario, onFailure) {
    const browser = await chromium.launch({ executablePath, headless: true, args: CHROME_ARGS });
    try {
      await scenario(browser);
    } catch (e) {
      for (const [label, page] of pages) {
        await page.screenshot({ path: join(outDir, `failure-${label}.png`) }).catch(() => {});
        if (onFailure) await onFailure(label, page);
      }
      throw e;
    } finally {
      await browser.close();
    }
  }

  /** Run `main`, print the verdict line, set the exit code. */
  async function run(main) {
    try {
      await main();
      log(`all checks passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
      console.log(`${name}: ${passed} passed, 0 failed`);
    } catch (e) {
      process.exitCode = 1;
      console.error(`${name}: FAILED: ${e.stack || e}`);
      console.log(`${name}: ${passed} passed, 1 failed`);
    } finally {
      clearTimeout(abort);
    }
  }

  return { log, pages, pageErrors, check, until, openPage, inChromium, run };
}
