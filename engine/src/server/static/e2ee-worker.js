// Piazza end-to-end encryption of media frames: the encoded-transform
// worker. See docs/e2ee.md for the design and the threat model.
//
// Every encoded frame a sender produces is encrypted before the browser
// packetizes it; every frame a receiver gets is decrypted before the
// decoder sees it. Frame format, following SFrame (RFC 9605):
//
//   clear bytes | SFrame header (KID, CTR) | AES-128-GCM ciphertext + tag
//
// The clear bytes are the first bytes of the VP8 payload header (10 on a
// keyframe, 3 on a delta frame) so the SFU's keyframe detection keeps
// working; Opus frames have none. They are authenticated as additional
// data together with the header (RFC 9605 section 4.4.3: AAD = header ||
// metadata). Keys follow RFC 9605 section 4.4.2 with the cipher suite
// AES_128_GCM_SHA256_128 (0x0004): sframe_key and sframe_salt are
// HKDF-SHA256 of the sender's 16-byte base key, labelled with the KID.
//
// The worker serves RTCRtpScriptTransform (`rtctransform` events) and, as
// a fallback, streams posted from RTCRtpSender/Receiver.createEncodedStreams.
'use strict';

const SUITE = 0x0004; // AES_128_GCM_SHA256_128
const NK = 16;
const NN = 12;
const enc = new TextEncoder();

const keys = new Map(); // kid -> {key: CryptoKey, salt: Uint8Array, raw}
const chatKeys = new Map(); // kid -> {key, salt}: chat has keys of its own
let sendKid = null;
let counter = 0n; // one counter for every frame under the current send key
let chatCounter = 0n; // chat messages under the current send key
let undecryptable = 'drop'; // or 'pass': hand ciphertext to the decoder
const stats = {
  encrypted: 0,
  decrypted: 0,
  failed: 0, // authentication failed (wrong key, tampering)
  noKey: 0, // KID unknown here
  passed: 0, // handed to the decoder undecrypted ('pass' mode)
  malformed: 0,
  unencryptedSent: 0, // frames sent before any key (never, once set)
  decryptedByKid: {},
  encryptedByKid: {},
};
// The last frames received, as ciphertext (tests hand them to another page
// to show that page cannot decrypt them).
const captured = [];
const CAPTURE = 60;

function kidBytes(kid) {
  const out = [];
  let v = BigInt(kid);
  do {
    out.unshift(Number(v & 0xffn));
    v >>= 8n;
  } while (v > 0n);
  return out;
}

function bigBytes(v, n) {
  const out = new Uint8Array(n);
  for (let i = n - 1; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

/** RFC 9605 section 4.3: config byte |X|K(3)|Y|C(3)|, then KID, then CTR. */
function encodeHeader(kid, ctr) {
  const out = [];
  let config = 0;
  const k = BigInt(kid);
  let kidExtra = [];
  if (k < 8n) config |= Number(k) << 4;
  else {
    kidExtra = kidBytes(kid);
    config |= 0x80 | ((kidExtra.length - 1) << 4);
  }
  let ctrExtra = [];
  if (ctr < 8n) config |= Number(ctr);
  else {
    ctrExtra = kidBytes(ctr);
    config |= 0x08 | (ctrExtra.length - 1);
  }
  out.push(config, ...kidExtra, ...ctrExtra);
  return new Uint8Array(out);
}

function decodeHeader(bytes, at) {
  if (at >= bytes.length) return null;
  const config = bytes[at];
  let pos = at + 1;
  let kid;
  if (config & 0x80) {
    const len = ((config >> 4) & 0x7) + 1;
    if (pos + len > bytes.length) return null;
    kid = 0n;
    for (let i = 0; i < len; i++) kid = (kid << 8n) | BigInt(bytes[pos + i]);
    pos += len;
  } else kid = BigInt((config >> 4) & 0x7);
  let ctr;
  if (config & 0x08) {
    const len = (config & 0x7) + 1;
    if (pos + len > bytes.length) return null;
    ctr = 0n;
    for (let i = 0; i < len; i++) ctr = (ctr << 8n) | BigInt(bytes[pos + i]);
    pos += len;
  } else ctr = BigInt(config & 0x7);
  return { kid: Number(kid), ctr, end: pos };
}

/** RFC 9605 section 4.4.2: key and salt from a base key and its KID. */
async function deriveKeySalt(base, kid, purpose) {
  const ikm = await crypto.subtle.importKey('raw', base, 'HKDF', false, ['deriveBits']);
  const label = (what) => {
    const prefix = enc.encode(`${purpose} ${what} `);
    const out = new Uint8Array(prefix.length + 10);
    out.set(prefix);
    out.set(bigBytes(BigInt(kid), 8), prefix.length);
    out.set(bigBytes(BigInt(SUITE), 2), prefix.length + 8);
    return out;
  };
  const hkdf = (info, bytes) => crypto.subtle.deriveBits({ name: 'HKDF', hash: 'SHA-256', salt: new Uint8Array(0), info }, ikm, bytes * 8);
  const keyBits = await hkdf(label('key'), NK);
  const salt = new Uint8Array(await hkdf(label('salt'), NN));
  const key = await crypto.subtle.importKey('raw', keyBits, 'AES-GCM', false, ['encrypt', 'decrypt']);
  return { key, salt };
}

/** The chat key of a KID: its own derivation, so chat and media nonces never meet. */
async function chatKey(kid) {
  if (kid === null) return null;
  if (chatKeys.has(kid)) return chatKeys.get(kid);
  const media = keys.get(kid);
  if (!media) return null;
  const k = await deriveKeySalt(media.raw, kid, 'Piazza chat 1.0 Secret');
  chatKeys.set(kid, k);
  return k;
}

function nonce(salt, ctr) {
  const n = bigBytes(ctr, NN);
  for (let i = 0; i < NN; i++) n[i] ^= salt[i];
  return n;
}

/** How many leading bytes stay clear: the VP8 payload header's first bytes. */
function clearBytes(frame, kind) {
  if (kind !== 'video') return 0;
  return frame.type === 'key' ? 10 : 3;
}

async function encryptFrame(frame, kind, controller) {
  const k = sendKid !== null ? keys.get(sendKid) : null;
  if (!k) {
    // No key yet (never happens once the page set one before sending):
    // send nothing rather than plaintext.
    stats.unencryptedSent += 1;
    return;
  }
  const data = new Uint8Array(frame.data);
  const n = Math.min(clearBytes(frame, kind), data.length);
  const ctr = counter;
  counter += 1n;
  const header = encodeHeader(sendKid, ctr);
  const aad = new Uint8Array(header.length + n);
  aad.set(header);
  aad.set(data.subarray(0, n), header.length);
  const ct = new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-GCM', iv: nonce(k.salt, ctr), additionalData: aad, tagLength: 128 }, k.key, data.subarray(n)));
  const out = new Uint8Array(n + header.length + ct.length);
  out.set(data.subarray(0, n));
  out.set(header, n);
  out.set(ct, n + header.length);
  frame.data = out.buffer;
  stats.encrypted += 1;
  stats.encryptedByKid[sendKid] = (stats.encryptedByKid[sendKid] || 0) + 1;
  controller.enqueue(frame);
}

/** Decrypt `data` (clear bytes first); null when it cannot be. */
async function open(data, n) {
  const h = decodeHeader(data, n);
  if (!h) return { error: 'malformed' };
  const k = keys.get(h.kid);
  if (!k) return { error: 'noKey', kid: h.kid };
  const aad = data.slice(0, h.end);
  // AAD is header || metadata: move the clear bytes after the header.
  aad.set(data.subarray(n, h.end), 0);
  aad.set(data.subarray(0, n), h.end - n);
  try {
    const pt = new Uint8Array(await crypto.subtle.decrypt({ name: 'AES-GCM', iv: nonce(k.salt, h.ctr), additionalData: aad, tagLength: 128 }, k.key, data.subarray(h.end)));
    const out = new Uint8Array(n + pt.length);
    out.set(data.subarray(0, n));
    out.set(pt, n);
    return { plain: out, kid: h.kid };
  } catch (_) {
    return { error: 'failed', kid: h.kid };
  }
}

async function decryptFrame(frame, kind, controller) {
  const data = new Uint8Array(frame.data);
  const n = Math.min(clearBytes(frame, kind), data.length);
  if (captured.length >= CAPTURE) captured.shift();
  const h = decodeHeader(data, n);
  captured.push({ kind, clear: n, kid: h ? h.kid : null, data: data.slice() });
  const r = await open(data, n);
  if (r.plain) {
    frame.data = r.plain.buffer;
    stats.decrypted += 1;
    stats.decryptedByKid[r.kid] = (stats.decryptedByKid[r.kid] || 0) + 1;
    controller.enqueue(frame);
    return;
  }
  stats[r.error] += 1;
  if (undecryptable === 'pass') {
    stats.passed += 1;
    controller.enqueue(frame);
  }
}

function pipe(readable, writable, role, kind) {
  const transform = role === 'send' ? encryptFrame : decryptFrame;
  readable
    .pipeThrough(new TransformStream({ transform: (frame, controller) => transform(frame, kind, controller) }))
    .pipeTo(writable)
    .catch(() => {});
}

self.onrtctransform = (ev) => {
  const t = ev.transformer;
  pipe(t.readable, t.writable, t.options.role, t.options.kind);
};

self.onmessage = async (ev) => {
  const m = ev.data;
  let reply = { id: m.id };
  try {
    switch (m.op) {
      case 'streams':
        pipe(m.readable, m.writable, m.role, m.kind);
        break;
      case 'setKey':
        keys.set(m.kid, { ...(await deriveKeySalt(m.raw, m.kid, 'SFrame 1.0 Secret')), raw: m.raw });
        break;
      case 'sendKey':
        if (!keys.has(m.kid)) throw new Error(`no key ${m.kid}`);
        if (sendKid !== m.kid) {
          counter = 0n;
          chatCounter = 0n;
        }
        sendKid = m.kid;
        break;
      case 'seal': {
        // A chat text: SFrame header || AES-GCM(text), AAD = header || context.
        const k = await chatKey(sendKid);
        if (!k) throw new Error('no send key');
        const ctr = chatCounter;
        chatCounter += 1n;
        const header = encodeHeader(sendKid, ctr);
        const context = enc.encode(m.context);
        const aad = new Uint8Array(header.length + context.length);
        aad.set(header);
        aad.set(context, header.length);
        const ct = new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-GCM', iv: nonce(k.salt, ctr), additionalData: aad, tagLength: 128 }, k.key, enc.encode(m.text)));
        const out = new Uint8Array(header.length + ct.length);
        out.set(header);
        out.set(ct, header.length);
        reply.sealed = out;
        reply.kid = sendKid;
        break;
      }
      case 'unseal': {
        const data = new Uint8Array(m.data);
        const h = decodeHeader(data, 0);
        if (!h) throw new Error('malformed');
        reply.kid = h.kid;
        const k = await chatKey(h.kid);
        if (!k) throw new Error('no key');
        const context = enc.encode(m.context);
        const aad = new Uint8Array(h.end + context.length);
        aad.set(data.subarray(0, h.end));
        aad.set(context, h.end);
        const pt = await crypto.subtle.decrypt({ name: 'AES-GCM', iv: nonce(k.salt, h.ctr), additionalData: aad, tagLength: 128 }, k.key, data.subarray(h.end));
        reply.text = new TextDecoder().decode(pt);
        break;
      }
      case 'mode':
        undecryptable = m.undecryptable;
        break;
      case 'stats':
        reply.stats = { ...stats, sendKid, kids: [...keys.keys()] };
        break;
      case 'capture':
        reply.frames = captured.slice();
        break;
      case 'tryDecrypt': {
        let ok = 0;
        const kids = [];
        for (const f of m.frames) {
          const r = await open(new Uint8Array(f.data), f.clear);
          if (r.plain) ok += 1;
          if (r.kid !== undefined) kids.push(r.kid);
        }
        reply.decrypted = ok;
        reply.kids = kids;
        break;
      }
      default:
        throw new Error(`unknown op ${m.op}`);
    }
  } catch (e) {
    reply.error = String(e && e.message ? e.message : e);
  }
  self.postMessage(reply);
};
