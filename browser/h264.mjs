// H.264 end to end in headless Chromium: one page publishes its camera as
// H.264 simulcast (setCodecPreferences on the camera transceiver,
// window.piazza.setSendCodec), another page (VP8 camera, receive slots
// offering VP8 then H.264) decodes it.
//
//   node h264.mjs --base http://127.0.0.1:PORT [--out DIR] [--chromium PATH]
//
// Started by engine/tests/server_browser.rs (which starts the server);
// browser/ci.sh runs it. Checks: the publisher encodes H.264 on at least
// two simulcast layers (outbound-rtp rid and codec); the subscriber's
// inbound-rtp for the publisher's slot has codec video/H264 and
// framesDecoded grows, also after the subscriber caps the slot to the
// lowest layer's height and lifts the cap again (two layer switches, which
// the engine makes only on H.264 keyframes); the publisher decodes the
// subscriber's VP8 at the same time. Every wait is bounded.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

import { harness, sleep } from './common.mjs';

const RUN_LIMIT_MS = 180_000;

const { values: opts } = parseArgs({
  options: {
    base: { type: 'string' },
    out: { type: 'string', default: 'h264-out' },
    chromium: { type: 'string', default: process.env.PIAZZA_CHROMIUM || '/usr/bin/chromium' },
    // The publisher's codec (vp8 runs the same scenario as a reference).
    codec: { type: 'string', default: process.env.PIAZZA_H264_CODEC || 'h264' },
  },
});
if (!opts.base) {
  console.error('usage: node h264.mjs --base http://127.0.0.1:PORT [--out DIR]');
  process.exit(2);
}
mkdirSync(opts.out, { recursive: true });

const CODEC = opts.codec === 'vp8' ? 'video/VP8' : 'video/H264';
const { log, pageErrors, check, until, openPage, inChromium, run } = harness('h264', RUN_LIMIT_MS);

const phase = (page) => page.evaluate(() => window.piazza.state.phase);
const inbound = (page) => page.evaluate(() => window.piazza.inbound());
const outbound = (page) => page.evaluate(() => window.piazza.outbound());

async function joinAs(page, label, name) {
  await page.fill('#name', name);
  await page.click('#join');
  await until(`${label} joined`, async () => (await phase(page)) === 'joined');
  const me = await page.evaluate(() => window.piazza.state.me);
  log(`${label} joined as ${me}`);
  return me;
}

/** The inbound video of `id`'s camera on `page`, or undefined. */
async function cameraOf(page, id) {
  return (await inbound(page)).find((s) => s.kind === 'video' && s.participant === id && s.source === 'camera');
}

async function scenario(browser) {
  const capabilities = await (await openPage(browser, 'probe', 'about:blank')).evaluate(() =>
    RTCRtpSender.getCapabilities('video').codecs.map((c) => `${c.mimeType} ${c.sdpFmtpLine || ''}`));
  const h264 = capabilities.filter((c) => /H264/i.test(c));
  log(`chromium sends: ${JSON.stringify(h264)}`);
  check(h264.some((c) => /packetization-mode=1/.test(c) && /profile-level-id=42e01f/.test(c)), 'chromium can encode H.264 constrained baseline, packetization-mode 1');

  // 1. Ann creates a room and joins publishing H.264.
  const ann = await openPage(browser, 'ann', `${opts.base}/`);
  await ann.fill('#create-name', 'H.264');
  await ann.click('#create');
  await ann.waitForURL(/\/r\/[A-Za-z0-9]+$/, { timeout: 10_000 });
  await ann.evaluate((c) => window.piazza.setSendCodec(c), opts.codec);
  const annId = await joinAs(ann, 'ann', 'Ann');
  const invite = await until('the owner page shows the invite link', () =>
    ann.evaluate(() => document.getElementById('invite-url').value));

  // 2. Bob joins with the default VP8 camera.
  const bob = await openPage(browser, 'bob', invite);
  const bobId = await joinAs(bob, 'bob', 'Bob');

  // 3. Ann encodes H.264 simulcast.
  const layers = await until('ann encodes H.264 on two or more simulcast layers', async () => {
    const out = (await outbound(ann)).filter((s) => s.kind === 'video' && s.rid && s.framesEncoded > 0);
    return out.length >= 2 && out.every((s) => s.codec === CODEC) ? out : null;
  }, 30_000);
  check(true, `ann encodes ${layers.map((s) => `${s.rid} ${s.frameWidth}x${s.frameHeight} ${s.codec}`).join(', ')}`);
  const lowest = Math.min(...layers.map((s) => s.frameHeight));
  const highest = Math.max(...layers.map((s) => s.frameHeight));

  // 4. Bob decodes Ann's H.264, and the engine moves him up from the lowest layer.
  const first = await until('bob receives ann as H.264', async () => {
    const v = await cameraOf(bob, annId);
    return v && v.codec && v.framesDecoded > 0 ? v : null;
  }, 30_000);
  check(first.codec === CODEC, `bob's slot ${first.mid} for ann carries ${first.codec}`);
  const later = await until('bob decodes more of ann', async () => {
    await sleep(1000);
    const v = await cameraOf(bob, annId);
    return v && v.mid === first.mid && v.framesDecoded > first.framesDecoded + 10 ? v : null;
  }, 20_000);
  check(later.codec === CODEC, `bob decodes ann's ${CODEC}: ${first.framesDecoded} -> ${later.framesDecoded} frames, ${later.frameWidth}x${later.frameHeight}`);
  // Bob caps the slot at the lowest layer's height, then lifts the cap:
  // the engine moves the slot down and up a layer, each on an H.264
  // keyframe, and Bob decodes through both switches.
  await bob.evaluate(([mid, h]) => window.piazza.setMaxHeight(mid, h), [first.mid, lowest]);
  const down = await until(`bob shows ann at the lowest layer (${lowest} rows)`, async () => {
    const v = await cameraOf(bob, annId);
    return v && v.mid === first.mid && v.frameHeight === lowest ? v : null;
  }, 30_000);
  const downLater = await until('bob keeps decoding ann capped', async () => {
    const v = await cameraOf(bob, annId);
    return v && v.frameHeight === lowest && v.framesDecoded > down.framesDecoded + 10 ? v : null;
  }, 20_000);
  check(downLater.codec === CODEC && downLater.framesDecoded > down.framesDecoded, `capped: bob decodes ann at ${downLater.frameWidth}x${downLater.frameHeight} (${down.framesDecoded} -> ${downLater.framesDecoded} frames)`);
  await bob.evaluate((mid) => window.piazza.setMaxHeight(mid, null), first.mid);
  const up = await until(`bob shows ann above the lowest layer again (${highest} rows)`, async () => {
    const v = await cameraOf(bob, annId);
    return v && v.mid === first.mid && v.frameHeight === highest ? v : null;
  }, 30_000);
  const after = await until('bob keeps decoding ann uncapped', async () => {
    const v = await cameraOf(bob, annId);
    return v && v.frameHeight === highest && v.framesDecoded > up.framesDecoded + 10 ? v : null;
  }, 20_000);
  check(after.codec === CODEC && after.framesDecoded > up.framesDecoded, `cap lifted: bob decodes ann at ${after.frameWidth}x${after.frameHeight} (${up.framesDecoded} -> ${after.framesDecoded} frames)`);

  // 5. Ann decodes Bob's VP8 in the same room (mixed codecs).
  const fromBob = await until('ann decodes bob', async () => {
    const v = await cameraOf(ann, bobId);
    return v && v.framesDecoded > 10 ? v : null;
  }, 30_000).catch(async (e) => {
    const slots = await ann.evaluate(() => window.piazza.slotHistory);
    throw new Error(`${e.message}; ann inbound ${JSON.stringify(await inbound(ann))}; bob outbound ${JSON.stringify(await outbound(bob))}; ann slot messages ${JSON.stringify(slots)}`);
  });
  check(fromBob.codec === 'video/VP8', `ann decodes bob's ${fromBob.codec} (${fromBob.framesDecoded} frames)`);

  await bob.screenshot({ path: join(opts.out, 'h264-bob.png') });
  check(pageErrors.length === 0, `no uncaught page errors ${JSON.stringify(pageErrors)}`);
}

function main() {
  return inChromium(chromium, opts.chromium, opts.out, scenario);
}

await run(main);
