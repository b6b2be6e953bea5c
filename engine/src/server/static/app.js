// Piazza browser client. Plain JavaScript, no build step.
//
// One RTCPeerConnection per participant, one offer, never renegotiated:
//   audio sendonly (microphone), video sendonly with simulcast rids l/m/h
//   (camera), video sendonly (screen share, filled with replaceTrack),
//   K video + A audio recvonly transceivers (receive slots), and the data
//   channel "control". The server's `slots` messages say which participant
//   each receive slot shows; the grid is drawn from them. See docs/api.md.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);

  // Everything the page knows; `window.piazza` exposes it for tests.
  const state = {
    phase: 'idle', // idle | lobby | joining | joined | refused | kicked | left | disconnected
    room: null, // public room id
    roomInfo: null, // GET /v1/rooms/{room}
    token: null, // the token from the invite link
    claims: null,
    participantToken: null, // X-Piazza-Token
    me: null, // my participant id
    node: null, // X-Piazza-Node: the cluster node hosting my session (null single-node)
    owner: false,
    locked: false,
    inviteUrl: null,
    participants: new Map(), // id -> {id, name, audio, video, screen}
    slots: { video: [], audio: [] },
    speaker: null,
    error: null, // {status, code, message} of the last refused request
    sharing: false,
    e2ee: false, // the room is end-to-end encrypted (e2ee.js)
    secret: null, // the room secret from the invite link's fragment (never sent)
  };

  let pc = null;
  let dc = null;
  const local = { stream: null, audio: null, video: null, screen: null };
  const tx = { audio: null, camera: null, screen: null };
  const slotReceivers = new Map(); // mid -> {kind, track}
  const tiles = new Map(); // mid -> tile element
  let selfTile = null;
  const slotHistory = []; // the last 50 `slots` messages (occupied video slots), for debugging
  let e2ee = null; // the E2EE session of the current (or last) join
  const chat = window.PiazzaChat.create({
    send: sendControl,
    me: () => state.me,
    nameOf: (id, fallback) => (state.participants.has(id) ? nameOf(id) : fallback),
    participants: () => [...state.participants.values()],
    e2ee: () => (state.e2ee ? e2ee : null),
  });

  function sendControl(msg) {
    if (!dc || dc.readyState !== 'open') return false;
    dc.send(JSON.stringify(msg));
    return true;
  }

  // ---- small helpers -------------------------------------------------------

  function notice(text, kind) {
    const el = $('notice');
    if (!text) {
      el.hidden = true;
      el.textContent = '';
      return;
    }
    el.hidden = false;
    el.textContent = text;
    el.className = kind === 'error' ? 'error' : '';
  }

  function show(section) {
    for (const id of ['home', 'lobby', 'call']) $(id).hidden = id !== section;
  }

  function decodeClaims(token) {
    try {
      let b64 = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      while (b64.length % 4) b64 += '=';
      return JSON.parse(atob(b64));
    } catch (_) {
      return null;
    }
  }

  async function api(method, path, { token, json, sdp } = {}) {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    let body;
    if (json !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(json);
    } else if (sdp !== undefined) {
      headers['Content-Type'] = 'application/sdp';
      body = sdp;
    }
    let res;
    try {
      res = await fetch(path, { method, headers, body });
    } catch (e) {
      return { ok: false, status: 0, error: { error: 'network', message: `The server cannot be reached (${e.message}).` } };
    }
    const type = res.headers.get('content-type') || '';
    let data = null;
    if (type.includes('application/json')) data = await res.json().catch(() => null);
    else data = await res.text().catch(() => '');
    const out = { ok: res.ok, status: res.status, headers: res.headers, data };
    if (!res.ok) out.error = data && data.error ? data : { error: 'http_' + res.status, message: `The server answered ${res.status}.` };
    return out;
  }

  function refusal(res) {
    state.error = { status: res.status, code: res.error.error, message: res.error.message };
    const friendly = {
      room_locked: 'This room is locked by its owner. Ask them to unlock it.',
      room_full: 'This room is full.',
      not_started: null,
      unknown_room: 'This room does not exist or has closed.',
      token_expired: 'This invite link has expired. Ask the owner for a new one.',
      kicked: 'You were removed from this room by its owner.',
    }[res.error.error];
    notice(friendly || res.error.message, 'error');
  }

  function nameOf(id) {
    if (!id) return '';
    const p = state.participants.get(id);
    return p ? p.name : id;
  }

  // ---- home: create a room, list public rooms -------------------------------

  async function showHome() {
    show('home');
    const info = await api('GET', '/v1/info');
    if (info.ok && info.data.api_key_required) $('api-key-row').hidden = false;
    if (info.ok) $('create-max').max = info.data.max_participants;
    const list = await api('GET', '/v1/rooms');
    if (list.ok && list.data.rooms.length) {
      const ul = $('public-rooms');
      ul.textContent = '';
      for (const r of list.data.rooms) {
        const li = document.createElement('li');
        const a = document.createElement('a');
        a.href = r.invite_url;
        a.textContent = r.name || r.room;
        li.append(a, ` — ${r.participants}/${r.max_participants}${r.locked ? ' (locked)' : ''}`);
        ul.append(li);
      }
    }
    $('create-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const body = { name: $('create-name').value, public: $('create-public').checked };
      if ($('create-e2ee').checked) body.e2ee = true;
      const max = parseInt($('create-max').value, 10);
      if (max > 0) body.max_participants = max;
      const res = await api('POST', '/v1/rooms', { token: $('create-key').value || undefined, json: body });
      if (!res.ok) return refusal(res);
      // An E2EE room's secret is made here and lives only in link fragments.
      const secret = body.e2ee ? `&k=${window.PiazzaE2EE.newSecret()}` : '';
      location.assign(`/r/${res.data.room}#t=${res.data.owner_token}${secret}`);
    });
  }

  // ---- lobby -----------------------------------------------------------------

  async function enterRoom(room) {
    state.room = room;
    const params = new URLSearchParams(location.hash.slice(1));
    const fromLink = params.get('t');
    const key = `piazza:token:${room}`;
    if (fromLink) {
      sessionStorage.setItem(key, fromLink);
      if (params.get('k')) sessionStorage.setItem(`piazza:secret:${room}`, params.get('k'));
      else sessionStorage.removeItem(`piazza:secret:${room}`);
      // Keep the token out of the address bar (and of screenshots).
      history.replaceState(null, '', location.pathname);
    }
    state.token = fromLink || sessionStorage.getItem(key);
    state.secret = sessionStorage.getItem(`piazza:secret:${room}`);
    if (!state.token) {
      notice('This link has no room token. Open the full invite link you were given.', 'error');
      return;
    }
    state.claims = decodeClaims(state.token);
    state.owner = !!(state.claims && state.claims.grants && state.claims.grants.includes('admin'));

    const res = await api('GET', `/v1/rooms/${room}`, { token: state.token });
    if (!res.ok) {
      refusal(res);
      return;
    }
    applyRoomInfo(res.data);
    state.phase = 'lobby';
    show('lobby');
    $('lobby-title').textContent = `Join ${res.data.name || 'the room'}`;
    const count = res.data.participants.length;
    let info = `${count} participant${count === 1 ? '' : 's'} inside.`;
    if (res.data.starts_at && Date.parse(res.data.starts_at) > Date.now()) info += ` Opens at ${new Date(res.data.starts_at).toLocaleString()}.`;
    if (res.data.locked) info += ' The room is locked.';
    if (res.data.e2ee) {
      info += state.secret
        ? ' End-to-end encrypted: the server cannot see or hear the call.'
        : ' End-to-end encrypted, but this link has no room secret: you will not see, hear or read anything. Ask for the full invite link.';
    }
    $('lobby-info').textContent = info;
    $('name').value = localStorage.getItem('piazza:name') || '';
    $('join-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const name = $('name').value.trim();
      localStorage.setItem('piazza:name', name);
      join(name);
    });
  }

  function applyRoomInfo(info) {
    state.roomInfo = info;
    state.locked = !!info.locked;
    state.e2ee = !!info.e2ee;
    if (info.invite_url) state.inviteUrl = state.e2ee && state.secret ? `${info.invite_url}&k=${state.secret}` : info.invite_url;
    $('e2ee-badge').hidden = !state.e2ee;
    $('room-name').textContent = info.name || info.room;
    $('lock').textContent = state.locked ? 'Unlock room' : 'Lock room';
    $('lock').setAttribute('aria-pressed', String(state.locked));
    if (state.inviteUrl) $('invite-url').value = state.inviteUrl;
  }

  // ---- joining ---------------------------------------------------------------

  async function getLocalMedia() {
    const video = { width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 15 } };
    for (const constraints of [{ audio: true, video }, { audio: true }, { video }]) {
      try {
        return await navigator.mediaDevices.getUserMedia(constraints);
      } catch (_) {
        // try the next, smaller set
      }
    }
    return null;
  }

  // The video codec the camera and screen share send: 'vp8' (the default)
  // or 'h264' (window.piazza.setSendCodec). Receive slots accept both.
  let sendCodec = 'vp8';

  // H.264 as the engine forwards it: packetization-mode 1, constrained
  // baseline (42e01f) or baseline (42001f).
  const isH264 = (c) => /^video\/h264$/i.test(c.mimeType) && /packetization-mode=1/.test(c.sdpFmtpLine || '') && /profile-level-id=42(e0|00)1f/i.test(c.sdpFmtpLine || '');
  const isVp8 = (c) => /^video\/vp8$/i.test(c.mimeType);
  const isRtx = (c) => /^video\/rtx$/i.test(c.mimeType);

  // The codecs a transceiver offers, in preference order. Audio: Opus.
  // Receive slots: VP8 first, then H.264 (the engine never transcodes: a
  // slot shows only publishers whose codec it negotiated). Sending: the
  // chosen codec alone, VP8 when the browser cannot encode H.264. In an
  // end-to-end encrypted room only VP8 (e2ee.js keeps VP8's header bytes
  // clear; H.264's packetizer would need its NAL units clear).
  function preferCodecs(transceiver, kind, sending) {
    if (!transceiver.setCodecPreferences || !window.RTCRtpReceiver || !RTCRtpReceiver.getCapabilities) return;
    // setCodecPreferences takes codecs from the receiver's capabilities;
    // a sending transceiver also needs the sender to encode the codec.
    const caps = RTCRtpReceiver.getCapabilities(kind);
    if (!caps) return;
    let codecs;
    if (kind !== 'video') {
      codecs = caps.codecs.filter((c) => /^audio\/opus$/i.test(c.mimeType));
    } else {
      const h264 = !state.e2ee;
      const encodes = (test) => {
        const send = window.RTCRtpSender && RTCRtpSender.getCapabilities ? RTCRtpSender.getCapabilities('video') : null;
        return !send || send.codecs.some(test);
      };
      let order;
      if (sending) order = h264 && sendCodec === 'h264' && encodes(isH264) ? [isH264] : [isVp8];
      else order = h264 ? [isVp8, isH264] : [isVp8];
      codecs = [...order.flatMap((test) => caps.codecs.filter(test)), ...caps.codecs.filter(isRtx)];
    }
    try {
      if (codecs.length) transceiver.setCodecPreferences(codecs);
    } catch (_) {
      // The browser refused: the engine still picks VP8/Opus from the full list.
    }
  }

  // `token`: the participant token when rejoining (see scheduleRejoin).
  async function join(name, token) {
    if (state.phase === 'joining' || state.phase === 'joined') return;
    state.phase = 'joining';
    state.error = null;
    $('join').disabled = true;
    notice('Joining…');

    const infoRes = await api('GET', '/v1/info');
    const info = infoRes.ok ? infoRes.data : { client_video_slots: 9, client_audio_slots: 3 };
    chat.reset();
    if (state.e2ee) {
      if (!window.PiazzaE2EE.supported()) {
        state.phase = 'refused';
        $('join').disabled = false;
        notice('This room is end-to-end encrypted and this browser cannot encrypt media frames (it lacks encoded transforms). Use a current Chromium-based browser.', 'error');
        return;
      }
      e2ee = await window.PiazzaE2EE.start({
        room: state.room,
        secret: state.secret,
        send: (to, data) => sendControl({ type: 'key', to, data }),
        onChange: (what) => {
          if (what.event === 'rejected') notice(`Warning: ${nameOf(what.from)}'s key could not be verified with the room secret; they get no keys.`, 'error');
        },
      });
    }
    const others = Math.max(1, ((state.roomInfo && state.roomInfo.max_participants) || 50) - 1);
    const videoSlots = Math.min(info.client_video_slots, others);
    const audioSlots = Math.min(info.client_audio_slots, others);

    local.stream = await getLocalMedia();
    local.audio = local.stream ? local.stream.getAudioTracks()[0] || null : null;
    local.video = local.stream ? local.stream.getVideoTracks()[0] || null : null;

    // STUN/TURN servers from the server's configuration (time-limited TURN
    // credentials): a network that lets only a relay through still joins.
    const iceRes = await api('GET', `/v1/rooms/${state.room}/ice_servers`, { token: state.token });
    const iceServers = iceRes.ok && iceRes.data && Array.isArray(iceRes.data.ice_servers) ? iceRes.data.ice_servers : [];
    const e2eeConfig = state.e2ee ? window.PiazzaE2EE.pcConfig() : {};
    pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require', iceServers, ...e2eeConfig });
    const streams = local.stream ? [local.stream] : [];
    tx.audio = pc.addTransceiver(local.audio || 'audio', { direction: 'sendonly', streams });
    tx.camera = pc.addTransceiver(local.video || 'video', {
      direction: 'sendonly',
      streams,
      sendEncodings: [
        { rid: 'l', scaleResolutionDownBy: 4, maxBitrate: 150000 },
        { rid: 'm', scaleResolutionDownBy: 2, maxBitrate: 500000 },
        { rid: 'h', scaleResolutionDownBy: 1, maxBitrate: 1500000 },
      ],
    });
    tx.screen = pc.addTransceiver('video', { direction: 'sendonly' });
    const recv = [];
    for (let i = 0; i < videoSlots; i++) recv.push(pc.addTransceiver('video', { direction: 'recvonly' }));
    for (let i = 0; i < audioSlots; i++) recv.push(pc.addTransceiver('audio', { direction: 'recvonly' }));
    for (const t of pc.getTransceivers()) preferCodecs(t, t.receiver.track.kind, t.direction === 'sendonly');
    if (e2ee && state.e2ee) {
      for (const t of [tx.audio, tx.camera, tx.screen]) e2ee.attach(t.sender, 'send', t.sender.track ? t.sender.track.kind : t.receiver.track.kind);
      for (const t of recv) e2ee.attach(t.receiver, 'receive', t.receiver.track.kind);
    }

    dc = pc.createDataChannel('control');
    dc.onmessage = (ev) => onControl(ev.data);
    dc.onclose = () => {
      if (state.phase === 'joined') {
        state.phase = 'disconnected';
        notice('Disconnected from the room.', 'error');
      }
    };
    pc.onconnectionstatechange = () => {
      $('conn-state').textContent = pc ? pc.connectionState : '';
      if (pc && pc.connectionState === 'failed' && state.phase === 'joined') {
        state.phase = 'disconnected';
        notice('The media connection failed. Check your network and rejoin.', 'error');
        scheduleRejoin();
      }
      if (pc && pc.connectionState === 'disconnected' && state.phase === 'joined') {
        // A vanished node leaves the connection `disconnected` (failed
        // comes ~30 s later). Rejoin if it does not recover in 4 s, or at
        // once if the server says the room's node is gone: no answer, a
        // 5xx (the node that proxies us cannot reach it), or the room
        // hosted by another node now (X-Piazza-Node, docs/cluster.md).
        const was = pc;
        const rejoinIfDown = () => {
          if (pc === was && pc.connectionState !== 'connected' && state.phase === 'joined') {
            state.phase = 'disconnected';
            scheduleRejoin();
          }
        };
        setTimeout(rejoinIfDown, 4000);
        api('GET', `/v1/rooms/${state.room}`, { token: state.participantToken || state.token }).then((res) => {
          const host = res.headers ? res.headers.get('x-piazza-node') : null;
          if ([0, 502, 503, 504].includes(res.status) || (res.ok && state.node && host && host !== state.node)) rejoinIfDown();
        });
      }
    };

    await pc.setLocalDescription(await pc.createOffer());
    const url = `/v1/rooms/${state.room}/participants?name=${encodeURIComponent(name)}`;
    const res = await api('POST', url, { token: token || state.token, sdp: pc.localDescription.sdp });
    if (res.status !== 201) {
      teardown();
      state.phase = 'refused';
      $('join').disabled = false;
      refusal(res);
      return;
    }
    state.participantToken = res.headers.get('x-piazza-token');
    state.me = res.headers.get('x-piazza-participant');
    state.node = res.headers.get('x-piazza-node');
    if (e2ee && state.e2ee) await e2ee.setMe(state.me);
    await pc.setRemoteDescription({ type: 'answer', sdp: res.data });

    for (const t of recv) {
      slotReceivers.set(t.mid, { kind: t.receiver.track.kind, track: t.receiver.track });
    }
    for (const [mid, r] of slotReceivers) {
      if (r.kind !== 'audio') continue;
      const el = document.createElement('audio');
      el.autoplay = true;
      el.dataset.mid = mid;
      el.srcObject = new MediaStream([r.track]);
      $('audio-sinks').append(el);
    }

    state.phase = 'joined';
    notice('');
    show('call');
    addSelfTile();
    $('owner-tools').hidden = !state.owner;
    if (state.owner) refreshRoom();
    renderPeople();
  }

  function addSelfTile() {
    selfTile = document.createElement('div');
    selfTile.className = 'tile self';
    const v = document.createElement('video');
    v.autoplay = true;
    v.muted = true;
    v.playsInline = true;
    if (local.video) v.srcObject = new MediaStream([local.video]);
    const label = document.createElement('span');
    label.className = 'label';
    label.textContent = 'You';
    selfTile.append(v, label);
    $('grid').prepend(selfTile);
  }

  async function refreshRoom() {
    const res = await api('GET', `/v1/rooms/${state.room}`, { token: state.participantToken || state.token });
    if (res.ok) applyRoomInfo(res.data);
  }

  // ---- control channel -------------------------------------------------------

  function onControl(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch (_) {
      return;
    }
    switch (msg.type) {
      case 'welcome':
        state.me = msg.participant;
        if (msg.e2ee && e2ee) e2ee.announce();
        break;
      case 'participants':
        state.participants = new Map(msg.participants.map((p) => [p.id, p]));
        if (e2ee && state.e2ee) e2ee.onParticipants([...state.participants.keys()]);
        chat.renderRecipients();
        renderPeople();
        renderGrid();
        break;
      case 'slots':
        state.slots = { video: msg.video || [], audio: msg.audio || [] };
        slotHistory.push({ at: Math.round(performance.now()), video: state.slots.video.filter((v) => v.participant) });
        if (slotHistory.length > 50) slotHistory.shift();
        renderGrid();
        break;
      case 'active_speaker':
        state.speaker = msg.participant;
        renderGrid();
        renderPeople();
        break;
      case 'kicked':
        state.phase = 'kicked';
        teardown();
        notice('You were removed from the room by its owner.', 'error');
        break;
      case 'closing':
        // The room closed or the server is stopping; the session ends next.
        state.phase = 'disconnected';
        teardown();
        notice(`The call ended: ${msg.reason || 'the room closed'}.`, 'error');
        // A stopping or draining node, or a room another node took over
        // (docs/cluster.md): the room continues elsewhere.
        if (/shutting down|moved/.test(msg.reason || '')) scheduleRejoin();
        break;
      case 'chat':
      case 'chat_error':
        chat.onMessage(msg);
        break;
      case 'key':
        if (e2ee) e2ee.onMessage(msg.from, msg.data);
        break;
      case 'error':
        console.warn('piazza control error:', msg.message);
        break;
      default:
        break;
    }
  }

  function renderGrid() {
    const grid = $('grid');
    for (const slot of state.slots.video) {
      const r = slotReceivers.get(slot.mid);
      if (!r) continue;
      let tile = tiles.get(slot.mid);
      if (!tile) {
        tile = document.createElement('div');
        tile.className = 'tile';
        tile.dataset.mid = slot.mid;
        const v = document.createElement('video');
        v.autoplay = true;
        v.muted = true; // sound comes from the audio slots
        v.playsInline = true;
        v.srcObject = new MediaStream([r.track]);
        const label = document.createElement('span');
        label.className = 'label';
        const badge = document.createElement('span');
        badge.className = 'badge';
        tile.append(v, label, badge);
        tiles.set(slot.mid, tile);
        grid.append(tile);
      }
      const who = slot.participant;
      tile.hidden = !who;
      tile.dataset.participant = who || '';
      tile.dataset.source = slot.source || '';
      tile.classList.toggle('screen', slot.source === 'screen');
      tile.classList.toggle('paused', !!slot.paused);
      tile.classList.toggle('speaking', !!who && who === state.speaker && slot.source !== 'screen');
      tile.querySelector('.label').textContent = who ? `${nameOf(who)}${slot.source === 'screen' ? ' — screen' : ''}` : '';
      const badge = tile.querySelector('.badge');
      // A paused slot still names whom it holds: keep the tile, dimmed,
      // with the last frame (or only the name if it never showed them).
      if (!slot.paused && who) tile.dataset.shown = who;
      tile.querySelector('video').style.visibility =
        slot.paused && tile.dataset.shown !== who ? 'hidden' : '';
      badge.textContent = !slot.paused ? '' : slot.paused_reason === 'bandwidth' ? 'paused: low bandwidth' : 'paused';
      badge.hidden = !slot.paused;
      // Screen shares first, then the slots in offer order.
      tile.style.order = slot.source === 'screen' ? '-1' : '0';
    }
    if (selfTile) {
      selfTile.style.order = '-2';
      selfTile.classList.toggle('speaking', !!state.me && state.me === state.speaker);
    }
  }

  function renderPeople() {
    const ul = $('participant-list');
    ul.textContent = '';
    const list = [...state.participants.values()];
    $('people-count').textContent = list.length ? `(${list.length})` : '';
    for (const p of list) {
      const li = document.createElement('li');
      li.dataset.participant = p.id;
      li.classList.toggle('speaking', p.id === state.speaker);
      const who = document.createElement('span');
      who.className = 'who';
      who.textContent = p.id === state.me ? `${p.name} (you)` : p.name;
      const flags = document.createElement('span');
      flags.className = 'flags';
      flags.textContent = [p.audio && 'mic', p.video && 'cam', p.screen && 'screen'].filter(Boolean).join(' ');
      li.append(who, flags);
      if (state.owner && p.id !== state.me) {
        const b = document.createElement('button');
        b.type = 'button';
        b.className = 'small danger remove';
        b.textContent = 'Remove';
        b.addEventListener('click', () => kick(p.id));
        li.append(b);
      }
      ul.append(li);
    }
  }

  // ---- controls --------------------------------------------------------------

  function toggleTrack(track, button, on, off) {
    if (!track) {
      notice('No such device was available when you joined.', 'error');
      return;
    }
    track.enabled = !track.enabled;
    button.textContent = track.enabled ? on : off;
    button.setAttribute('aria-pressed', String(!track.enabled));
  }

  async function shareTrack(track) {
    if (!tx.screen) throw new Error('not joined');
    await tx.screen.sender.replaceTrack(track);
    local.screen = track;
    state.sharing = true;
    $('screen').textContent = 'Stop sharing';
    $('screen').setAttribute('aria-pressed', 'true');
    track.addEventListener('ended', stopShare);
  }

  async function startShare() {
    let stream;
    try {
      stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 5 } }, audio: false });
    } catch (e) {
      notice(`Screen sharing did not start (${e.message}).`, 'error');
      return;
    }
    await shareTrack(stream.getVideoTracks()[0]);
  }

  async function stopShare() {
    if (!state.sharing) return;
    state.sharing = false;
    if (tx.screen) await tx.screen.sender.replaceTrack(null).catch(() => {});
    if (local.screen) local.screen.stop();
    local.screen = null;
    $('screen').textContent = 'Share screen';
    $('screen').setAttribute('aria-pressed', 'false');
  }

  async function leave() {
    const me = state.me;
    const token = state.participantToken;
    state.phase = 'left';
    // Tell the server first: closing the connection first would make the
    // engine drop us as disconnected, and the DELETE would find nobody.
    if (me && token) await api('DELETE', `/v1/rooms/${state.room}/participants/${me}`, { token });
    teardown();
    notice('You left the room.');
    show('lobby');
    $('join').disabled = false;
  }

  async function setLocked(locked) {
    const res = await api('PATCH', `/v1/rooms/${state.room}`, { token: state.participantToken, json: { locked } });
    if (!res.ok) return refusal(res);
    applyRoomInfo(res.data);
    notice(locked ? 'The room is locked: nobody else can join.' : 'The room is unlocked.');
  }

  async function kick(id) {
    const res = await api('DELETE', `/v1/rooms/${state.room}/participants/${id}`, { token: state.participantToken });
    if (!res.ok) return refusal(res);
    notice(`${nameOf(id)} was removed from the room.`);
  }

  async function copyInvite() {
    if (!state.inviteUrl) await refreshRoom();
    const input = $('invite-url');
    input.value = state.inviteUrl || '';
    try {
      await navigator.clipboard.writeText(input.value);
      notice('Invite link copied.');
    } catch (_) {
      input.select();
      notice('Copy the selected invite link.');
    }
  }

  function teardown() {
    if (dc) dc.onclose = null;
    if (dc) dc.close();
    if (pc) pc.close();
    dc = null;
    pc = null;
    for (const t of [local.audio, local.video, local.screen]) if (t) t.stop();
    local.stream = local.audio = local.video = local.screen = null;
    tx.audio = tx.camera = tx.screen = null;
    state.sharing = false;
    // Whoever was in the call is not any more (a rejoin gets the list anew).
    state.participants = new Map();
    state.slots = { video: [], audio: [] };
    state.speaker = null;
    slotReceivers.clear();
    tiles.clear();
    selfTile = null;
    $('grid').textContent = '';
    $('audio-sinks').textContent = '';
    $('participant-list').textContent = '';
    $('conn-state').textContent = '';
  }

  $('mic').addEventListener('click', () => toggleTrack(local.audio, $('mic'), 'Mute', 'Unmute'));
  $('cam').addEventListener('click', () => toggleTrack(local.video, $('cam'), 'Stop camera', 'Start camera'));
  $('screen').addEventListener('click', () => (state.sharing ? stopShare() : startShare()));
  $('leave').addEventListener('click', leave);
  $('lock').addEventListener('click', () => setLocked(!state.locked));
  $('copy-invite').addEventListener('click', copyInvite);

  // ---- rejoin (node failure, drain) ------------------------------------------
  //
  // When the media connection fails or the server stops, rejoin with the
  // participant token (same grants; it replaces the old session if that is
  // still there), backing off. In a cluster the request lands on whichever
  // node hosts the room now (docs/cluster.md).

  // Quick first tries, then every 3 s for about a minute: a dead node's
  // rooms move when its directory entry expires (node_ttl after its last
  // heartbeat), and a short gap bounds how long a client waits after that.
  // Each delay is jittered by ±20 % so a node's clients do not come back
  // in lockstep.
  const REJOIN_DELAYS_MS = [500, 1000, 2000, ...Array(18).fill(3000)];
  let rejoinAttempt = -1;
  state.rejoins = 0;

  function scheduleRejoin() {
    if (rejoinAttempt >= 0 || !state.participantToken) return;
    rejoinAttempt = 0;
    attemptRejoin();
  }

  function attemptRejoin() {
    if (rejoinAttempt >= REJOIN_DELAYS_MS.length) {
      rejoinAttempt = -1;
      notice('Could not rejoin the room. Reload the page to try again.', 'error');
      return;
    }
    const delay = REJOIN_DELAYS_MS[rejoinAttempt++] * (0.8 + 0.4 * Math.random());
    notice(`Reconnecting… (attempt ${rejoinAttempt})`);
    setTimeout(async () => {
      teardown();
      state.phase = 'disconnected';
      await join(localStorage.getItem('piazza:name') || '', state.participantToken);
      if (state.phase === 'joined') {
        rejoinAttempt = -1;
        state.rejoins += 1;
        return;
      }
      const status = state.error ? state.error.status : 0;
      if ([0, 421, 502, 503, 504].includes(status)) attemptRejoin();
      else rejoinAttempt = -1;
    }, delay);
  }

  // ---- test and debugging hook ----------------------------------------------

  window.piazza = {
    state,
    slotHistory,
    /** Cap the height forwarded into a video slot (null lifts the cap):
     *  the `max_resolution` control message. */
    setMaxHeight: (mid, height) => sendControl({ type: 'max_resolution', mid, height }),
    /** The camera and screen codec of the next join: 'vp8' or 'h264'. */
    setSendCodec(codec) {
      if (codec !== 'vp8' && codec !== 'h264') throw new Error(`unknown codec ${codec}`);
      sendCodec = codec;
    },
    shareTrack,
    /** Send another microphone track (tests use a loud oscillator). */
    async replaceAudio(track) {
      if (!tx.audio) throw new Error('not joined');
      await tx.audio.sender.replaceTrack(track);
    },
    stopShare,
    chat,
    /** Send a chat message (as the chat form does); false if not sent. */
    sendChat: (text, to) => chat.submit(text, to),
    /** E2EE counters (frames encrypted/decrypted, keys) or null. */
    e2eeStats: () => (e2ee ? e2ee.stats() : null),
    /** E2EE key-exchange log (no key material). */
    e2eeEvents: () => (e2ee ? e2ee.events.slice() : []),
    /** The last frames received, as ciphertext (tests). */
    e2eeCapture: () => (e2ee ? e2ee.capture() : []),
    /** Try to decrypt frames captured on another page (tests). */
    e2eeTryDecrypt: (frames) => (e2ee ? e2ee.tryDecrypt(frames) : { decrypted: 0, kids: [] }),
    /** Receive statistics per slot: what the tests assert on. */
    async inbound() {
      if (!pc) return [];
      const stats = await pc.getStats();
      const out = [];
      stats.forEach((s) => {
        if (s.type !== 'inbound-rtp') return;
        const slot = s.kind === 'video' ? state.slots.video.find((v) => v.mid === s.mid) : state.slots.audio.find((a) => a.mid === s.mid);
        out.push({
          mid: s.mid,
          kind: s.kind,
          participant: slot ? slot.participant : null,
          source: slot && slot.source ? slot.source : null,
          packetsReceived: s.packetsReceived || 0,
          bytesReceived: s.bytesReceived || 0,
          framesDecoded: s.framesDecoded || 0,
          frameWidth: s.frameWidth || 0,
          frameHeight: s.frameHeight || 0,
          totalSamplesReceived: s.totalSamplesReceived || 0,
          codec: s.codecId && stats.get(s.codecId) ? stats.get(s.codecId).mimeType : null,
        });
      });
      return out;
    },
    /** Send statistics per RTP stream (each simulcast layer has its rid). */
    async outbound() {
      if (!pc) return [];
      const stats = await pc.getStats();
      const out = [];
      stats.forEach((s) => {
        if (s.type !== 'outbound-rtp') return;
        out.push({
          mid: s.mid,
          kind: s.kind,
          rid: s.rid || null,
          packetsSent: s.packetsSent || 0,
          framesEncoded: s.framesEncoded || 0,
          frameWidth: s.frameWidth || 0,
          frameHeight: s.frameHeight || 0,
          codec: s.codecId && stats.get(s.codecId) ? stats.get(s.codecId).mimeType : null,
        });
      });
      return out;
    },
    /** The server's media address the connection uses now (`IP:PORT` of
     *  the selected candidate pair's remote side), or null. */
    async remoteAddress() {
      if (!pc) return null;
      const stats = await pc.getStats();
      let pair = null;
      stats.forEach((s) => {
        if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
      });
      const remote = pair ? stats.get(pair.remoteCandidateId) : null;
      return remote ? `${remote.address || remote.ip}:${remote.port}` : null;
    },
    /** The video elements' sizes by slot. */
    videoSizes() {
      return [...tiles.entries()].map(([mid, t]) => {
        const v = t.querySelector('video');
        return { mid, participant: t.dataset.participant, width: v.videoWidth, height: v.videoHeight, hidden: t.hidden };
      });
    },
  };

  const m = location.pathname.match(/^\/r\/([A-Za-z0-9_-]+)\/?$/);
  if (m) enterRoom(m[1]);
  else showHome();
})();
