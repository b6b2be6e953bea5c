// End-to-end test of chat and end-to-end encrypted rooms in headless Chromium.
//
//   node e2ee.mjs --base http://127.0.0.1:PORT [--out DIR] [--chromium PATH]
//
// Started by engine/tests/server_browser_e2ee.rs (which starts the server);
// browser/ci.sh installs chromium and playwright-core and runs it.
//
// 1. Chat in a normal room: to everyone, privately, history for a later
//    joiner, the rate limit's error shown to the sender.
// 2. An E2EE room: three participants decode each other's video and hear
//    each other (getStats frames decoded and frame sizes; the worker's
//    decrypted-frame counts per sender key); encrypted chat renders; a
//    participant with the token but not the room secret decodes nothing
//    (its decoder gets only ciphertext) and reads no chat; after a removal,
//    the removed page decrypts none of the frames sent under the new keys,
//    while the others keep decoding.
//
// Assertions are on counts, never on rates; every wait is bounded and
// generous (a loaded 2-core machine).
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';
import { harness, sleep } from './common.mjs';

const RUN_LIMIT_MS = 280_000;

const { values: opts } = parseArgs({
  options: {
    base: { type: 'string' },
    out: { type: 'string', default: 'e2ee-out' },
    chromium: { type: 'string', default: process.env.PIAZZA_CHROMIUM || '/usr/bin/chromium' },
  },
});
if (!opts.base) {
  console.error('usage: node e2ee.mjs --base http://127.0.0.1:PORT [--out DIR]');
  process.exit(2);
}
mkdirSync(opts.out, { recursive: true });

const { log, pages, pageErrors, check, until, openPage, inChromium, run } = harness('e2ee', RUN_LIMIT_MS, { waitMs: 30_000, pollMs: 300 });

async function closePage(label) {
  const page = pages.get(label);
  pages.delete(label);
  await page.context().close();
}

const st = (page) => page.evaluate(() => {
  const s = window.piazza.state;
  return { phase: s.phase, me: s.me, e2ee: s.e2ee, participants: [...s.participants.keys()] };
});
const inbound = (page) => page.evaluate(() => window.piazza.inbound());
const e2eeStats = (page) => page.evaluate(() => window.piazza.e2eeStats());
const events = (page) => page.evaluate(() => window.piazza.e2eeEvents());
const rendered = (page) => page.evaluate(() =>
  [...document.querySelectorAll('#chat-log li')].map((li) => ({
    from: li.dataset.from,
    head: li.querySelector('.head').textContent,
    text: li.querySelector('.text').textContent,
    undecryptable: li.querySelector('.text').classList.contains('undecryptable'),
    history: li.classList.contains('history'),
  })));

async function joinRoom(page, label, name) {
  await page.fill('#name', name);
  await page.click('#join');
  await until(`${label} joined`, async () => (await st(page)).phase === 'joined');
  const me = (await st(page)).me;
  log(`${label} joined as ${me}`);
  return me;
}

/** `page` decodes video and hears audio from every id in `from` (growth between two samples of one slot). */
async function receives(page, label, from, names) {
  const grew = (p, c, f) => p && c && p.mid === c.mid && c[f] > p[f];
  const pending = new Set(from.flatMap((id) => [`v:${id}`, `a:${id}`]));
  let prev = await inbound(page);
  const end = Date.now() + 40_000;
  while (pending.size && Date.now() < end) {
    await sleep(1000);
    const cur = await inbound(page);
    for (const id of from) {
      const v = (s) => s.find((x) => x.kind === 'video' && x.participant === id && x.source === 'camera');
      const a = (s) => s.find((x) => x.kind === 'audio' && x.participant === id);
      const [pv, cv, pa, ca] = [v(prev), v(cur), a(prev), a(cur)];
      if (pending.has(`v:${id}`) && grew(pv, cv, 'framesDecoded') && cv.frameWidth > 0 && cv.frameHeight > 0) {
        pending.delete(`v:${id}`);
        check(true, `${label} decodes ${names[id]}'s video (${pv.framesDecoded} -> ${cv.framesDecoded} frames, ${cv.frameWidth}x${cv.frameHeight})`);
      }
      if (pending.has(`a:${id}`) && grew(pa, ca, 'totalSamplesReceived')) {
        pending.delete(`a:${id}`);
        check(true, `${label} hears ${names[id]} (${pa.totalSamplesReceived} -> ${ca.totalSamplesReceived} samples)`);
      }
    }
    prev = cur;
  }
  if (pending.size) throw new Error(`${label} does not receive ${[...pending].join(', ')}; inbound ${JSON.stringify(prev)}; e2ee ${JSON.stringify(await e2eeStats(page))}`);
}

/** Decrypt frames (base64, from another page's capture) on `page`. */
const tryOn = (page, frames) => page.evaluate(async (list) => {
  const bin = list.map((f) => {
    const s = atob(f.data);
    const data = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) data[i] = s.charCodeAt(i);
    return { clear: f.clear, data };
  });
  return window.piazza.e2eeTryDecrypt(bin);
}, frames);

const kidOwner = (kid) => `p${Math.floor(kid / 65536)}`;
const kidEpoch = (kid) => kid % 65536;

/** Frames `page` decrypted, per sender id (from the KIDs). */
async function decryptedFrom(page) {
  const s = await e2eeStats(page);
  const out = {};
  for (const [kid, n] of Object.entries(s.decryptedByKid)) out[kidOwner(Number(kid))] = (out[kidOwner(Number(kid))] || 0) + n;
  return out;
}

function main() {
  return inChromium(chromium, opts.chromium, opts.out, async (browser) => {
    await chatInANormalRoom(browser);
    await e2eeRoom(browser);
  });
}

async function createRoom(page, name, e2ee) {
  await page.fill('#create-name', name);
  if (e2ee) await page.check('#create-e2ee');
  await page.click('#create');
  await page.waitForURL(/\/r\/[A-Za-z0-9]+$/, { timeout: 15_000 });
  return new URL(page.url()).pathname.split('/').pop();
}

async function chatInANormalRoom(browser) {
  log('--- chat in a normal room');
  const ann = await openPage(browser, 'ann', `${opts.base}/`);
  const room = await createRoom(ann, 'Chat room', false);
  const annId = await joinRoom(ann, 'ann', 'Ann');
  const invite = await until('invite link', () => ann.evaluate(() => document.getElementById('invite-url').value));
  const bob = await openPage(browser, 'bob', invite);
  const bobId = await joinRoom(bob, 'bob', 'Bob');
  await until('ann lists bob', async () => (await st(ann)).participants.includes(bobId), 15_000);

  // Through the form, as a user would.
  await ann.fill('#chat-text', 'Hello <b>everyone</b>');
  await ann.click('#chat-send');
  const got = await until('bob renders ann\'s message', async () => (await rendered(bob)).find((m) => m.from === annId));
  check(got.text === 'Hello <b>everyone</b>' && got.head.startsWith('Ann'), `bob renders "${got.text}" from "${got.head}" (as text, not markup)`);
  check((await rendered(ann)).some((m) => m.from === annId && m.head.startsWith('You')), 'ann sees her own message as "You"');

  // Privately: Bob to Ann, then Cy joins and gets the history, but not the private one.
  await bob.evaluate((to) => window.piazza.sendChat('just for you', to), annId);
  await until('ann gets the private message', async () => (await rendered(ann)).some((m) => m.text === 'just for you'));
  check(true, 'ann renders bob\'s private message');
  const cy = await openPage(browser, 'cy', invite);
  await joinRoom(cy, 'cy', 'Cy');
  const history = await until('cy gets the history', async () => {
    const r = await rendered(cy);
    return r.length ? r : null;
  });
  check(history.length === 1 && history[0].history && history[0].text === 'Hello <b>everyone</b>', `cy (joined later) gets the history without the private message: ${JSON.stringify(history.map((m) => m.text))}`);

  // The rate limit: a burst of 15 from Cy; 10 go through, the rest are
  // refused and her page says why.
  const sent = await cy.evaluate(async () => {
    let n = 0;
    for (let i = 0; i < 15; i++) if (await window.piazza.sendChat(`burst ${i}`)) n += 1;
    return n;
  });
  check(sent === 15, 'cy sent 15 messages in a burst');
  const refused = await until('cy is told about the rate limit', async () => {
    const errors = await cy.evaluate(() => window.piazza.chat.errors.map((e) => e.code));
    return errors.filter((c) => c === 'rate_limited').length >= 5 ? errors : null;
  });
  check(refused.length === 5, `cy's page got ${refused.length} rate_limited errors`);
  const shown = await cy.evaluate(() => document.getElementById('chat-error').textContent);
  check(/too many messages/i.test(shown), `cy's page shows: "${shown}"`);
  await until('bob renders the 10 accepted burst messages', async () => (await rendered(bob)).filter((m) => m.text.startsWith('burst')).length === 10);
  check(true, 'bob renders the 10 accepted messages of the burst');
  const tooLong = await ann.evaluate(() => window.piazza.sendChat('x'.repeat(1500)));
  check(tooLong === false && /at most 1000/.test(await ann.evaluate(() => document.getElementById('chat-error').textContent)), 'a too long message is refused on the page with a clear error');
  for (const l of ['ann', 'bob', 'cy']) await closePage(l);
  log(`room ${room} done`);
}

async function e2eeRoom(browser) {
  log('--- end-to-end encrypted room');
  const ann = await openPage(browser, 'ann', `${opts.base}/`);
  const room = await createRoom(ann, 'Secret room', true);
  const annId = await joinRoom(ann, 'ann', 'Ann');
  check((await st(ann)).e2ee, 'the room is end-to-end encrypted');
  check(!(await ann.evaluate(() => document.getElementById('e2ee-badge').hidden)), 'ann\'s page shows the E2EE badge');
  check(!ann.url().includes('k='), 'the room secret left the address bar');
  const invite = await until('invite link', () => ann.evaluate(() => document.getElementById('invite-url').value));
  check(/#t=[^&]+&k=[A-Za-z0-9_-]{40,}$/.test(invite), 'the invite link carries the room secret in its fragment');
  const bob = await openPage(browser, 'bob', invite);
  const bobId = await joinRoom(bob, 'bob', 'Bob');
  const cy = await openPage(browser, 'cy', invite);
  const cyId = await joinRoom(cy, 'cy', 'Cy');
  const names = { [annId]: 'Ann', [bobId]: 'Bob', [cyId]: 'Cy' };

  // 1. Everyone decodes and hears the two others, through decryption.
  await receives(ann, 'ann', [bobId, cyId], names);
  await receives(bob, 'bob', [annId, cyId], names);
  await receives(cy, 'cy', [annId, bobId], names);
  for (const [label, page, others] of [['ann', ann, [bobId, cyId]], ['bob', bob, [annId, cyId]], ['cy', cy, [annId, bobId]]]) {
    const from = await decryptedFrom(page);
    const s = await e2eeStats(page);
    check(others.every((id) => from[id] > 50) && s.encrypted > 100 && s.unencryptedSent === 0,
      `${label} encrypted ${s.encrypted} frames and decrypted ${JSON.stringify(from)} (${s.failed} failed authentication)`);
  }
  await ann.screenshot({ path: join(opts.out, 'e2ee-three.png') });

  // 2. Encrypted chat renders for everyone.
  await ann.evaluate(() => window.piazza.sendChat('the launch code is 0000'));
  for (const [label, page] of [['bob', bob], ['cy', cy]]) {
    const m = await until(`${label} renders ann's encrypted message`, async () => (await rendered(page)).find((x) => x.from === annId));
    check(m.text === 'the launch code is 0000' && m.head.includes('🔒'), `${label} decrypts and renders "${m.text}" (${m.head})`);
  }
  const wire = await bob.evaluate(() => window.piazza.chat.messages.length);
  check(wire >= 1, 'bob keeps the message');

  // 3. Eve has the token but not the secret: she gets ciphertext only.
  const eveLink = invite.replace(/&k=[^&]*/, '');
  const eve = await openPage(browser, 'eve', eveLink);
  const lobby = await eve.evaluate(() => document.getElementById('lobby-info').textContent);
  check(/no room secret/.test(lobby), `eve's lobby warns: "${lobby}"`);
  const eveId = await joinRoom(eve, 'eve', 'Eve');
  await until('eve receives video packets', async () => (await inbound(eve)).some((s) => s.kind === 'video' && s.packetsReceived > 200), 40_000);
  await sleep(5000);
  const eveIn = await inbound(eve);
  const eveStats = await e2eeStats(eve);
  const videoPackets = eveIn.filter((s) => s.kind === 'video').reduce((a, s) => a + s.packetsReceived, 0);
  const eveDecoded = eveIn.filter((s) => s.kind === 'video').reduce((a, s) => a + s.framesDecoded, 0);
  check(eveStats.decrypted === 0 && eveStats.noKey > 100 && eveStats.failed === 0, `eve's page decrypted ${eveStats.decrypted} of ${eveStats.noKey} frames (no key for any)`);
  check(videoPackets > 200 && eveDecoded === 0, `eve received ${videoPackets} video packets and decoded ${eveDecoded} frames`);
  // What reached Eve is the real media, encrypted: Bob, who has the keys,
  // decrypts the very frames Eve captured.
  const eveFrames = await eve.evaluate(async () => (await window.piazza.e2eeCapture()).map((f) => {
    let s = '';
    for (let i = 0; i < f.data.length; i++) s += String.fromCharCode(f.data[i]);
    return { clear: f.clear, kid: f.kid, data: btoa(s) };
  }));
  const eveByBob = await tryOn(bob, eveFrames);
  const eveByEve = await tryOn(eve, eveFrames);
  check(eveFrames.length >= 30 && eveByBob.decrypted === eveFrames.length && eveByEve.decrypted === 0,
    `of ${eveFrames.length} frames eve received, bob decrypts ${eveByBob.decrypted}, eve ${eveByEve.decrypted}: eve got only ciphertext`);
  const eveChat = await until('eve gets the chat history', async () => {
    const r = await rendered(eve);
    return r.length ? r : null;
  });
  check(eveChat.every((m) => m.undecryptable && !m.text.includes('launch code')), 'eve cannot read the chat history');
  const annKnows = await e2eeStats(ann);
  check(!annKnows.verified.includes(eveId), 'nobody sends eve a key (she could not prove the secret)');

  // 4. Dee joins with the secret, decodes, then Ann removes her.
  const dee = await openPage(browser, 'dee', invite);
  const deeId = await joinRoom(dee, 'dee', 'Dee');
  names[deeId] = 'Dee';
  await until('dee decrypts frames of ann, bob and cy', async () => {
    const from = await decryptedFrom(dee);
    return [annId, bobId, cyId].every((id) => from[id] > 20);
  }, 40_000);
  check(true, 'dee decrypts frames of ann, bob and cy');
  const deeKids = (await e2eeStats(dee)).kids;
  await until('ann lists dee', async () => (await st(ann)).participants.includes(deeId), 10_000);
  await ann.click(`#participant-list li[data-participant="${deeId}"] button.remove`);
  await until('dee is removed', async () => (await st(dee)).phase === 'kicked', 15_000);
  check(true, 'dee was removed');
  // Every remaining sender moves to a new key (epoch 1).
  for (const [label, page] of [['ann', ann], ['bob', bob], ['cy', cy]]) {
    const ev = await until(`${label} switches to a new key`, async () => (await events(page)).find((e) => e.event === 'rotated'), 20_000);
    check(kidEpoch(ev.kid) === 1, `${label} sends under a new key ${ev.kid}`);
  }
  await sleep(3000);
  // Frames sent under the new keys, as Bob received them.
  // (Eve's frames are left out: nobody has her keys.)
  const fresh = await bob.evaluate(async (senders) => {
    const frames = await window.piazza.e2eeCapture();
    return frames.filter((f) => f.kid !== null && f.kid % 65536 >= 1 && senders.includes(Math.floor(f.kid / 65536))).map((f) => {
      let s = '';
      for (let i = 0; i < f.data.length; i++) s += String.fromCharCode(f.data[i]);
      return { clear: f.clear, kid: f.kid, data: btoa(s) };
    });
  }, [annId, cyId].map((id) => Number(id.slice(1))));
  const owners = new Set(fresh.map((f) => kidOwner(f.kid)));
  check(fresh.length >= 10 && owners.has(annId) && owners.has(cyId), `bob captured ${fresh.length} frames under new keys from ${[...owners].join(', ')}`);
  const byBob = await tryOn(bob, fresh);
  const byDee = await tryOn(dee, fresh);
  check(byBob.decrypted === fresh.length, `bob decrypts all ${byBob.decrypted} of them`);
  check(byDee.decrypted === 0, `removed dee decrypts ${byDee.decrypted} of ${fresh.length} frames sent after the key change`);
  const deeKidsAfter = (await e2eeStats(dee)).kids;
  check(deeKidsAfter.every((k) => kidEpoch(k) === 0) && deeKidsAfter.length === deeKids.length, `dee never received a new key (she holds ${deeKidsAfter.length} keys, all of epoch 0)`);

  // 5. The others continue: they decode each other under the new keys.
  const before = await Promise.all([ann, bob, cy].map((p) => e2eeStats(p)));
  await receives(ann, 'ann', [bobId, cyId], names);
  await receives(bob, 'bob', [annId, cyId], names);
  await receives(cy, 'cy', [annId, bobId], names);
  const after = await Promise.all([ann, bob, cy].map((p) => e2eeStats(p)));
  after.forEach((s, i) => {
    const newer = Object.entries(s.decryptedByKid).filter(([k]) => kidEpoch(Number(k)) >= 1).reduce((a, [, n]) => a + n, 0);
    check(newer > 20 && s.decrypted > before[i].decrypted, `${['ann', 'bob', 'cy'][i]} decrypted ${newer} frames under the new keys`);
  });
  await ann.evaluate(() => window.piazza.sendChat('after the removal'));
  const m = await until('cy renders the message sent after the removal', async () => (await rendered(cy)).find((x) => x.text === 'after the removal'));
  check(!!m, 'chat continues under the new keys');
  log(`room ${room} done`);
  check(pageErrors.length === 0, `no uncaught page errors ${JSON.stringify(pageErrors)}`);
}

await run(main);
