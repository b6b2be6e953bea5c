// Piazza end-to-end encryption: keys and their exchange (main thread).
// The frames themselves are encrypted in e2ee-worker.js. See docs/e2ee.md.
//
// - The invite link carries a room secret in its fragment (`#t=TOKEN&k=SECRET`,
//   never sent to the server). From it: an HMAC key that authenticates
//   every participant's ECDH public key, and a salt for the wrapping keys.
// - Each participant has an ECDH P-256 key pair and its own 16-byte media
//   key; its KID is (participant number << 16) | epoch.
// - `hello` (to everyone, through the server's `key` relay): my public key
//   and HMAC(auth, "piazza-hello|room|me|pub"). A hello whose MAC fails is
//   a substituted key: ignored, and shown.
// - To each verified peer I send my media key wrapped with AES-GCM under
//   HKDF(ECDH(mine, theirs)), bound to room, both ids and the KID.
// - When anybody leaves or is removed, I make a new key (epoch + 1), send
//   it to those still here, and switch to it a moment later: the departed
//   never receive it.
'use strict';

(() => {
  const enc = new TextEncoder();
  const ROTATE_DELAY_MS = 1000; // time for the new key to reach everyone

  function b64(bytes) {
    let s = '';
    const b = new Uint8Array(bytes);
    for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]);
    return btoa(s);
  }
  function unb64(text) {
    const s = atob(text.replace(/-/g, '+').replace(/_/g, '/'));
    const out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }
  function b64url(bytes) {
    return b64(bytes).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }
  const pnum = (id) => parseInt(String(id).replace(/^p/, ''), 10);

  /** A new random room secret for an invite link. */
  function newSecret() {
    return b64url(crypto.getRandomValues(new Uint8Array(32)));
  }

  class Session {
    constructor({ room, secret, send, onChange }) {
      this.room = room;
      this.secret = secret || null;
      this.send = send; // (to|null, dataString) -> void
      this.onChange = onChange || (() => {});
      this.me = null;
      this.epoch = 0;
      this.myKeys = new Map(); // kid -> raw key (mine: active and pending)
      this.activeKid = null;
      this.peers = new Map(); // id -> {pub, wrapKey, verified}
      this.rejected = new Set(); // ids whose hello failed verification
      this.received = new Map(); // kid -> from (keys received)
      this.present = new Set();
      this.worker = new Worker('/assets/e2ee-worker.js');
      this.pending = new Map();
      this.nextReq = 1;
      this.worker.onmessage = (ev) => {
        const p = this.pending.get(ev.data.id);
        if (!p) return;
        this.pending.delete(ev.data.id);
        if (ev.data.error) p.reject(new Error(ev.data.error));
        else p.resolve(ev.data);
      };
      this.events = []; // key-exchange log for tests and the UI (no key material)
    }

    call(msg, transfer) {
      const id = this.nextReq++;
      return new Promise((resolve, reject) => {
        this.pending.set(id, { resolve, reject });
        this.worker.postMessage({ ...msg, id }, transfer || []);
      });
    }

    log(what) {
      this.events.push({ at: Math.round(performance.now()), ...what });
      if (this.events.length > 200) this.events.shift();
      this.onChange(what);
    }

    async init() {
      this.pair = await crypto.subtle.generateKey({ name: 'ECDH', namedCurve: 'P-256' }, false, ['deriveBits']);
      this.pub = b64(await crypto.subtle.exportKey('raw', this.pair.publicKey));
      if (this.secret) {
        const ikm = await crypto.subtle.importKey('raw', unb64(this.secret), 'HKDF', false, ['deriveBits', 'deriveKey']);
        const info = (s) => ({ name: 'HKDF', hash: 'SHA-256', salt: new Uint8Array(0), info: enc.encode(s) });
        this.auth = await crypto.subtle.deriveKey(info('piazza e2ee auth v1'), ikm, { name: 'HMAC', hash: 'SHA-256', length: 256 }, false, ['sign', 'verify']);
        this.wrapSalt = new Uint8Array(await crypto.subtle.deriveBits(info('piazza e2ee wrap salt v1'), ikm, 256));
      }
      // Without the secret nothing can be verified and no key arrives:
      // every frame fails to decrypt and is discarded (RFC 9605 section
      // 4.4.3), so the decoder gets nothing. (Handed to the decoder as they
      // are instead, with the worker's 'pass' mode, the VP8 decoder accepts
      // a few ciphertext keyframes as garbage pictures: 8 of 2236 frames in
      // one run of browser/e2ee.mjs.)
    }

    /** Encoded-transform support: RTCRtpScriptTransform, else encoded streams. */
    static pcConfig() {
      return window.RTCRtpScriptTransform ? {} : { encodedInsertableStreams: true };
    }

    attach(senderOrReceiver, role, kind) {
      if (window.RTCRtpScriptTransform) {
        senderOrReceiver.transform = new RTCRtpScriptTransform(this.worker, { role, kind });
      } else if (senderOrReceiver.createEncodedStreams) {
        const { readable, writable } = senderOrReceiver.createEncodedStreams();
        this.worker.postMessage({ op: 'streams', role, kind, readable, writable }, [readable, writable]);
      } else {
        throw new Error('this browser cannot encrypt media frames (no encoded transforms)');
      }
    }

    kidOf(epoch) {
      return pnum(this.me) * 65536 + (epoch % 65536);
    }

    /** My id is known (from the join response): make and use my first key. */
    async setMe(me) {
      this.me = me;
      const kid = this.kidOf(this.epoch);
      const raw = crypto.getRandomValues(new Uint8Array(16));
      this.myKeys.set(kid, raw);
      await this.call({ op: 'setKey', kid, raw });
      await this.call({ op: 'sendKey', kid });
      this.activeKid = kid;
    }

    helloInput(from, pub) {
      return enc.encode(`piazza-hello|${this.room}|${from}|${pub}`);
    }

    /** The control channel is open: tell everyone my public key. */
    async announce(to = null, reply = false) {
      if (!this.auth) {
        this.log({ event: 'no_secret' });
        return;
      }
      const mac = b64(await crypto.subtle.sign('HMAC', this.auth, this.helloInput(this.me, this.pub)));
      this.send(to, JSON.stringify({ t: 'hello', pub: this.pub, mac, reply }));
    }

    async wrapKeyFor(id, pub) {
      const theirs = await crypto.subtle.importKey('raw', unb64(pub), { name: 'ECDH', namedCurve: 'P-256' }, false, []);
      const shared = await crypto.subtle.deriveBits({ name: 'ECDH', public: theirs }, this.pair.privateKey, 256);
      const ikm = await crypto.subtle.importKey('raw', shared, 'HKDF', false, ['deriveKey']);
      const [a, b] = [this.me, id].sort();
      return crypto.subtle.deriveKey(
        { name: 'HKDF', hash: 'SHA-256', salt: this.wrapSalt, info: enc.encode(`piazza-wrap|${this.room}|${a}|${b}`) },
        ikm, { name: 'AES-GCM', length: 128 }, false, ['encrypt', 'decrypt']);
    }

    keyAad(from, to, kid) {
      return enc.encode(`piazza-key|${this.room}|${from}|${to}|${kid}`);
    }

    async sendKeyTo(id, kid) {
      const peer = this.peers.get(id);
      const raw = this.myKeys.get(kid);
      if (!peer || !raw) return;
      const iv = crypto.getRandomValues(new Uint8Array(12));
      const wrapped = await crypto.subtle.encrypt({ name: 'AES-GCM', iv, additionalData: this.keyAad(this.me, id, kid) }, peer.wrapKey, raw);
      this.send(id, JSON.stringify({ t: 'key', kid, iv: b64(iv), wrapped: b64(wrapped) }));
    }

    /** A `key` control message relayed from `from`. */
    async onMessage(from, data) {
      let m;
      try {
        m = JSON.parse(data);
      } catch (_) {
        return;
      }
      if (!this.auth) return;
      if (m.t === 'hello') {
        const ok = typeof m.pub === 'string' && typeof m.mac === 'string' &&
          await crypto.subtle.verify('HMAC', this.auth, unb64(m.mac), this.helloInput(from, m.pub)).catch(() => false);
        if (!ok) {
          this.rejected.add(from);
          this.log({ event: 'rejected', from });
          return;
        }
        const known = this.peers.get(from);
        if (known && known.pub === m.pub) return;
        this.peers.set(from, { pub: m.pub, wrapKey: await this.wrapKeyFor(from, m.pub) });
        this.rejected.delete(from);
        this.log({ event: 'verified', from });
        if (!m.reply) await this.announce(from, true);
        for (const kid of this.myKeys.keys()) await this.sendKeyTo(from, kid);
      } else if (m.t === 'key') {
        const peer = this.peers.get(from);
        if (!peer || typeof m.kid !== 'number') return;
        if (Math.floor(m.kid / 65536) !== pnum(from)) {
          this.log({ event: 'wrong_kid', from, kid: m.kid });
          return;
        }
        try {
          const raw = await crypto.subtle.decrypt({ name: 'AES-GCM', iv: unb64(m.iv), additionalData: this.keyAad(from, this.me, m.kid) }, peer.wrapKey, unb64(m.wrapped));
          await this.call({ op: 'setKey', kid: m.kid, raw: new Uint8Array(raw) });
          this.received.set(m.kid, from);
          this.log({ event: 'key', from, kid: m.kid });
        } catch (_) {
          this.log({ event: 'unwrap_failed', from, kid: m.kid });
        }
      }
    }

    /** The participant list changed: anybody gone means a new key for me. */
    async onParticipants(ids) {
      const now = new Set(ids);
      const gone = [...this.present].filter((id) => !now.has(id) && id !== this.me);
      this.present = now;
      for (const id of [...this.peers.keys()]) if (!now.has(id)) this.peers.delete(id);
      if (gone.length && this.me) await this.rotate(gone);
    }

    async rotate(gone) {
      this.epoch += 1;
      const kid = this.kidOf(this.epoch);
      const raw = crypto.getRandomValues(new Uint8Array(16));
      this.myKeys.set(kid, raw);
      await this.call({ op: 'setKey', kid, raw });
      for (const id of this.peers.keys()) await this.sendKeyTo(id, kid);
      this.log({ event: 'rotating', kid, gone });
      setTimeout(async () => {
        if (!this.myKeys.has(kid)) return;
        await this.call({ op: 'sendKey', kid }).catch(() => {});
        // Older keys of mine are not sent to anybody new.
        for (const k of [...this.myKeys.keys()]) if (k < kid) this.myKeys.delete(k);
        this.activeKid = kid;
        this.log({ event: 'rotated', kid });
      }, ROTATE_DELAY_MS);
    }

    chatContext(from, to) {
      return `piazza-chat|${this.room}|${from}|${to || ''}`;
    }

    async sealText(text, to) {
      const r = await this.call({ op: 'seal', text, context: this.chatContext(this.me, to) });
      return b64(r.sealed);
    }

    /** Decrypt a chat text; null when this page has no key for it. */
    async openText(from, to, data) {
      try {
        const r = await this.call({ op: 'unseal', data: unb64(data), context: this.chatContext(from, to) });
        return r.text;
      } catch (_) {
        return null;
      }
    }

    stats() {
      return this.call({ op: 'stats' }).then((r) => ({
        ...r.stats,
        me: this.me,
        activeKid: this.activeKid,
        verified: [...this.peers.keys()],
        rejected: [...this.rejected],
        received: [...this.received.keys()],
        hasSecret: !!this.secret,
      }));
    }

    capture() {
      return this.call({ op: 'capture' }).then((r) => r.frames);
    }

    tryDecrypt(frames) {
      return this.call({ op: 'tryDecrypt', frames }).then((r) => ({ decrypted: r.decrypted, kids: r.kids }));
    }
  }

  window.PiazzaE2EE = {
    supported: () => !!(window.crypto && crypto.subtle && (window.RTCRtpScriptTransform || (window.RTCRtpSender && RTCRtpSender.prototype.createEncodedStreams))),
    newSecret,
    pcConfig: Session.pcConfig,
    async start(options) {
      const s = new Session(options);
      await s.init();
      return s;
    },
  };
})();
