"""aiortc (Python) participants in a Piazza room, for the interop suite.

    python aiortc_peers.py --base http://127.0.0.1:PORT --room ROOM --token INVITE \
        --names Ada,Ben --expect 2 [--limit 60]

Each name joins as one aiortc peer with the same kind of offer the browser
client makes (sendonly Opus audio, sendonly VP8 camera, recvonly video and
audio slots, a `control` data channel), sends a moving test picture and a
tone, and decodes what the engine forwards into its slots. A peer is
satisfied when it has decoded video frames and audio samples from `--expect`
other participants (slots are attributed with the engine's `slots` control
messages). Prints one `RESULT {json}` line when every peer is satisfied (or
`--limit` seconds passed), then stays in the room until its stdin closes (so
the driver can check the other side), leaves with DELETE, and exits 0 only
if every peer was satisfied.

Client-side settings and why:
- bundlePolicy max-bundle: with aiortc's default ("balanced") aiortc's
  offer lists every mid in one BUNDLE group but gives the video m-lines a
  transport (port) of their own; the answer accepts the group, so RFC 8843
  has the offerer move everything onto the first m-line's transport. aiortc
  1.16 then still receives audio but decodes no frame on its recvonly video
  m-lines (measured: 0 frames in 60 s, audio fine; run with
  PIAZZA_AIORTC_BUNDLE_POLICY=balanced to see it). That is aiortc's own
  handling of its balanced policy, not something the server asks for.
- Nothing else: the answer's candidates (in every m-section, ended by
  a=end-of-candidates) are what aiortc reads without help.
"""

import argparse
import asyncio
import fractions
import json
import math
import os
import struct
import sys
import time
import urllib.error
import urllib.request

import av
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import VideoStreamTrack

VIDEO_SLOTS = 3
AUDIO_SLOTS = 2
MIN_FRAMES = 15
MIN_SAMPLES = 48000 // 2  # half a second of audio


def log(msg):
    print(f"[aiortc {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class TestPicture(VideoStreamTrack):
    """320x240 frames at 30 fps with a bright bar that moves each frame."""

    def __init__(self):
        super().__init__()
        self.n = 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        w, h = 320, 240
        frame = av.VideoFrame(width=w, height=h, format="yuv420p")
        y = frame.planes[0]
        stride = y.line_size
        row = bytearray([40]) * stride
        x0 = (self.n * 4) % (w - 32)
        row[x0 : x0 + 32] = bytes([230]) * 32
        y.update(bytes(row) * h)
        for p in frame.planes[1:]:
            p.update(bytes([128]) * p.buffer_size)
        frame.pts = pts
        frame.time_base = time_base
        self.n += 1
        return frame


class Tone(MediaStreamTrack):
    """A 440 Hz tone, 20 ms frames of 48 kHz mono s16."""

    kind = "audio"

    def __init__(self):
        super().__init__()
        self.start = None
        self.pts = 0
        self.samples = 960
        self.frame_bytes = b"".join(
            struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / 48000)))
            for i in range(self.samples)
        )

    async def recv(self):
        if self.start is None:
            self.start = time.time()
        else:
            self.pts += self.samples
            wait = self.start + self.pts / 48000 - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        frame = av.AudioFrame(format="s16", layout="mono", samples=self.samples)
        frame.planes[0].update(self.frame_bytes)
        frame.sample_rate = 48000
        frame.pts = self.pts
        frame.time_base = fractions.Fraction(1, 48000)
        return frame


def http(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=20) as res:
            return res.status, dict(res.headers), res.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def answer_facts(sdp):
    """How the answer carries its candidates, section by section."""
    sections = sdp.split("\r\nm=")[1:]
    accepted = [s for s in sections if s.split(" ")[1] != "0"]
    return {
        "sections": len(sections),
        "accepted": len(accepted),
        "with_candidates": sum("a=candidate:" in s for s in accepted),
        "with_end_of_candidates": sum("a=end-of-candidates" in s for s in accepted),
        "last_has_candidates": bool(accepted) and "a=candidate:" in accepted[-1],
    }


class Peer:
    def __init__(self, args, name):
        self.args = args
        self.name = name
        self.me = None
        self.location = None
        self.token = None
        self.video_slot = {}  # mid -> participant
        self.audio_slot = {}
        self.frames = {}  # participant -> decoded video frames
        self.sizes = {}  # participant -> last "WxH"
        self.samples = {}  # participant -> decoded audio samples
        self.roster = {}  # participant -> name
        self.facts = None
        self.tasks = []
        # PIAZZA_AIORTC_BUNDLE_POLICY=balanced reproduces aiortc's default.
        policy = RTCBundlePolicy(os.environ.get("PIAZZA_AIORTC_BUNDLE_POLICY", "max-bundle"))
        self.pc = RTCPeerConnection(RTCConfiguration(bundlePolicy=policy))

    def others(self):
        return [p for p in self.roster if p != self.me]

    def satisfied(self):
        others = self.others()
        return len(others) >= self.args.expect and all(
            self.frames.get(p, 0) >= MIN_FRAMES and self.samples.get(p, 0) >= MIN_SAMPLES
            for p in others
        )

    def summary(self):
        name = lambda p: self.roster.get(p, p)  # noqa: E731
        return {
            "name": self.name,
            "participant": self.me,
            "answer": self.facts,
            "video_frames": {name(p): n for p, n in self.frames.items()},
            "video_size": {name(p): s for p, s in self.sizes.items()},
            "audio_samples": {name(p): n for p, n in self.samples.items()},
            "satisfied": self.satisfied(),
        }

    def on_control(self, text):
        msg = json.loads(text)
        t = msg.get("type")
        if t == "welcome":
            self.me = msg["participant"]
        elif t == "participants":
            self.roster = {p["id"]: p["name"] for p in msg["participants"]}
        elif t == "slots":
            self.video_slot = {s["mid"]: s["participant"] for s in msg.get("video", [])}
            self.audio_slot = {s["mid"]: s["participant"] for s in msg.get("audio", [])}

    async def consume(self, mid, track):
        while True:
            try:
                frame = await track.recv()
            except Exception:
                return
            # Slot messages replace the maps: look the slot up per frame.
            who = (self.video_slot if track.kind == "video" else self.audio_slot).get(mid)
            if who is None:
                continue
            if track.kind == "video":
                self.frames[who] = self.frames.get(who, 0) + 1
                self.sizes[who] = f"{frame.width}x{frame.height}"
            else:
                self.samples[who] = self.samples.get(who, 0) + frame.samples

    async def join(self):
        pc = self.pc
        pc.addTransceiver(Tone(), direction="sendonly")
        pc.addTransceiver(TestPicture(), direction="sendonly")
        for _ in range(VIDEO_SLOTS):
            pc.addTransceiver("video", direction="recvonly")
        for _ in range(AUDIO_SLOTS):
            pc.addTransceiver("audio", direction="recvonly")
        dc = pc.createDataChannel("control")
        dc.on("message", self.on_control)

        @pc.on("track")
        def on_track(track):
            for t in pc.getTransceivers():
                if t.receiver.track is track:
                    self.tasks.append(asyncio.ensure_future(self.consume(t.mid, track)))

        await pc.setLocalDescription(await pc.createOffer())
        url = f"{self.args.base}/v1/rooms/{self.args.room}/participants?name={self.name}"
        status, headers, body = await asyncio.to_thread(
            http,
            "POST",
            url,
            pc.localDescription.sdp.encode(),
            {"Authorization": f"Bearer {self.args.token}", "Content-Type": "application/sdp"},
        )
        if status != 201:
            raise RuntimeError(f"{self.name}: join refused: {status} {body}")
        headers = {k.lower(): v for k, v in headers.items()}
        self.location = headers["location"]
        self.token = headers["x-piazza-token"]
        self.me = headers["x-piazza-participant"]
        self.facts = answer_facts(body)
        log(f"{self.name} joined as {self.me}; answer {self.facts}")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))

    async def leave(self):
        if self.location:
            await asyncio.to_thread(
                http, "DELETE", self.args.base + self.location, None,
                {"Authorization": f"Bearer {self.token}"},
            )
        for t in self.tasks:
            t.cancel()
        await self.pc.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--room", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--names", default="Ada,Ben")
    ap.add_argument("--expect", type=int, default=2, help="other participants each peer must decode")
    ap.add_argument("--limit", type=float, default=60)
    ap.add_argument("--hold", type=float, default=120, help="longest wait for stdin to close")
    args = ap.parse_args()

    peers = [Peer(args, n) for n in args.names.split(",")]
    ok = False
    try:
        for p in peers:
            await p.join()
        end = time.time() + args.limit
        last_log = 0
        while time.time() < end:
            if all(p.satisfied() for p in peers):
                ok = True
                break
            if time.time() - last_log > 5:
                last_log = time.time()
                log("waiting: " + json.dumps([p.summary() for p in peers]))
            await asyncio.sleep(0.5)
        print("RESULT " + json.dumps({"ok": ok, "peers": [p.summary() for p in peers]}), flush=True)
        # Stay (and keep sending) until the driver is done with the other side.
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.read), args.hold)
        except asyncio.TimeoutError:
            log(f"stdin still open after {args.hold} s; leaving")
    finally:
        for p in peers:
            await p.leave()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
