// End-to-end test of the Piazza browser client in headless Chromium.
//
//   node e2e.mjs --base http://127.0.0.1:PORT [--out DIR] [--chromium PATH]
//
// Started by engine/tests/server_browser.rs (which starts the server);
// browser/ci.sh installs chromium and playwright-core and runs it. Every
// wait is bounded; the whole run aborts after RUN_LIMIT_MS. Exit code 0
// when every check passed; on failure, screenshots of every page are
// written to --out for diagnosis.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

import { harness, sleep } from './common.mjs';

const RUN_LIMIT_MS = 240_000;

const { values: opts } = parseArgs({
  options: {
    base: { type: 'string' },
    out: { type: 'string', default: 'e2e-out' },
    chromium: { type: 'string', default: process.env.PIAZZA_CHROMIUM || '/usr/bin/chromium' },
  },
});
if (!opts.base) {
  console.error('usage: node e2e.mjs --base http://127.0.0.1:PORT [--out DIR]');
  process.exit(2);
}
mkdirSync(opts.out, { recursive: true });

const { log, pageErrors, check, until, openPage: openPageWith, inChromium, run } = harness('e2e', RUN_LIMIT_MS);
const httpErrors = [];

/** A page whose HTTP errors are logged and, but for the locked room's 423, kept. */
function openPage(browser, label, url) {
  return openPageWith(browser, label, url, (label, r) => {
    if (r.status() < 400) return;
    const what = `${label} HTTP ${r.status()} ${r.request().method()} ${new URL(r.url()).pathname}`;
    log(what);
    // The only refusal the scenario provokes is the locked room's 423.
    if (r.status() !== 423) httpErrors.push(what);
  });
}

const st = (page) => page.evaluate(() => {
  const s = window.piazza.state;
  return { phase: s.phase, me: s.me, error: s.error, sharing: s.sharing, locked: s.locked, speaker: s.speaker, participants: [...s.participants.keys()] };
});
const inbound = (page) => page.evaluate(() => window.piazza.inbound());
const noticeText = (page) => page.evaluate(() => document.getElementById('notice').textContent);

async function joinAs(page, name) {
  await page.fill('#name', name);
  await page.click('#join');
}

async function joined(page, label) {
  await until(`${label} joined`, async () => (await st(page)).phase === 'joined');
  const me = (await st(page)).me;
  log(`${label} joined as ${me}`);
  return me;
}

/**
 * `page` decodes video from every participant in `from` (the given source)
 * and hears their audio: frames decode with a non-zero size, the video
 * element has a size, and decoded frames / audio samples keep growing
 * between two samples of the same receive slot. (The engine may move a
 * publisher to another slot; growth is judged per slot, so a move only
 * delays the verdict.)
 */
async function receives(page, label, from, { source = 'camera', audio = true, names = {} } = {}) {
  const who = (id) => names[id] || id;
  const videoOf = (stats, id) => stats.find((s) => s.kind === 'video' && s.participant === id && s.source === source);
  const audioOf = (stats, id) => stats.find((s) => s.kind === 'audio' && s.participant === id);
  const grew = (prev, cur, field) => prev && cur && prev.mid === cur.mid && cur[field] > prev[field];
  const pending = new Set(from.flatMap((id) => (audio ? [`v:${id}`, `a:${id}`] : [`v:${id}`])));
  let prev = await inbound(page);
  const end = Date.now() + 25_000;
  while (pending.size && Date.now() < end) {
    await sleep(750);
    const cur = await inbound(page);
    for (const id of from) {
      const [pv, cv] = [videoOf(prev, id), videoOf(cur, id)];
      if (pending.has(`v:${id}`) && grew(pv, cv, 'framesDecoded') && cv.frameWidth > 0 && cv.frameHeight > 0) {
        pending.delete(`v:${id}`);
        check(true, `${label} decodes ${who(id)}'s ${source} (slot ${cv.mid}: ${pv.framesDecoded} -> ${cv.framesDecoded} frames, ${cv.frameWidth}x${cv.frameHeight})`);
      }
      const [pa, ca] = [audioOf(prev, id), audioOf(cur, id)];
      if (pending.has(`a:${id}`) && grew(pa, ca, 'packetsReceived') && grew(pa, ca, 'totalSamplesReceived')) {
        pending.delete(`a:${id}`);
        check(true, `${label} hears ${who(id)} (slot ${ca.mid}: ${pa.totalSamplesReceived} -> ${ca.totalSamplesReceived} samples)`);
      }
    }
    prev = cur;
  }
  if (pending.size) {
    const history = await page.evaluate(() => window.piazza.slotHistory);
    throw new Error(`${label} does not receive ${[...pending].join(', ')} (${source}); inbound ${JSON.stringify(prev)}; slot messages ${JSON.stringify(history)}`);
  }
  if (source === 'camera') {
    const sizes = await page.evaluate(() => window.piazza.videoSizes());
    for (const id of from) {
      const tile = sizes.find((t) => t.participant === id && !t.hidden && t.width > 0);
      check(tile, `${label} shows ${who(id)} in a grid tile with videoWidth ${tile && tile.width}`);
    }
  }
}

function main() {
  return inChromium(chromium, opts.chromium, opts.out, scenario);
}

async function scenario(browser) {
  // 1. Ann creates a room on the home page and joins as its owner.
  const ann = await openPage(browser, 'ann', `${opts.base}/`);
  await ann.fill('#create-name', 'Browser e2e');
  await ann.click('#create');
  await ann.waitForURL(/\/r\/[A-Za-z0-9]+$/, { timeout: 10_000 });
  const room = new URL(ann.url()).pathname.split('/').pop();
  log(`room ${room} created from the home page`);
  await joinAs(ann, 'Ann');
  const annId = await joined(ann, 'ann');
  const invite = await until('the owner page shows the invite link', () =>
    ann.evaluate(() => document.getElementById('invite-url').value));
  check(invite.includes(`/r/${room}#t=`), 'the owner page carries an invite link');

  // 2. Bob and Cy join through the invite link.
  const bob = await openPage(browser, 'bob', invite);
  await joinAs(bob, 'Bob');
  const bobId = await joined(bob, 'bob');
  const cy = await openPage(browser, 'cy', invite);
  await joinAs(cy, 'Cy');
  const cyId = await joined(cy, 'cy');
  const names = { [annId]: 'Ann', [bobId]: 'Bob', [cyId]: 'Cy' };

  // 3. Everyone decodes and hears the two others.
  await receives(ann, 'ann', [bobId, cyId], { names });
  await receives(bob, 'bob', [annId, cyId], { names });
  await receives(cy, 'cy', [annId, bobId], { names });
  const labels = await ann.evaluate(() =>
    [...document.querySelectorAll('#grid .tile:not([hidden]) .label')].map((l) => l.textContent));
  check(labels.includes('Bob') && labels.includes('Cy') && labels.includes('You'), `ann's grid is labelled ${JSON.stringify(labels)}`);
  // Cy talks (a loud tone instead of the fake microphone's quiet beeps):
  // the others highlight her as the active speaker.
  await cy.evaluate(async () => {
    const ctx = new AudioContext();
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    gain.gain.value = 0.8;
    const dest = ctx.createMediaStreamDestination();
    osc.connect(gain).connect(dest);
    osc.start();
    window.piazzaTone = { ctx, osc };
    await window.piazza.replaceAudio(dest.stream.getAudioTracks()[0]);
  });
  for (const [label, page] of [['ann', ann], ['bob', bob]]) {
    await until(`${label} highlights Cy as the active speaker`, () => page.evaluate((id) => {
      const tile = document.querySelector(`#grid .tile[data-participant="${id}"][data-source="camera"]`);
      return window.piazza.state.speaker === id && tile && tile.classList.contains('speaking');
    }, cyId), 15_000);
    check(true, `${label} highlights Cy as the active speaker`);
  }
  await ann.screenshot({ path: join(opts.out, 'three-participants.png') });
  log(`screenshot: ${join(opts.out, 'three-participants.png')}`);

  // 4. Bob shares his screen; Ann and Cy decode it.
  await bob.click('#screen');
  let sharing = await until('bob shares', async () => (await st(bob)).sharing || (await noticeText(bob)).includes('did not start'), 10_000);
  if (!(await st(bob)).sharing) {
    // No capturable screen here: share a canvas instead, through the same replaceTrack path.
    log(`getDisplayMedia unavailable (${await noticeText(bob)}); sharing a canvas`);
    await bob.evaluate(async () => {
      const c = document.createElement('canvas');
      c.width = 1280;
      c.height = 720;
      const g = c.getContext('2d');
      let n = 0;
      setInterval(() => {
        g.fillStyle = `hsl(${(n += 7) % 360} 60% 40%)`;
        g.fillRect(0, 0, c.width, c.height);
        g.fillStyle = 'white';
        g.font = '64px sans-serif';
        g.fillText(`shared canvas ${n}`, 80, 360);
      }, 100);
      await window.piazza.shareTrack(c.captureStream(10).getVideoTracks()[0]);
    });
    sharing = true;
  }
  check(sharing, 'bob is sharing his screen');
  await receives(ann, 'ann', [bobId], { source: 'screen', audio: false, names });
  await receives(cy, 'cy', [bobId], { source: 'screen', audio: false, names });
  const screenTile = await ann.evaluate((id) => {
    const t = document.querySelector(`#grid .tile.screen[data-participant="${id}"]`);
    return t && !t.hidden ? t.querySelector('.label').textContent : null;
  }, bobId);
  check(screenTile === 'Bob — screen', `ann shows the share as "${screenTile}"`);
  await ann.screenshot({ path: join(opts.out, 'screen-share.png') });
  await bob.click('#screen');
  await until('bob stops sharing', async () => !(await st(bob)).sharing, 5_000);

  // 5. Ann locks the room: Dee's join is refused with 423 and her page says so.
  await ann.click('#lock');
  await until('the room is locked', async () => (await st(ann)).locked, 5_000);
  const dee = await openPage(browser, 'dee', invite);
  await joinAs(dee, 'Dee');
  const refused = await until('dee is refused', async () => {
    const s = await st(dee);
    return s.phase === 'refused' ? s : null;
  }, 15_000);
  check(refused.error && refused.error.status === 423 && refused.error.code === 'room_locked', `dee's join got ${refused.error && refused.error.status} ${refused.error && refused.error.code}`);
  const lockedNotice = await noticeText(dee);
  check(/locked/i.test(lockedNotice), `dee's page says: "${lockedNotice}"`);

  // 6. Ann unlocks; Dee joins; Ann removes her: Dee's page says so and she stops receiving.
  await ann.click('#lock');
  await until('the room is unlocked', async () => !(await st(ann)).locked, 5_000);
  await dee.click('#join');
  const deeId = await joined(dee, 'dee');
  const deeVideo = await until('dee receives video', async () =>
    (await inbound(dee)).find((s) => s.kind === 'video' && s.framesDecoded > 0), 20_000);
  check(deeVideo, `dee decodes video once admitted (${deeVideo.framesDecoded} frames)`);
  await until('ann lists dee', async () => (await st(ann)).participants.includes(deeId), 10_000);
  await ann.click(`#participant-list li[data-participant="${deeId}"] button.remove`);
  const kicked = await until('dee is told she was removed', async () => {
    const s = await st(dee);
    return s.phase === 'kicked' ? s : null;
  }, 10_000);
  check(kicked.phase === 'kicked', 'dee\'s page knows she was removed');
  const kickedNotice = await noticeText(dee);
  check(/removed/i.test(kickedNotice), `dee's page says: "${kickedNotice}"`);
  check((await inbound(dee)).length === 0, 'dee no longer receives anything (her connection is closed)');
  await until('the others drop dee', async () => !(await st(bob)).participants.includes(deeId), 10_000);
  check(true, 'bob no longer lists dee');

  // 7. Ann (the owner) leaves; Bob and Cy keep receiving each other.
  await ann.click('#leave');
  await until('ann has left', async () => (await st(ann)).phase === 'left', 5_000);
  await until('bob and cy drop ann', async () =>
    !(await st(bob)).participants.includes(annId) && !(await st(cy)).participants.includes(annId), 10_000);
  await receives(bob, 'bob', [cyId], { names });
  await receives(cy, 'cy', [bobId], { names });
  const res = await fetch(`${opts.base}/v1/rooms/${room}`, { headers: { Authorization: `Bearer ${new URL(invite).hash.slice(3)}` } });
  check(res.status === 200, `the room goes on after its owner left (GET ${res.status})`);
  const info = await res.json();
  const present = info.participants.map((p) => p.name).sort();
  check(JSON.stringify(present) === '["Bob","Cy"]', `the room holds ${JSON.stringify(present)}`);

  check(pageErrors.length === 0, `no uncaught page errors ${JSON.stringify(pageErrors)}`);
  check(httpErrors.length === 0, `no unexpected HTTP errors ${JSON.stringify(httpErrors)}`);
}

await run(main);
