// Failover of the browser client in a cluster (docs/cluster.md), in
// headless Chromium:
//
//   node cluster.mjs --nodes URL,URL,URL --pids PID,PID,PID --api-key KEY
//                    --ttl-ms MS [--out DIR] [--chromium PATH]
//
// Started by engine/tests/server_browser.rs, which starts Redis and the
// nodes (`--pids` are theirs, in the order of `--nodes`) and kills whatever
// is left by PID when this exits. The scenario: a room is created through
// the API; Ann (owner link) and Bob (invite link) open the room page on two
// nodes that do not host it (their requests are proxied to the owner) and
// decode each other, with media going straight to the owner's address.
// Ann locks the room, then the owner node is killed with SIGKILL. Each
// page must notice on its own, rejoin with its participant token (the lock
// keeps newcomers out, not the room's own participants) and be back in the
// room within 10 s of the node's TTL expiring (issue 16), on a live node:
// decoding the other again, the room's metadata unchanged (still locked),
// the owner's rights intact.
//
// Every wait is bounded; the run aborts after RUN_LIMIT_MS. Exit code 0
// when every check passed; on failure, screenshots of every page go to --out.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';
import { harness, sleep } from './common.mjs';

const RUN_LIMIT_MS = 200_000;
/** Back in the room at most this long after the killed node's TTL expired. */
const REJOIN_BOUND_MS = 10_000;

const { values: opts } = parseArgs({
  options: {
    nodes: { type: 'string' },
    pids: { type: 'string' },
    'api-key': { type: 'string' },
    'ttl-ms': { type: 'string' },
    out: { type: 'string', default: 'cluster-out' },
    chromium: { type: 'string', default: process.env.PIAZZA_CHROMIUM || '/usr/bin/chromium' },
  },
});
const nodes = (opts.nodes || '').split(',').filter(Boolean);
const pids = (opts.pids || '').split(',').filter(Boolean).map(Number);
const ttlMs = Number(opts['ttl-ms']);
if (nodes.length < 2 || pids.length !== nodes.length || !opts['api-key'] || !(ttlMs > 0)) {
  console.error('usage: node cluster.mjs --nodes URL,URL[,URL] --pids PID,PID[,PID] --api-key KEY --ttl-ms MS [--out DIR]');
  process.exit(2);
}
mkdirSync(opts.out, { recursive: true });

const { log, pages, pageErrors, check, until, openPage: openPageWith, inChromium, run } = harness('cluster', RUN_LIMIT_MS, { pollMs: 200 });
const httpErrors = [];
/** While the owner is dead, joins get 503 (node_unreachable, no_node)
 *  or 421 (misdirected) until the TTL passes: expected then only. */
let failoverWindow = false;

/** One API call to node `i` (outside the browser). */
async function api(i, method, path, { token, json, sdp } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (json !== undefined) headers['Content-Type'] = 'application/json';
  if (sdp !== undefined) headers['Content-Type'] = 'application/sdp';
  const res = await fetch(`${nodes[i]}${path}`, {
    method,
    headers,
    body: json === undefined ? sdp : JSON.stringify(json),
    signal: AbortSignal.timeout(10_000),
  });
  const data = (res.headers.get('content-type') || '').includes('json') ? await res.json() : await res.text();
  return { status: res.status, via: res.headers.get('x-piazza-via'), data };
}

/** The node hosting `room` among `among`: the one answering without forwarding. */
async function hostOf(room, token, among) {
  for (const i of among) {
    const r = await api(i, 'GET', `/v1/rooms/${room}`, { token }).catch(() => null);
    if (r && r.status === 200 && !r.via) return i;
  }
  return -1;
}

/** Node `i`'s view of the cluster: node URL -> its id and advertised
 *  media addresses (GET /v1/cluster). */
async function clusterView(i) {
  const r = await api(i, 'GET', '/v1/cluster', { token: opts['api-key'] });
  if (r.status !== 200) throw new Error(`GET /v1/cluster on ${nodes[i]}: ${r.status} ${JSON.stringify(r.data)}`);
  return { view: r.data, byUrl: new Map(r.data.nodes.map((n) => [n.url, { id: n.id, media: n.media.split(',') }])) };
}

function openPage(browser, label, url) {
  return openPageWith(browser, label, url, (label, r) => {
    if (r.status() < 400) return;
    const what = `${label} HTTP ${r.status()} ${r.request().method()} ${new URL(r.url()).pathname}`;
    log(what);
    if (!(failoverWindow && (r.status() === 503 || r.status() === 421))) httpErrors.push(what);
  });
}

const st = (page) => page.evaluate(() => {
  const s = window.piazza.state;
  return { phase: s.phase, me: s.me, node: s.node, owner: s.owner, locked: s.locked, rejoins: s.rejoins, error: s.error, participants: [...s.participants.values()].map((p) => ({ id: p.id, name: p.name })) };
});
const inbound = (page) => page.evaluate(() => window.piazza.inbound());
const remoteAddress = (page) => page.evaluate(() => window.piazza.remoteAddress());

async function joinAs(page, label, name) {
  await page.fill('#name', name);
  await page.click('#join');
  await until(`${label} joined`, async () => (await st(page)).phase === 'joined');
  const me = (await st(page)).me;
  log(`${label} joined as ${me}`);
  return me;
}

/** The id under which `page` lists the participant called `name`. */
async function idOf(page, label, name) {
  const p = await until(`${label} lists ${name}`, async () => (await st(page)).participants.find((q) => q.name === name), 15_000);
  return p.id;
}

/**
 * `page` decodes `name`'s camera and hears them: decoded frames (with a
 * size) and audio samples grow between two samples of the same slot.
 * Returns the milliseconds it took.
 */
async function receives(page, label, name, ms = 25_000) {
  const t0 = Date.now();
  const id = await idOf(page, label, name);
  const pending = new Set(['video', 'audio']);
  const of = (stats, kind) => stats.find((s) => s.kind === kind && s.participant === id && (kind === 'audio' || s.source === 'camera'));
  const grew = (a, b, field) => a && b && a.mid === b.mid && b[field] > a[field];
  let prev = await inbound(page);
  while (pending.size && Date.now() < t0 + ms) {
    await sleep(500);
    const cur = await inbound(page);
    const [pv, cv] = [of(prev, 'video'), of(cur, 'video')];
    if (pending.has('video') && grew(pv, cv, 'framesDecoded') && cv.frameWidth > 0) {
      pending.delete('video');
      check(true, `${label} decodes ${name} (${id}; slot ${cv.mid}: ${pv.framesDecoded} -> ${cv.framesDecoded} frames, ${cv.frameWidth}x${cv.frameHeight})`);
    }
    const [pa, ca] = [of(prev, 'audio'), of(cur, 'audio')];
    if (pending.has('audio') && grew(pa, ca, 'totalSamplesReceived')) {
      pending.delete('audio');
      check(true, `${label} hears ${name} (slot ${ca.mid}: ${pa.totalSamplesReceived} -> ${ca.totalSamplesReceived} samples)`);
    }
    prev = cur;
  }
  if (pending.size) throw new Error(`${label} does not receive ${name}'s ${[...pending].join(', ')} within ${ms / 1000} s; inbound ${JSON.stringify(prev)}`);
  return Date.now() - t0;
}

function main() {
  return inChromium(chromium, opts.chromium, opts.out, scenario, async (label, page) => {
    const s = await st(page).catch(() => null);
    const notice = await page.evaluate(() => document.getElementById('notice').textContent).catch(() => '');
    log(`${label} at failure: ${JSON.stringify(s)}; notice "${notice}"`);
  });
}

async function scenario(browser) {
  const all = nodes.map((_, i) => i);

  // 1. A room, created through the API on the first node.
  const meta = { name: 'Failover in Chromium', public: true, max_participants: 6 };
  const created = await api(0, 'POST', '/v1/rooms', { token: opts['api-key'], json: meta });
  check(created.status === 201, `room created (${created.status})`);
  const room = created.data.room;
  const owner = created.data.owner_token;
  const invite = new URL(created.data.invite_url).hash.slice(3);
  const host = await hostOf(room, owner, all);
  check(host >= 0, `room ${room} is hosted by node ${host} (${nodes[host]})`);
  const { byUrl } = await clusterView(host);
  const { id: hostId, media: hostMedia } = byUrl.get(nodes[host]) || { media: [] };
  check(hostId && hostMedia.length > 0, `the host ${hostId} advertises media at ${hostMedia}`);

  // 2. Ann and Bob open the room page on nodes that do not host it.
  const annNode = (host + 1) % nodes.length;
  const bobNode = (host + 2) % nodes.length === host ? annNode : (host + 2) % nodes.length;
  const ann = await openPage(browser, 'ann', `${nodes[annNode]}/r/${room}#t=${owner}`);
  await joinAs(ann, 'ann', 'Ann');
  const bob = await openPage(browser, 'bob', `${nodes[bobNode]}/r/${room}#t=${invite}`);
  await joinAs(bob, 'bob', 'Bob');
  await receives(ann, 'ann', 'Bob');
  await receives(bob, 'bob', 'Ann');
  for (const [label, page] of [['ann', ann], ['bob', bob]]) {
    const addr = await remoteAddress(page);
    check(hostMedia.includes(addr), `${label} (page from node ${label === 'ann' ? annNode : bobNode}) sends media straight to the host at ${addr}`);
    const { node } = await st(page);
    check(node === hostId, `${label}'s page knows its session is on ${node} (X-Piazza-Node)`);
  }
  await ann.click('#lock');
  await until('the room is locked', async () => (await st(ann)).locked, 10_000);
  const before = await api(annNode, 'GET', `/v1/rooms/${room}`, { token: owner });
  check(before.status === 200 && before.via && before.data.locked === true, `ann locked the room; its metadata through node ${annNode} (via ${before.via})`);
  await ann.screenshot({ path: join(opts.out, 'cluster-before.png') });

  // 3. kill -9 of the owning node, mid-call.
  failoverWindow = true;
  process.kill(pids[host], 'SIGKILL');
  const killedAt = Date.now();
  log(`killed node ${host} (pid ${pids[host]}) with SIGKILL; its entry expires within ${ttlMs} ms`);
  // When its entry expires (node_ttl after its last heartbeat), as a live
  // node sees it: the 10 s bound counts from there.
  const expiry = (async () => {
    for (;;) {
      const r = await api(annNode, 'GET', '/v1/cluster', { token: opts['api-key'] }).catch(() => null);
      if (r && r.status === 200 && !r.data.nodes.some((n) => n.url === nodes[host])) return Date.now();
      if (Date.now() > killedAt + ttlMs + 10_000) return null;
      await sleep(100);
    }
  })();

  // 4. Each page notices and rejoins on its own.
  const back = {};
  await until('both pages rejoined', async () => {
    for (const [label, page] of [['ann', ann], ['bob', bob]]) {
      if (back[label]) continue;
      const s = await st(page);
      if (s.phase === 'joined' && s.rejoins >= 1) {
        back[label] = Date.now();
        log(`${label} rejoined as ${s.me}, ${((back[label] - killedAt) / 1000).toFixed(2)} s after the kill`);
      }
    }
    return back.ann && back.bob;
  }, ttlMs + REJOIN_BOUND_MS + 30_000);
  const expiredAt = await expiry;
  check(expiredAt && expiredAt - killedAt <= ttlMs + 1000, `the killed node's entry expired ${((expiredAt - killedAt) / 1000).toFixed(2)} s after the kill (node TTL ${ttlMs / 1000} s)`);
  for (const label of ['ann', 'bob']) {
    const after = back[label] - expiredAt;
    check(after <= REJOIN_BOUND_MS, `${label} is back in the room ${(after / 1000).toFixed(2)} s after the TTL expired (${((back[label] - killedAt) / 1000).toFixed(2)} s after the kill; bound ${REJOIN_BOUND_MS / 1000} s)`);
  }
  const mediaMs = Math.max(await receives(ann, 'ann', 'Bob'), await receives(bob, 'bob', 'Ann'));
  const flowing = Date.now();
  failoverWindow = false;
  log(`failover: media decoded again ${((flowing - killedAt) / 1000).toFixed(2)} s after the kill (${(mediaMs / 1000).toFixed(2)} s after both rejoined)`);

  // 5. On a live node, with the room as it was.
  const live = all.filter((i) => i !== host);
  const newHost = await hostOf(room, owner, live);
  check(newHost >= 0, `the room now lives on node ${newHost} (${nodes[newHost]})`);
  const { view, byUrl: liveNodes } = await clusterView(newHost);
  check(view.nodes.length === nodes.length - 1 && !view.nodes.some((n) => n.url === nodes[host]), `the cluster lists ${view.nodes.length} live nodes, not the killed one`);
  const { id: newId, media: newMedia } = liveNodes.get(nodes[newHost]);
  for (const [label, page] of [['ann', ann], ['bob', bob]]) {
    const addr = await remoteAddress(page);
    check(newMedia.includes(addr) && !hostMedia.includes(addr), `${label} sends media to the new host at ${addr}`);
    const { node } = await st(page);
    check(node === newId, `${label}'s session is on the new host ${node}`);
  }
  const after = await api(annNode, 'GET', `/v1/rooms/${room}`, { token: owner });
  check(after.status === 200, `GET the room after the failover (${after.status})`);
  for (const key of ['name', 'public', 'max_participants', 'e2ee', 'locked', 'created_at']) {
    check(JSON.stringify(after.data[key]) === JSON.stringify(before.data[key]), `metadata intact: ${key} = ${JSON.stringify(after.data[key])}`);
  }
  const present = after.data.participants.map((p) => p.name).sort();
  check(JSON.stringify(present) === '["Ann","Bob"]', `the room holds ${JSON.stringify(present)}`);
  const title = await ann.evaluate(() => document.getElementById('room-name').textContent);
  check(title === meta.name, `ann's page still shows the room as "${title}"`);

  // 6. The lock still keeps newcomers out, and the owner's rights came
  //    along: Ann unlocks the room from her page.
  const newcomer = await api(bobNode, 'POST', `/v1/rooms/${room}/participants?name=Cy`, { token: invite, sdp: 'v=0\r\n' });
  check(newcomer.status === 423 && newcomer.data.error === 'room_locked', `a newcomer is refused: ${newcomer.status} ${newcomer.data.error}`);
  check((await st(ann)).owner && (await st(ann)).locked, 'ann is still the owner and her page shows the room locked');
  await ann.click('#lock');
  await until('the room is unlocked', async () => !(await st(ann)).locked, 10_000);
  const unlocked = await api(bobNode, 'GET', `/v1/rooms/${room}`, { token: invite });
  check(unlocked.status === 200 && unlocked.data.locked === false, 'unlocked on the new host, read through another node');

  // 7. The public list, from every live node, has the room.
  for (const i of live) {
    const list = await api(i, 'GET', '/v1/rooms');
    const entry = list.status === 200 && list.data.rooms.find((r) => r.room === room);
    check(entry && entry.name === meta.name, `node ${i}'s public list has the room`);
  }
  await ann.screenshot({ path: join(opts.out, 'cluster-after.png') });

  check(pageErrors.length === 0, `no uncaught page errors ${JSON.stringify(pageErrors)}`);
  check(httpErrors.length === 0, `no HTTP errors outside the failover window ${JSON.stringify(httpErrors)}`);
}

await run(main);
