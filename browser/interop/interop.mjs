// Interop scenarios: Piazza with clients other than one Chromium.
//
//   node interop.mjs --scenario aiortc  --base URL --python VENV/bin/python
//   node interop.mjs --scenario firefox --base URL [--firefox /usr/bin/firefox-esr]
//   node interop.mjs --scenario turn    --base URL
//   node interop.mjs --scenario tcp     --base URL --blocked-netns NS
//   node interop.mjs --scenario narrow  --base URL --narrow-netns NS --limit-dev DEV
//
// Started by engine/tests/server_interop.rs (which starts the server, and
// coturn for `turn`); browser/interop/ci.sh installs what they need.
//
// - aiortc: one Chromium page and two aiortc peers (aiortc_peers.py) in one
//   room; each decodes every other's video and audio.
// - firefox: Firefox ESR (headless, WebDriver BiDi through puppeteer-core)
//   and Chromium in one room, each decoding the other; Firefox publishes
//   simulcast (rids l, m, h) and the Chromium subscriber gets its layers.
// - turn: a Chromium page forced to relay (iceTransportPolicy 'relay', TURN
//   servers and credentials from the server's /ice_servers) and a Chromium
//   page on plain UDP decode each other; the relayed page's selected
//   candidate pair is a relay candidate.
// - tcp: a Chromium page in network namespace NS, where a firewall rule
//   drops every UDP packet (engine/tests/server_interop.rs makes it), and
//   two Chromium pages on plain UDP: all decode each other; the page
//   without UDP reaches the engine over ICE-TCP (its selected pair is TCP
//   to the engine's passive candidate), the others keep UDP although the
//   engine offers TCP too.
// - narrow: three Chromium pages; one (in network namespace NS) gets its
//   downlink through a token bucket (`tc qdisc ... tbf` on DEV, a veth end
//   in this process's namespace, made by engine/tests/server_interop.rs).
//   The limit goes 2.5 Mbit/s -> 500 kbit/s for 30 s -> 2.5 Mbit/s ->
//   250 kbit/s for 30 s -> 2.5 Mbit/s. Measured from the page's getStats,
//   its `slots` messages and the server's bandwidth endpoint: pauses, layer
//   changes per slot, freezes, audio gaps, recovery; writes
//   narrow-summary.json (and every sample, narrow-samples.json) and a
//   screenshot of a tile paused for bandwidth (narrow-paused-tile.png) into
//   --out, then checks issue 14's rules.
//
// Every wait is bounded; the whole run aborts after RUN_LIMIT_MS. Exit 0
// when every check passed.
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createInterface } from 'node:readline';
import { CHROME_ARGS, harness, sleep } from '../common.mjs';

// The narrow scenario runs about 2.5 minutes of phases after joining.
const RUN_LIMIT_MS = process.argv.includes('narrow') ? 420_000 : 240_000;

const { values: opts } = parseArgs({
  options: {
    scenario: { type: 'string' },
    base: { type: 'string' },
    out: { type: 'string', default: 'interop-out' },
    chromium: { type: 'string', default: process.env.PIAZZA_CHROMIUM || '/usr/bin/chromium' },
    firefox: { type: 'string', default: process.env.PIAZZA_FIREFOX || '/usr/bin/firefox-esr' },
    python: { type: 'string' },
    'blocked-netns': { type: 'string' },
    'narrow-netns': { type: 'string' },
    'limit-dev': { type: 'string' },
    'cut-kbps': { type: 'string', default: '500' },
    'deep-cut-kbps': { type: 'string', default: '250' },
    'chromium-arg': { type: 'string', multiple: true, default: [] },
  },
});
if (!opts.base || !opts.scenario) {
  console.error('usage: node interop.mjs --scenario aiortc|firefox|turn|tcp --base http://127.0.0.1:PORT');
  process.exit(2);
}
mkdirSync(opts.out, { recursive: true });

// The time limit, log, checks, polling, page registry and verdict line
// every browser scenario of this repository shares.
const { log, pages, pageErrors, check, until, run } = harness(`interop ${opts.scenario}`, RUN_LIMIT_MS);

// Installed in every page before the app runs: keeps the page's
// RTCPeerConnection reachable for statistics, and (when asked) forces
// relay-only ICE the way a network that lets only a relay through would.
function pageHook(force) {
  const Native = window.RTCPeerConnection;
  const pcs = [];
  const channels = [];
  function Hooked(config, ...rest) {
    const c = { ...(config || {}) };
    if (force && force.relay) c.iceTransportPolicy = 'relay';
    // A network where only TCP gets out: keep the TURN-over-TCP URLs only.
    if (force && force.tcpOnly && c.iceServers) {
      c.iceServers = c.iceServers
        .map((s) => ({ ...s, urls: [].concat(s.urls).filter((u) => /transport=tcp/.test(u) || u.startsWith('turns:')) }))
        .filter((s) => s.urls.length);
    }
    const pc = new Native(c, ...rest);
    pcs.push(pc);
    const create = pc.createDataChannel.bind(pc);
    pc.createDataChannel = (label, init) => {
      const ch = create(label, init);
      if (label === 'control') channels.push(ch);
      return ch;
    };
    return pc;
  }
  Hooked.prototype = Native.prototype;
  Object.setPrototypeOf(Hooked, Native);
  window.RTCPeerConnection = Hooked;
  const statsOf = async (getStats) => {
    const out = [];
    (await getStats()).forEach((s) => out.push(s));
    return out;
  };
  window.__interop = {
    pcs,
    config: () => (pcs[0] ? pcs[0].getConfiguration() : null),
    /** Send a control message as the app would (docs/api.md section 3). */
    control(msg) {
      channels[channels.length - 1].send(JSON.stringify(msg));
    },
    /**
     * Inbound video/audio per receive slot. Stats carry `mid` in Chromium;
     * where they do not, each transceiver's receiver.getStats() says which.
     */
    async inbound() {
      const pc = pcs[pcs.length - 1];
      if (!pc || !window.piazza) return [];
      const slots = window.piazza.state.slots;
      const entry = (mid, kind, s) => {
        const slot = (kind === 'video' ? slots.video : slots.audio).find((v) => v.mid === mid);
        return {
          mid,
          kind,
          participant: slot ? slot.participant : null,
          layer: slot && slot.layer ? slot.layer : null,
          packetsReceived: s.packetsReceived || 0,
          framesDecoded: s.framesDecoded || 0,
          framesPerSecond: s.framesPerSecond || 0,
          frameWidth: s.frameWidth || 0,
          frameHeight: s.frameHeight || 0,
          totalSamplesReceived: s.totalSamplesReceived || 0,
          freezeCount: s.freezeCount || 0,
          totalFreezesDuration: s.totalFreezesDuration || 0,
          concealedSamples: s.concealedSamples || 0,
          // Age of the last packet when the stats were taken (ms).
          lastPacketAge: s.lastPacketReceivedTimestamp ? Math.max(0, Math.round(s.timestamp - s.lastPacketReceivedTimestamp)) : null,
        };
      };
      const all = (await statsOf(() => pc.getStats())).filter((s) => s.type === 'inbound-rtp');
      if (all.length && all.every((s) => s.mid)) return all.map((s) => entry(s.mid, s.kind, s));
      const out = [];
      for (const t of pc.getTransceivers()) {
        if (!t.mid || !t.currentDirection || !t.currentDirection.includes('recv')) continue;
        for (const s of await statsOf(() => t.receiver.getStats())) {
          if (s.type === 'inbound-rtp') out.push(entry(t.mid, t.receiver.track.kind, s));
        }
      }
      return out;
    },
    /** Outbound RTP of the camera, per rid. */
    async outbound() {
      const pc = pcs[pcs.length - 1];
      if (!pc) return [];
      return (await statsOf(() => pc.getStats()))
        .filter((s) => s.type === 'outbound-rtp' && s.kind === 'video')
        .map((s) => ({ qualityLimitationReason: s.qualityLimitationReason || null, rid: s.rid || null, mid: s.mid || null, ssrc: s.ssrc, framesEncoded: s.framesEncoded || 0, framesSent: s.framesSent || 0, framesPerSecond: s.framesPerSecond || 0, frameWidth: s.frameWidth || 0, frameHeight: s.frameHeight || 0, packetsSent: s.packetsSent || 0, scalabilityMode: s.scalabilityMode || null }));
    },
    /** The selected candidate pair's local and remote candidates. */
    async selectedPair() {
      const pc = pcs[pcs.length - 1];
      if (!pc) return null;
      const stats = await statsOf(() => pc.getStats());
      const byId = new Map(stats.map((s) => [s.id, s]));
      let pair = null;
      for (const s of stats) {
        if (s.type === 'transport' && s.selectedCandidatePairId) pair = byId.get(s.selectedCandidatePairId);
      }
      if (!pair) pair = stats.find((s) => s.type === 'candidate-pair' && (s.selected || (s.nominated && s.state === 'succeeded')));
      if (!pair) return null;
      const l = byId.get(pair.localCandidateId) || {};
      const r = byId.get(pair.remoteCandidateId) || {};
      return {
        local: { type: l.candidateType, protocol: l.protocol, relayProtocol: l.relayProtocol, address: l.address || l.ip, port: l.port },
        remote: { type: r.candidateType, protocol: r.protocol, address: r.address || r.ip, port: r.port },
        bytesSent: pair.bytesSent, bytesReceived: pair.bytesReceived,
      };
    },
  };
}

async function createRoom(name) {
  const res = await fetch(`${opts.base}/v1/rooms`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ name }),
  });
  check(res.status === 201, `room created (${res.status})`);
  return res.json();
}

// ---- pages (one API over playwright pages and puppeteer pages) ------------

function watch(label, page) {
  page.on('pageerror', (e) => pageErrors.push(`${label}: ${e.message || e}`));
  page.on('console', (m) => {
    const type = typeof m.type === 'function' ? m.type() : m.type;
    if (type === 'error' || type === 'warning' || type === 'warn') log(`${label} console ${type}: ${m.text()}`);
  });
  pages.set(label, page);
}

async function openChromium(browser, label, url, force = {}) {
  const context = await browser.newContext({ viewport: { width: 960, height: 540 } });
  await context.addInitScript(pageHook, force);
  const page = await context.newPage();
  watch(label, page);
  await page.goto(url);
  return page;
}

async function openFirefox(browser, label, url) {
  const page = await browser.newPage();
  await page.evaluateOnNewDocument(pageHook, {});
  watch(label, page);
  await page.goto(url);
  return page;
}

const st = (page) => page.evaluate(() => {
  const s = window.piazza.state;
  return { phase: s.phase, me: s.me, error: s.error, participants: [...s.participants.values()].map((p) => ({ id: p.id, name: p.name })) };
});

async function joinAs(page, label, name) {
  await until(`${label} shows the lobby`, async () => (await st(page)).phase === 'lobby', 15_000);
  await page.evaluate((n) => {
    document.getElementById('name').value = n;
    document.getElementById('join').click();
  }, name);
  await until(`${label} joined`, async () => (await st(page)).phase === 'joined', 20_000);
  const me = (await st(page)).me;
  log(`${label} joined as ${me}`);
  return me;
}

/** Ids of the participants named `names`, as `page` lists them. */
async function idsByName(page, names) {
  return until(`${names.join(', ')} listed`, async () => {
    const list = (await st(page)).participants;
    const ids = names.map((n) => (list.find((p) => p.name === n) || {}).id);
    return ids.every(Boolean) ? ids : null;
  }, 20_000);
}

/**
 * `page` decodes video and hears audio from every participant in `from`:
 * decoded frames / audio samples grow between two samples of the same slot.
 */
async function receives(page, label, from, names, { audio = true, ms = 30_000 } = {}) {
  const inbound = () => page.evaluate(() => window.__interop.inbound());
  const of = (stats, kind, id) => stats.find((s) => s.kind === kind && s.participant === id);
  const grew = (p, c, f) => p && c && p.mid === c.mid && c[f] > p[f];
  const pending = new Set(from.flatMap((id) => (audio ? [`v:${id}`, `a:${id}`] : [`v:${id}`])));
  let prev = await inbound();
  const end = Date.now() + ms;
  while (pending.size && Date.now() < end) {
    await sleep(750);
    const cur = await inbound();
    for (const id of from) {
      const [pv, cv] = [of(prev, 'video', id), of(cur, 'video', id)];
      if (pending.has(`v:${id}`) && grew(pv, cv, 'framesDecoded') && cv.frameWidth > 0) {
        pending.delete(`v:${id}`);
        check(true, `${label} decodes ${names[id] || id}'s video (slot ${cv.mid}: ${pv.framesDecoded} -> ${cv.framesDecoded} frames, ${cv.frameWidth}x${cv.frameHeight}, layer ${cv.layer})`);
      }
      const [pa, ca] = [of(prev, 'audio', id), of(cur, 'audio', id)];
      if (pending.has(`a:${id}`) && grew(pa, ca, 'packetsReceived') && grew(pa, ca, 'totalSamplesReceived')) {
        pending.delete(`a:${id}`);
        check(true, `${label} hears ${names[id] || id} (slot ${ca.mid}: ${pa.totalSamplesReceived} -> ${ca.totalSamplesReceived} samples)`);
      }
    }
    prev = cur;
  }
  if (pending.size) {
    const slots = await page.evaluate(() => window.piazza.state.slots);
    throw new Error(`${label} does not receive ${[...pending].join(', ')}; inbound ${JSON.stringify(prev)}; slots ${JSON.stringify(slots)}`);
  }
  return prev;
}

// ---- scenarios ----------------------------------------------------------------

async function withChromium(fn, executablePath = opts.chromium, extraArgs = []) {
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({ executablePath, headless: true, args: [...CHROME_ARGS, ...opts['chromium-arg'], ...extraArgs] });
  try {
    return await fn(browser);
  } finally {
    await browser.close().catch(() => {});
  }
}

async function aiortcScenario() {
  if (!opts.python) throw new Error('--python VENV/bin/python is required for the aiortc scenario');
  const room = await createRoom('aiortc interop');
  await withChromium(async (browser) => {
    const chrome = await openChromium(browser, 'chromium', room.invite_url);
    const chromeId = await joinAs(chrome, 'chromium', 'Chromium');

    const py = spawn(opts.python, [join(import.meta.dirname, 'aiortc_peers.py'),
      '--base', opts.base, '--room', room.room, '--token', room.invite_token,
      '--names', 'Ada,Ben', '--expect', '2', '--limit', '60'], { stdio: ['pipe', 'pipe', 'inherit'] });
    const exited = new Promise((r) => py.on('exit', (code) => r(code)));
    let result = null;
    const gotResult = new Promise((resolve) => {
      createInterface({ input: py.stdout }).on('line', (line) => {
        if (line.startsWith('RESULT ')) {
          result = JSON.parse(line.slice(7));
          resolve();
        } else {
          console.log(line);
        }
      });
    });
    try {
      const [adaId, benId] = await idsByName(chrome, ['Ada', 'Ben']);
      const names = { [adaId]: 'Ada (aiortc)', [benId]: 'Ben (aiortc)' };
      await receives(chrome, 'chromium', [adaId, benId], names);
      await Promise.race([gotResult, exited]);
      check(result, 'the aiortc peers report their reception');
      log(`aiortc result: ${JSON.stringify(result)}`);
      for (const p of result.peers) {
        check(p.answer.with_candidates === p.answer.accepted && p.answer.with_end_of_candidates === p.answer.accepted,
          `${p.name}'s answer has candidates and a=end-of-candidates in all ${p.answer.accepted} accepted m-sections`);
        for (const other of ['Chromium', 'Ada', 'Ben'].filter((n) => n !== p.name)) {
          check((p.video_frames[other] || 0) >= 15, `${p.name} (aiortc) decodes ${other}'s video (${p.video_frames[other] || 0} frames, ${p.video_size[other]})`);
          check((p.audio_samples[other] || 0) >= 24000, `${p.name} (aiortc) decodes ${other}'s audio (${p.audio_samples[other] || 0} samples)`);
        }
      }
      check(result.ok, 'every aiortc peer is satisfied');
      check(chromeId, 'chromium took part');
    } finally {
      py.stdin.end();
      const code = await Promise.race([exited, sleep(15_000).then(() => 'timeout')]);
      if (code === 'timeout') py.kill('SIGKILL');
      log(`aiortc peers exited: ${code}`);
    }
  });
}

async function firefoxScenario() {
  const puppeteer = (await import('puppeteer-core')).default;
  const room = await createRoom('firefox interop');
  const firefox = await puppeteer.launch({
    browser: 'firefox',
    executablePath: opts.firefox,
    headless: true,
    extraPrefsFirefox: {
      'media.navigator.streams.fake': true,
      'media.navigator.permission.disabled': true,
      'media.autoplay.default': 0,
      'media.peerconnection.ice.loopback': true,
      'media.peerconnection.ice.obfuscate_host_addresses': false,
    },
  });
  try {
    await withChromium(async (browser) => {
      const fox = await openFirefox(firefox, 'firefox', room.invite_url);
      const foxId = await joinAs(fox, 'firefox', 'Fox');
      const chrome = await openChromium(browser, 'chromium', room.invite_url);
      const chromeId = await joinAs(chrome, 'chromium', 'Chromium');
      const names = { [foxId]: 'Fox (Firefox)', [chromeId]: 'Chromium' };
      const foxState = await until('firefox connects', () => fox.evaluate(() => {
        const pc = window.__interop.pcs[0];
        return pc && pc.connectionState === 'connected' ? pc.connectionState : null;
      }), 20_000).catch(async (e) => {
        log(`firefox: ${JSON.stringify(await fox.evaluate(async () => {
          const pc = window.__interop.pcs[0];
          return { ice: pc && pc.iceConnectionState, conn: pc && pc.connectionState, pair: await window.__interop.selectedPair(), local: pc && pc.localDescription && pc.localDescription.sdp };
        }))}`);
        throw e;
      });
      check(foxState, 'firefox connects');
      log(`firefox offer/answer pair: ${JSON.stringify(await fox.evaluate(() => window.__interop.selectedPair()))}`);
      log(`firefox outbound: ${JSON.stringify(await fox.evaluate(() => window.__interop.outbound()))}`);
      await receives(chrome, 'chromium', [foxId], names);
      await receives(fox, 'firefox', [chromeId], names);

      // Firefox's simulcast: what it sends per rid, and which of its layers
      // the engine forwards to the Chromium subscriber.
      const sent = await until('firefox sends every simulcast layer', async () => {
        const out = await fox.evaluate(() => window.__interop.outbound());
        return out.filter((o) => o.rid).length >= 2 && out.filter((o) => o.rid).every((o) => o.packetsSent > 0) ? out : null;
      }, 20_000);
      log(`firefox outbound: ${JSON.stringify(sent)}`);
      const rids = sent.filter((o) => o.rid).map((o) => o.rid).sort();
      check(rids.length >= 2, `firefox sends simulcast with rids ${JSON.stringify(rids)}`);
      // The engine forwards one of them at a time: cap the slot's height
      // (control message max_resolution) and lift the cap again; the
      // Chromium subscriber decodes Firefox's low layer, then a higher one.
      const fox0 = (await chrome.evaluate(() => window.__interop.inbound())).find((s) => s.kind === 'video' && s.participant === foxId);
      const seen = [];
      for (const [height, want] of [[90, (v) => v.layer === 'l' && v.frameHeight <= 90], [null, (v) => v.layer !== 'l' && v.frameHeight > 90]]) {
        await chrome.evaluate((m) => window.__interop.control(m), { type: 'max_resolution', mid: fox0.mid, height });
        const v = await until(`chromium decodes firefox's ${height ? 'lowest layer' : 'higher layers again'}`, async () => {
          const cur = (await chrome.evaluate(() => window.__interop.inbound())).find((s) => s.kind === 'video' && s.participant === foxId);
          return cur && want(cur) ? cur : null;
        }, 20_000, 500);
        seen.push(`${v.layer} ${v.frameWidth}x${v.frameHeight}`);
      }
      check(seen.length === 2, `chromium decoded firefox's simulcast layers one after the other: ${seen.join(', then ')}`);
      await receives(chrome, 'chromium', [foxId], names, { audio: false });

      // Frame-rate fidelity: what Chromium encodes per rid against what the
      // Firefox subscriber decodes from the layer the engine forwards.
      const chromeOut = await chrome.evaluate(() => window.__interop.outbound());
      const source = await chrome.evaluate(async () => {
        const pc = window.__interop.pcs[0];
        const out = [];
        (await pc.getStats()).forEach((s) => { if (s.type === 'media-source' && s.kind === 'video') out.push({ fps: s.framesPerSecond, size: `${s.width}x${s.height}` }); });
        const t = pc.getSenders().find((x) => x.track && x.track.kind === 'video');
        return { stats: out, settings: t ? t.track.getSettings() : null };
      });
      log(`chromium camera source: ${JSON.stringify(source)}; limitation ${JSON.stringify(chromeOut.map((o) => o.qualityLimitationReason))}`);
      const foxIn = (await fox.evaluate(() => window.__interop.inbound())).find((s) => s.kind === 'video' && s.participant === chromeId);
      log(`frame rates: chromium sends ${JSON.stringify(chromeOut.filter((o) => o.rid).map((o) => ({ rid: o.rid, size: `${o.frameWidth}x${o.frameHeight}`, fps: o.framesPerSecond, framesEncoded: o.framesEncoded, mode: o.scalabilityMode })))}; firefox decodes layer ${foxIn && foxIn.layer} ${foxIn && `${foxIn.frameWidth}x${foxIn.frameHeight}`} at ${foxIn && foxIn.framesPerSecond} fps`);
    });
  } finally {
    await firefox.close().catch(() => {});
  }
}

async function turnScenario() {
  const room = await createRoom('turn interop');
  const res = await fetch(`${opts.base}/v1/rooms/${room.room}/ice_servers`, { headers: { Authorization: `Bearer ${room.invite_token}` } });
  check(res.status === 200, `GET ice_servers with the invite token (${res.status})`);
  const ice = await res.json();
  check(ice.ice_servers.some((s) => s.urls.some((u) => u.startsWith('turn:')) && /^\d+:/.test(s.username || '') && s.credential),
    `the server hands out time-limited TURN credentials (${JSON.stringify(ice.ice_servers.map((s) => ({ urls: s.urls, username: s.username })))}, expires ${ice.expires_at})`);
  const anon = await fetch(`${opts.base}/v1/rooms/${room.room}/ice_servers`);
  check(anon.status === 401, `and none without a token (${anon.status})`);
  await withChromium(async (browser) => {
    const relayed = await openChromium(browser, 'relayed', room.invite_url, { relay: true });
    const relayedId = await joinAs(relayed, 'relayed', 'Relayed');
    const direct = await openChromium(browser, 'direct', room.invite_url);
    const directId = await joinAs(direct, 'direct', 'Direct');
    const names = { [relayedId]: 'Relayed (TURN)', [directId]: 'Direct (UDP)' };
    const config = await relayed.evaluate(() => window.__interop.config());
    check(config.iceTransportPolicy === 'relay' && config.iceServers.length > 0, `the relayed page uses relay-only ICE with ${config.iceServers.length} ICE server(s) from the server`);
    await receives(direct, 'direct', [relayedId], names);
    await receives(relayed, 'relayed', [directId], names);
    const pair = await relayed.evaluate(() => window.__interop.selectedPair());
    log(`relayed page's selected pair: ${JSON.stringify(pair)}`);
    check(pair && pair.local.type === 'relay', `the relayed page's media goes through the TURN relay (local ${pair && pair.local.type} ${pair && pair.local.address}:${pair && pair.local.port} -> remote ${pair && pair.remote.type} ${pair && pair.remote.address}:${pair && pair.remote.port})`);
    const directPair = await direct.evaluate(() => window.__interop.selectedPair());
    check(directPair && directPair.local.type !== 'relay', `the direct page's media goes straight to the engine (${directPair && directPair.local.type} ${directPair && directPair.local.protocol})`);

    // A third page reaches the relay over TCP only (as behind a firewall
    // that drops UDP but lets TCP to the TURN server through).
    const tcp = await openChromium(browser, 'tcp-relayed', room.invite_url, { relay: true, tcpOnly: true });
    const tcpId = await joinAs(tcp, 'tcp-relayed', 'TcpRelayed');
    names[tcpId] = 'TcpRelayed (TURN over TCP)';
    await receives(tcp, 'tcp-relayed', [directId, relayedId], names);
    await receives(direct, 'direct', [tcpId], names);
    const tcpPair = await tcp.evaluate(() => window.__interop.selectedPair());
    log(`tcp-relayed page's selected pair: ${JSON.stringify(tcpPair)}`);
    check(tcpPair && tcpPair.local.type === 'relay' && tcpPair.local.relayProtocol === 'tcp', `the tcp-relayed page reaches its relay over TCP (local ${tcpPair && tcpPair.local.type}, relayProtocol ${tcpPair && tcpPair.local.relayProtocol})`);

    // H.264: what this Chromium can send (the engine negotiates VP8 only).
    const h264 = await direct.evaluate(() => RTCRtpSender.getCapabilities('video').codecs
      .filter((c) => /h264/i.test(c.mimeType)).map((c) => c.sdpFmtpLine));
    log(`chromium H.264 send capabilities: ${JSON.stringify(h264)}`);
  });
}

async function tcpScenario() {
  const ns = opts['blocked-netns'];
  if (!ns || !/^[\w.-]+$/.test(ns)) throw new Error('--blocked-netns NAME is required for the tcp scenario');
  // The pages load the client from the engine's own address (not loopback:
  // the page without UDP is in another namespace), which is no secure
  // context for getUserMedia unless Chromium is told to treat it as one.
  const secure = [`--unsafely-treat-insecure-origin-as-secure=${opts.base}`];
  // Playwright talks to Chromium over a pipe, which crosses namespaces.
  const wrapper = join(opts.out, 'chromium-without-udp.sh');
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${ns} ${opts.chromium} "$@"\n`, { mode: 0o755 });
  const room = await createRoom('ice-tcp interop');
  await withChromium(async (browser) => {
    await withChromium(async (noUdpBrowser) => {
      const noUdp = await openChromium(noUdpBrowser, 'without-udp', room.invite_url);
      const noUdpId = await joinAs(noUdp, 'without-udp', 'NoUdp');
      const a = await openChromium(browser, 'udp-a', room.invite_url);
      const aId = await joinAs(a, 'udp-a', 'UdpA');
      const b = await openChromium(browser, 'udp-b', room.invite_url);
      const bId = await joinAs(b, 'udp-b', 'UdpB');
      const names = { [noUdpId]: 'NoUdp (ICE-TCP)', [aId]: 'UdpA', [bId]: 'UdpB' };
      const offered = await noUdp.evaluate(() => window.__interop.pcs[0].remoteDescription.sdp);
      const tcpCandidates = offered.split('\r\n').filter((l) => / tcp .* typ host tcptype passive/.test(l));
      check(tcpCandidates.length > 0, `the answer offers a passive TCP candidate (${tcpCandidates[0]})`);
      await receives(noUdp, 'without-udp', [aId, bId], names);
      await receives(a, 'udp-a', [noUdpId, bId], names);
      await receives(b, 'udp-b', [noUdpId, aId], names);
      const pair = await noUdp.evaluate(() => window.__interop.selectedPair());
      log(`without-udp page's selected pair: ${JSON.stringify(pair)}`);
      const port = tcpCandidates[0].split(' ')[5];
      check(pair && pair.local.protocol === 'tcp' && pair.remote.protocol === 'tcp' && String(pair.remote.port) === port,
        `the page without UDP reaches the engine over ICE-TCP (local ${pair && pair.local.type} ${pair && pair.local.protocol}, remote ${pair && pair.remote.address}:${pair && pair.remote.port} ${pair && pair.remote.protocol})`);
      for (const [page, label] of [[a, 'udp-a'], [b, 'udp-b']]) {
        const p = await page.evaluate(() => window.__interop.selectedPair());
        check(p && p.local.protocol === 'udp' && p.remote.protocol === 'udp', `${label} stays on UDP although TCP is offered too (${p && p.local.protocol} to ${p && p.remote.address}:${p && p.remote.port})`);
      }
      // Keep going a few seconds more: media keeps flowing over TCP.
      const before = (await a.evaluate(() => window.__interop.inbound())).find((s) => s.kind === 'video' && s.participant === noUdpId);
      await sleep(3000);
      const after = (await a.evaluate(() => window.__interop.inbound())).find((s) => s.kind === 'video' && s.participant === noUdpId);
      check(before && after && after.framesDecoded > before.framesDecoded, `udp-a keeps decoding NoUdp's video (${before && before.framesDecoded} -> ${after && after.framesDecoded} frames in 3 s, ${after && after.framesPerSecond} fps)`);
    }, wrapper, secure);
  }, opts.chromium, secure);
}

// ---- narrow: one page behind a token-bucket downlink --------------------------

const FULL_KBPS = 2500;
// Token bucket: 5,000-byte bucket (above one MTU and above rate/HZ for
// every rate used), packets that would wait longer than 500 ms are dropped
// (the simulator's narrow links in engine/tests/sim_narrow.rs queue 500 ms).
const TBF_BURST = '5000';
const TBF_LATENCY = '500ms';
const SAMPLE_MS = 200;
// A tile whose decoded-frame count stands still this long (not paused)
// counts as frozen for the whole stall; the pages send 15 fps.
const FREEZE_MS = 500;
// Audio counts as stopped when no packet arrived in a slot for this long.
const AUDIO_GAP_MS = 1000;

function runCommand(cmd, args) {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'] });
    p.on('error', reject);
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(' ')} exited with ${code}`))));
  });
}

/** Set the narrow page's downlink (the token bucket on --limit-dev). */
async function setDownlink(kbps, first = false) {
  const dev = opts['limit-dev'];
  await runCommand('tc', ['qdisc', first ? 'replace' : 'change', 'dev', dev, 'root', 'tbf',
    'rate', `${kbps}kbit`, 'burst', TBF_BURST, 'latency', TBF_LATENCY]);
  log(`downlink of the narrow page: ${kbps} kbit/s (tbf on ${dev})`);
}

/** One sample of the narrow page: its receive stats, its slots (and the
 *  `slots` messages since `since`, page time), and the server's view. */
async function sampleNarrow(page, t0, since, bandwidthUrl, token) {
  const t = Date.now() - t0;
  const p = await page.evaluate(async (s) => ({
    now: performance.now(),
    inbound: await window.__interop.inbound(),
    slots: window.piazza.state.slots.video.map((v) => ({ ...v })),
    audioSlots: window.piazza.state.slots.audio.map((a) => ({ ...a })),
    history: window.piazza.slotHistory.filter((h) => h.at > s),
  }), since);
  let server = null;
  try {
    const res = await fetch(bandwidthUrl, { headers: { Authorization: `Bearer ${token}` } });
    if (res.ok) server = await res.json();
  } catch {
    // A missed sample of the server's view is visible as a gap in the summary.
  }
  const messages = p.history.map((h) => ({ t: Math.round(t - (p.now - h.at)), at: h.at, video: h.video }));
  return { t, inbound: p.inbound, slots: p.slots, audioSlots: p.audioSlots, server, messages, pageNow: p.now };
}

/** A bandwidth-paused tile on the page: visible, dimmed, named, badged. */
const pausedTile = (page) => page.evaluate(() => {
  const tile = [...document.querySelectorAll('#grid .tile[data-mid]')].find((t) => t.classList.contains('paused') && !t.hidden);
  if (!tile) return null;
  const badge = tile.querySelector('.badge');
  const video = tile.querySelector('video');
  return {
    mid: tile.dataset.mid,
    participant: tile.dataset.participant,
    label: tile.querySelector('.label').textContent,
    badge: badge && !badge.hidden ? badge.textContent : null,
    videoOpacity: getComputedStyle(video).opacity,
    width: tile.getBoundingClientRect().width,
  };
});

/** Per slot, the server's allocation state at each sample: `-` paused for
 *  bandwidth, else the target layer (the layer it shows when none). */
function serverChanges(records) {
  const last = new Map();
  const holder = new Map(); // mid -> the last participant it showed
  const changes = []; // { t, mid, from, to, held }
  for (const r of records) {
    if (!r.server) continue;
    for (const s of r.server.slots) {
      if (!s.participant && !s.bandwidth_paused) continue;
      const state = s.bandwidth_paused ? '-' : s.target_layer || s.layer || '?';
      const prev = last.get(s.mid);
      // A paused slot shows nobody: name whom it showed last.
      if (prev !== undefined && prev !== state) changes.push({ t: r.t, mid: s.mid, from: prev, to: state, held: s.participant || holder.get(s.mid) || null });
      last.set(s.mid, state);
      if (s.participant) holder.set(s.mid, s.participant);
    }
  }
  return changes;
}

/** Pauses in the `slots` messages: a slot going from shown to paused. */
function messagePauses(messages) {
  const last = new Map();
  const out = [];
  for (const m of messages) {
    for (const v of m.video) {
      const was = last.get(v.mid);
      if (v.paused && was === false) out.push({ t: m.t, mid: v.mid, participant: v.participant, reason: v.paused_reason });
      last.set(v.mid, !!v.paused);
    }
  }
  return out;
}

function mostIn(times, windowMs) {
  let most = 0;
  for (const t of times) most = Math.max(most, times.filter((u) => u >= t && u < t + windowMs).length);
  return most;
}

/** What happened over [from, to) ms of the run. */
function phaseReport(records, messages, from, to) {
  const rs = records.filter((r) => r.t >= from && r.t < to);
  const changes = serverChanges(records).filter((c) => c.t >= from && c.t < to);
  const byMid = {};
  for (const c of changes) (byMid[c.mid] ||= []).push(c);
  const pauses = changes.filter((c) => c.to === '-');
  const msgPauses = messagePauses(messages).filter((p) => p.t >= from && p.t < to);
  const pausedAt = (r, mid) => {
    const s = r.server && r.server.slots.find((x) => x.mid === mid);
    const c = r.slots.find((x) => x.mid === mid);
    return (s && s.bandwidth_paused) || (c && c.paused);
  };
  // Freezes: decoded-frame stalls of FREEZE_MS or more while the slot is
  // not paused, per video slot; and Chromium's own freeze count.
  const video = {};
  const occupied = (r) => r.slots.filter((v) => v.participant).map((v) => v.mid);
  for (const mid of new Set(rs.flatMap((r) => r.inbound.filter((s) => s.kind === 'video' && occupied(r).includes(s.mid)).map((s) => s.mid)))) {
    let lastGrow = null;
    let lastFrames = null;
    let frozenMs = 0;
    let stalls = 0;
    let longest = 0;
    const heights = [];
    let first = null;
    let end = null;
    for (const r of rs) {
      const s = r.inbound.find((x) => x.kind === 'video' && x.mid === mid);
      if (!s) continue;
      first ||= s;
      end = s;
      if (!heights.length || heights[heights.length - 1] !== s.frameHeight) heights.push(s.frameHeight);
      if (pausedAt(r, mid)) {
        lastGrow = null;
      } else if (lastFrames === null || s.framesDecoded > lastFrames || lastGrow === null) {
        if (lastGrow !== null && s.framesDecoded > lastFrames && r.t - lastGrow >= FREEZE_MS) {
          frozenMs += r.t - lastGrow;
          stalls += 1;
          longest = Math.max(longest, r.t - lastGrow);
        }
        lastGrow = r.t;
      }
      lastFrames = s.framesDecoded;
    }
    // A stall still open at the end of the phase counts up to its end.
    if (lastGrow !== null && rs.length && rs[rs.length - 1].t - lastGrow >= FREEZE_MS) {
      frozenMs += rs[rs.length - 1].t - lastGrow;
      stalls += 1;
      longest = Math.max(longest, rs[rs.length - 1].t - lastGrow);
    }
    video[mid] = {
      frames: end && first ? end.framesDecoded - first.framesDecoded : 0,
      frozen_ms: frozenMs,
      stalls,
      longest_stall_ms: longest,
      chromium_freezes: end && first ? end.freezeCount - first.freezeCount : 0,
      chromium_freeze_ms: end && first ? Math.round((end.totalFreezesDuration - first.totalFreezesDuration) * 1000) : 0,
      frame_heights: heights,
    };
  }
  const audio = {};
  for (const mid of new Set(rs.flatMap((r) => r.inbound.filter((s) => s.kind === 'audio').map((s) => s.mid)))) {
    let lastGrow = null;
    let lastPackets = null;
    let longest = 0;
    let packets = 0;
    let oldest = 0;
    let first = null;
    let end = null;
    for (const r of rs) {
      const s = r.inbound.find((x) => x.kind === 'audio' && x.mid === mid);
      if (!s) continue;
      first ||= s;
      end = s;
      if (s.lastPacketAge !== null) oldest = Math.max(oldest, s.lastPacketAge);
      if (lastPackets !== null && s.packetsReceived > lastPackets) packets += s.packetsReceived - lastPackets;
      if (lastPackets === null || s.packetsReceived > lastPackets) {
        if (lastGrow !== null) longest = Math.max(longest, r.t - lastGrow);
        lastGrow = r.t;
      }
      lastPackets = s.packetsReceived;
    }
    if (lastGrow !== null && rs.length) longest = Math.max(longest, rs[rs.length - 1].t - lastGrow);
    audio[mid] = {
      packets,
      // The oldest the last received packet was at any sample (page clock):
      // what "audio stopped" is judged on.
      longest_silence_ms: oldest,
      // Between samples without new packets (includes the sampler's stalls).
      longest_gap_between_samples_ms: longest,
      concealed_s: end && first ? Number(((end.concealedSamples - first.concealedSamples) / 48000).toFixed(2)) : 0,
    };
  }
  const estimates = rs.map((r) => r.server && r.server.estimate_bps).filter((x) => x != null);
  const others = rs.map((r) => r.other && r.other.estimate_bps).filter((x) => x != null);
  const queue = rs.map((r) => r.server && r.server.queue_delay_ms).filter((x) => x != null);
  const median = (xs) => (xs.length ? [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] : null);
  return {
    from_ms: from,
    to_ms: to,
    samples: rs.length,
    server_samples: rs.filter((r) => r.server).length,
    pauses: pauses.length,
    paused_samples: rs.filter((r) => r.server && r.server.slots.some((x) => x.bandwidth_paused)).length,
    pauses_in_slot_messages: msgPauses.length,
    changes,
    most_changes_of_one_slot_in_10s: Math.max(0, ...Object.values(byMid).map((cs) => mostIn(cs.map((c) => c.t), 10_000))),
    video,
    audio,
    estimate_bps: { min: estimates.length ? Math.min(...estimates) : null, median: median(estimates) },
    // An unlimited page's downlink estimate, for comparison.
    other_estimate_bps: { min: others.length ? Math.min(...others) : null, median: median(others) },
    queue_delay_ms: { median: median(queue), max: queue.length ? Math.max(...queue) : null },
    server_at_end: rs.length ? rs[rs.length - 1].server : null,
  };
}

/** Time from `lift` until every slot shows `m` again, unpaused (server). */
function recovery(records, lift, to) {
  const r = records.find((x) => x.t >= lift && x.t < to && x.server
    && x.server.slots.filter((s) => s.participant).length >= 2
    && x.server.slots.filter((s) => s.participant).every((s) => !s.bandwidth_paused && s.layer === 'm' && (s.target_layer || 'm') === 'm'));
  return r ? r.t - lift : null;
}

async function narrowScenario() {
  const ns = opts['narrow-netns'];
  const dev = opts['limit-dev'];
  if (!ns || !/^[\w.-]+$/.test(ns)) throw new Error('--narrow-netns NAME is required for the narrow scenario');
  if (!dev || !/^[\w.-]+$/.test(dev)) throw new Error('--limit-dev DEV is required for the narrow scenario');
  const cut = Number(opts['cut-kbps']);
  const deep = Number(opts['deep-cut-kbps']);
  if (!(cut > 0 && deep > 0)) throw new Error('--cut-kbps and --deep-cut-kbps take kbit/s');
  const secure = [`--unsafely-treat-insecure-origin-as-secure=${opts.base}`];
  const wrapper = join(opts.out, 'chromium-narrow.sh');
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${ns} ${opts.chromium} "$@"\n`, { mode: 0o755 });
  await setDownlink(FULL_KBPS, true);
  const room = await createRoom('narrow link');
  await withChromium(async (browser) => {
    await withChromium(async (narrowBrowser) => {
      const n = await openChromium(narrowBrowser, 'narrow', room.invite_url);
      const nId = await joinAs(n, 'narrow', 'Narrow');
      const a = await openChromium(browser, 'ada', room.invite_url);
      const aId = await joinAs(a, 'ada', 'Ada');
      const b = await openChromium(browser, 'ben', room.invite_url);
      const bId = await joinAs(b, 'ben', 'Ben');
      const names = { [nId]: 'Narrow', [aId]: 'Ada', [bId]: 'Ben' };
      const bandwidthUrl = `${opts.base}/v1/rooms/${room.room}/participants/${nId}/bandwidth`;
      const otherUrl = `${opts.base}/v1/rooms/${room.room}/participants/${aId}/bandwidth`;
      const serverView = async () => {
        const res = await fetch(bandwidthUrl, { headers: { Authorization: `Bearer ${room.owner_token}` } });
        return res.ok ? res.json() : `${res.status}`;
      };
      try {
        await receives(n, 'narrow', [aId, bId], names, { ms: 45_000 });
      } catch (e) {
        throw new Error(`${e.message}; the server's view: ${JSON.stringify(await serverView())}`);
      }
      // Ada is pinned on the narrow page: Ben's slot is the least important.
      await n.evaluate((id) => window.__interop.control({ type: 'pin', participant: id }), aId);
      const records = [];
      const messages = [];
      const seen = new Set();
      const t0 = Date.now();
      let since = 0;
      let shot = null;
      const phases = {};
      const phase = async (name, ms, during) => {
        const from = Date.now() - t0;
        while (Date.now() - t0 < from + ms) {
          const r = await sampleNarrow(n, t0, since, bandwidthUrl, room.owner_token);
          if (records.length % 5 === 0) {
            const res = await fetch(otherUrl, { headers: { Authorization: `Bearer ${room.owner_token}` } }).catch(() => null);
            r.other = res && res.ok ? await res.json() : null;
          }
          for (const m of r.messages) {
            if (seen.has(m.at)) continue;
            seen.add(m.at);
            messages.push(m);
          }
          since = Math.max(since, ...r.messages.map((m) => m.at));
          delete r.messages;
          records.push(r);
          if (during) await during(r);
          await sleep(SAMPLE_MS);
        }
        phases[name] = { from, to: Date.now() - t0 };
        log(`phase ${name}: ${phases[name].from}-${phases[name].to} ms`);
      };
      const shoot = async (r) => {
        if (shot || !r.server || !r.server.slots.some((s) => s.bandwidth_paused)) return;
        // Not rendered yet: try again at the next sample.
        const tile = await pausedTile(n);
        if (!tile) return;
        const path = join(opts.out, 'narrow-paused-tile.png');
        await n.screenshot({ path });
        shot = { ...tile, t: r.t, path };
        log(`screenshot of a paused tile: ${JSON.stringify(shot)}`);
      };
      // Before any cut, the page must see its 2.5 Mbit/s link: both tiles
      // showing and an estimate of at least 1 Mbit/s (bounded wait). On a
      // machine so loaded that the estimate of an unlimited page stays low
      // too, the rules below cannot be judged; say so.
      let ready = null;
      const readyBy = Date.now() + 60_000;
      while (!ready && Date.now() < readyBy) {
        const v = await serverView();
        if (v && v.estimate_bps >= 1_000_000 && v.slots.filter((x) => x.participant && !x.bandwidth_paused).length === 2) ready = v;
        else await sleep(500);
      }
      if (!ready) {
        const other = await fetch(otherUrl, { headers: { Authorization: `Bearer ${room.owner_token}` } }).then((r) => r.json()).catch(() => null);
        throw new Error(`before any cut (2.5 Mbit/s), the narrow page's estimate did not reach 1 Mbit/s with both tiles shown within 60 s: ${JSON.stringify(await serverView())}; an unlimited page's estimate: ${other && other.estimate_bps} bit/s`);
      }
      log(`at 2.5 Mbit/s: estimate ${ready.estimate_bps} bit/s, both tiles shown`);
      await phase('before', 10_000);
      await setDownlink(cut);
      await phase('cut', 30_000);
      await setDownlink(FULL_KBPS);
      await phase('cut-recovery', 15_000);
      await setDownlink(deep);
      await phase('deep-cut', 30_000, shoot);
      await setDownlink(FULL_KBPS);
      await phase('deep-cut-recovery', 15_000);

      const report = {};
      for (const [name, p] of Object.entries(phases)) report[name] = phaseReport(records, messages, p.from, p.to);
      const cutRecovery = recovery(records, phases['cut-recovery'].from, phases['cut-recovery'].to);
      const deepRecovery = recovery(records, phases['deep-cut-recovery'].from, phases['deep-cut-recovery'].to);
      // The slot that holds Ada (pinned) and Ben's, as the server's slots say.
      const deepPauses = report['deep-cut'].changes.filter((c) => c.to === '-');
      const summary = {
        command: 'cargo test -p piazza --features server --test server_interop -- --ignored --nocapture chromium_behind_a_narrow_downlink',
        tbf: { burst_bytes: Number(TBF_BURST), latency: TBF_LATENCY, full_kbps: FULL_KBPS, cut_kbps: cut, deep_cut_kbps: deep },
        participants: names,
        pinned: aId,
        phases: report,
        recovery_ms: { cut: cutRecovery, deep_cut: deepRecovery },
        deep_cut_pauses: deepPauses,
        paused_tile: shot,
        slot_messages: messages.length,
      };
      const summaryPath = join(opts.out, 'narrow-summary.json');
      writeFileSync(summaryPath, JSON.stringify(summary, null, 2));
      // Every sample and slots message, for a closer look.
      writeFileSync(join(opts.out, 'narrow-samples.json'), JSON.stringify({ phases, records, messages }));
      const brief = (r) => ({
        pauses: r.pauses,
        most_changes_of_one_slot_in_10s: r.most_changes_of_one_slot_in_10s,
        video: Object.fromEntries(Object.entries(r.video).map(([m, v]) => [m, `frames ${v.frames}, frozen ${v.frozen_ms} ms (${v.stalls} stalls), chromium freezes ${v.chromium_freezes} (${v.chromium_freeze_ms} ms), heights ${v.frame_heights.join('/')}`])),
        audio: r.audio,
        estimate_bps: r.estimate_bps,
        queue_delay_ms: r.queue_delay_ms,
        changes: r.changes.map((c) => `${(c.t / 1000).toFixed(1)}s ${c.mid} ${c.from}->${c.to}`),
      });
      for (const [name, r] of Object.entries(report)) log(`${name}: ${JSON.stringify(brief(r))}`);
      log(`recovery: ${JSON.stringify(summary.recovery_ms)}; summary in ${summaryPath}`);

      // Issue 14's rules. A cut to what still fits: no pause at all, at most
      // one layer change per slot in any 10 s, under 1 s of freezes per tile,
      // audio never stops, back on `m` within 5 s of the limit lifting.
      const c = report.cut;
      check(c.samples >= 30 && c.server_samples >= 0.9 * c.samples, `the page and the server's bandwidth view sampled through the cut (${c.samples} samples, ${c.server_samples} of the server)`);
      check(c.pauses === 0 && c.pauses_in_slot_messages === 0, `no pause at ${cut} kbit/s (${c.pauses} by the server, ${c.pauses_in_slot_messages} in slots messages)`);
      check(c.most_changes_of_one_slot_in_10s <= 1, `at most one layer change per slot in 10 s at ${cut} kbit/s (${c.most_changes_of_one_slot_in_10s}; ${JSON.stringify(c.changes)})`);
      check(Object.keys(c.video).length === 2 && Object.values(c.video).every((v) => v.frames > 0),
        `two video tiles decode through the cut (${JSON.stringify(Object.fromEntries(Object.entries(c.video).map(([m, v]) => [m, v.frames])))} frames)`);
      check(c.paused_samples === 0, `no slot paused at any sample of the cut (${c.paused_samples} samples with one)`);
      for (const [mid, v] of Object.entries(c.video)) {
        check(v.chromium_freeze_ms < 1000, `slot ${mid} frozen under 1 s at ${cut} kbit/s (Chromium: ${v.chromium_freezes} freezes, ${v.chromium_freeze_ms} ms; stalls seen by sampling: ${v.frozen_ms} ms in ${v.stalls})`);
      }
      for (const [name, r] of [['cut', c], ['deep-cut', report['deep-cut']]]) {
        const slots = Object.entries(r.audio);
        check(slots.length >= 2 && slots.every(([, x]) => x.packets > 0 && x.longest_silence_ms < AUDIO_GAP_MS),
          `audio never stops in the ${name} phase (${JSON.stringify(r.audio)})`);
      }
      check(cutRecovery !== null && cutRecovery <= 5000, `both slots back on m within 5 s after the ${cut} kbit/s limit lifts (${cutRecovery} ms)`);
      // Below the need: the least important slot (Ben's; Ada is pinned)
      // pauses first and stays paused until the link recovers.
      check(deepPauses.length >= 1, `a slot pauses at ${deep} kbit/s (${JSON.stringify(report['deep-cut'].changes)})`);
      // When the link falls below even audio and one `l` (a loss burst caps
      // the estimate), nothing fits and both slots pause in the same
      // allocation: that is not Ada's slot pausing first.
      const benPause = deepPauses.find((p) => p.held === bId);
      const adaPause = deepPauses.find((p) => p.held === aId);
      check(benPause && (!adaPause || benPause.t <= adaPause.t),
        `Ben's slot (the least important) pauses no later than Ada's (pinned) (${JSON.stringify(deepPauses)})`);
      for (const p of deepPauses) {
        const after = report['deep-cut'].changes.filter((x) => x.mid === p.mid && x.t > p.t);
        check(after.length === 0, `slot ${p.mid} stays paused until the link recovers (${JSON.stringify(after)})`);
      }
      check(deepRecovery !== null && deepRecovery <= 5000, `both slots back on m within 5 s after the ${deep} kbit/s limit lifts (${deepRecovery} ms)`);
      check(shot && shot.badge && /paused/.test(shot.badge) && (shot.label === 'Ben' || shot.label === 'Ada') && Number(shot.videoOpacity) < 1 && shot.width > 0,
        `the paused tile stays on the page, named and marked paused (${JSON.stringify(shot)})`);
    }, wrapper, secure);
  }, opts.chromium, secure);
}

const scenarios = { aiortc: aiortcScenario, firefox: firefoxScenario, turn: turnScenario, tcp: tcpScenario, narrow: narrowScenario };

await run(async () => {
  const scenario = scenarios[opts.scenario];
  if (!scenario) throw new Error(`unknown scenario ${opts.scenario}`);
  try {
    await scenario();
  } catch (e) {
    for (const [label, page] of pages) {
      await page.screenshot({ path: join(opts.out, `failure-${opts.scenario}-${label}.png`) }).catch(() => {});
    }
    throw e;
  }
  check(pageErrors.length === 0, `no uncaught page errors ${JSON.stringify(pageErrors)}`);
});
