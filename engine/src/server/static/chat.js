// Piazza chat panel: messages over the control channel to everyone or to
// one participant (docs/api.md, "Chat"). In an end-to-end encrypted room
// the text is sealed with the sender's media key before it leaves
// (e2ee.js) and opened after it arrives; the server relays ciphertext.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const MAX_CHARS = 1000;

  function create({ send, me, nameOf, participants, e2ee }) {
    const messages = []; // {id, from, name, to, time, text, encrypted, history, undecryptable}
    const errors = [];
    let nextLocal = 1;

    function fmtTime(ms) {
      const d = new Date(ms);
      return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    }

    function render() {
      const ol = $('chat-log');
      if (!ol) return;
      const atBottom = ol.scrollHeight - ol.scrollTop - ol.clientHeight < 40;
      ol.textContent = '';
      for (const m of [...messages].sort((a, b) => a.id - b.id)) {
        const li = document.createElement('li');
        li.dataset.id = String(m.id);
        li.dataset.from = m.from;
        li.classList.toggle('private', !!m.to);
        li.classList.toggle('mine', m.from === me());
        li.classList.toggle('history', !!m.history);
        const head = document.createElement('span');
        head.className = 'head';
        let who = m.from === me() ? 'You' : (nameOf(m.from, m.name) || m.name);
        if (m.to) who += m.from === me() ? ` → ${nameOf(m.to) || m.to} (private)` : ' (private)';
        head.textContent = `${who} · ${fmtTime(m.time)}${m.encrypted ? ' · 🔒' : ''}`;
        const text = document.createElement('span');
        text.className = 'text';
        if (m.text === null) {
          text.classList.add('undecryptable');
          text.textContent = 'Encrypted message: this page has no key for it.';
        } else {
          text.textContent = m.text; // textContent: never markup
        }
        li.append(head, text);
        ol.append(li);
      }
      if (atBottom) ol.scrollTop = ol.scrollHeight;
    }

    function renderRecipients() {
      const sel = $('chat-to');
      if (!sel) return;
      const keep = sel.value;
      sel.textContent = '';
      const all = document.createElement('option');
      all.value = '';
      all.textContent = 'Everyone';
      sel.append(all);
      for (const p of participants()) {
        if (p.id === me()) continue;
        const o = document.createElement('option');
        o.value = p.id;
        o.textContent = p.name;
        sel.append(o);
      }
      sel.value = [...sel.options].some((o) => o.value === keep) ? keep : '';
    }

    function showError(text) {
      const el = $('chat-error');
      if (!el) return;
      el.hidden = !text;
      el.textContent = text || '';
    }

    async function submit(text, to) {
      text = text.trim();
      if (!text) return false;
      if ([...text].length > MAX_CHARS) {
        showError(`Messages can be at most ${MAX_CHARS} characters.`);
        return false;
      }
      const msg = { type: 'chat', text, to: to || null, local_id: `c${nextLocal++}` };
      const session = e2ee();
      if (session) {
        msg.text = await session.sealText(text, msg.to);
        msg.encrypted = true;
      }
      showError('');
      return send(msg);
    }

    async function onMessage(msg) {
      if (msg.type === 'chat_error') {
        errors.push(msg);
        const retry = msg.retry_after_ms ? ` (try again in ${Math.ceil(msg.retry_after_ms / 1000)} s)` : '';
        showError(`Not sent: ${msg.message}${retry}`);
        return;
      }
      if (msg.type !== 'chat') return;
      const m = { id: msg.id, from: msg.from, name: msg.name, to: msg.to, time: msg.time, encrypted: msg.encrypted, history: msg.history, text: msg.text };
      if (msg.encrypted) {
        const session = e2ee();
        m.text = session ? await session.openText(msg.from, msg.to, msg.text) : null;
      }
      if (messages.some((x) => x.id === m.id)) return;
      messages.push(m);
      if (messages.length > 500) messages.shift();
      render();
    }

    function reset() {
      messages.length = 0;
      errors.length = 0;
      showError('');
      render();
    }

    const form = $('chat-form');
    if (form && !form.dataset.bound) {
      form.dataset.bound = '1';
      form.addEventListener('submit', async (ev) => {
        ev.preventDefault();
        const input = $('chat-text');
        const sent = await submit(input.value, $('chat-to').value);
        if (sent) input.value = '';
      });
    }

    return { submit, onMessage, renderRecipients, reset, messages, errors };
  }

  window.PiazzaChat = { create };
})();
