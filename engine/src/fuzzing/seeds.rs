//! Seed inputs of every target, made by code rather than kept as binary
//! files: valid STUN (with real MESSAGE-INTEGRITY), a DTLS ClientHello,
//! RTP (VP8 and Opus), RTCP (SR, RR, SDES, PLI, NACK), control messages of
//! every type, the simulated client's SDP offers and HTTP bodies.
//!
//! The fuzz crate's `seeds` program writes them to `DIR/<target>/<name>`
//! for libFuzzer (`fuzz/ci.sh`); `engine/tests/fuzz_corpus.rs` runs each
//! through its harness.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use str0m::ice::{StunMessage, TransId};

use super::datagram::{Op, encode};
use crate::sim::media::{Trailer, opus_payload, vp8_payload};
use crate::sim::{ClientConfig, SimClient};

/// One seed input.
#[derive(Debug, Clone)]
pub struct Seed {
    /// `datagram`, `control`, `sdp` or `http`.
    pub target: &'static str,
    /// File name in the corpus.
    pub name: String,
    /// The input.
    pub data: Vec<u8>,
}

/// The targets, in the order `fuzz/ci.sh` runs them.
pub const TARGETS: [&str; 4] = ["datagram", "control", "sdp", "http"];

/// Every seed of every target.
pub fn all() -> Vec<Seed> {
    let mut seeds = Vec::new();
    let mut add = |target: &'static str, name: &str, data: Vec<u8>| {
        seeds.push(Seed {
            target,
            name: name.to_string(),
            data,
        })
    };
    for (name, ops) in datagram_seeds() {
        add("datagram", name, encode(&ops));
    }
    for (name, text) in control_seeds() {
        add("control", name, text.into_bytes());
    }
    for (name, offer) in offers() {
        add("sdp", name, offer.into_bytes());
    }
    for (name, selector, body) in http_seeds() {
        let mut data = vec![selector];
        data.extend_from_slice(&body);
        add("http", name, data);
    }
    seeds
}

/// A STUN binding request as a browser sends it, signed with `password`.
pub fn stun_binding_request(username: &str, password: &str) -> Vec<u8> {
    let msg = StunMessage::binding_request(
        username,
        TransId::new(),
        true,
        0x1234_5678,
        1_845_501_695,
        true,
    );
    let hmac = str0m::crypto::from_feature_flags().sha1_hmac_provider;
    let mut buf = [0u8; 512];
    // 512 bytes hold a binding request with a short username.
    let n = msg
        .to_bytes(Some(password.as_bytes()), &mut buf, |k, p| {
            hmac.sha1_hmac(k, p)
        })
        .expect("a binding request fits 512 bytes");
    buf[..n].to_vec()
}

/// A DTLS 1.2 ClientHello record offering what WebRTC peers offer
/// (ECDHE-ECDSA with AES-GCM, use_srtp, extended master secret).
pub fn dtls_client_hello() -> Vec<u8> {
    let mut ext = Vec::new();
    let mut extension = |ty: u16, body: &[u8]| {
        ext.extend_from_slice(&ty.to_be_bytes());
        ext.extend_from_slice(&(body.len() as u16).to_be_bytes());
        ext.extend_from_slice(body);
    };
    extension(0x000a, &[0, 4, 0, 0x17, 0, 0x1d]); // supported_groups: P-256, X25519
    extension(0x000b, &[1, 0]); // ec_point_formats: uncompressed
    extension(0x000d, &[0, 4, 4, 3, 8, 4]); // signature_algorithms
    extension(0x000e, &[0, 4, 0, 7, 0, 1, 0]); // use_srtp: AEAD_AES_128_GCM, AES128_CM_SHA1_80
    extension(0x0017, &[]); // extended_master_secret
    extension(0xff01, &[0]); // renegotiation_info

    let mut hello = vec![0xfe, 0xfd]; // DTLS 1.2
    hello.extend((0u8..32).map(|i| i.wrapping_mul(37))); // random
    hello.push(0); // session id
    hello.push(0); // cookie
    hello.extend_from_slice(&[0, 4, 0xc0, 0x2b, 0xc0, 0x2f]); // cipher suites
    hello.extend_from_slice(&[1, 0]); // compression: null
    hello.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    hello.extend_from_slice(&ext);

    let len = hello.len() as u32;
    let mut hs = vec![1]; // client_hello
    hs.extend_from_slice(&len.to_be_bytes()[1..]);
    hs.extend_from_slice(&[0, 0]); // message_seq
    hs.extend_from_slice(&[0, 0, 0]); // fragment_offset
    hs.extend_from_slice(&len.to_be_bytes()[1..]);
    hs.extend_from_slice(&hello);

    let mut record = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0];
    record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    record.extend_from_slice(&hs);
    record
}

fn trailer(keyframe: bool) -> Trailer {
    Trailer {
        publisher: 0,
        seq: 1,
        sent_ns: 0,
        layer: 0,
        track: 1,
        end_of_frame: true,
        keyframe,
    }
}

fn vp8_keyframe() -> Vec<u8> {
    vp8_payload(true, true, 1234, 7, 320, 180, 120, &trailer(true))
}

/// A plain RTP packet: VP8 keyframe, payload type 96, SSRC 0x11223344.
pub fn rtp_vp8() -> Vec<u8> {
    let mut p = vec![
        0x80,
        0x80 | 96,
        0x12,
        0x34,
        0,
        0,
        0x10,
        0,
        0x11,
        0x22,
        0x33,
        0x44,
    ];
    p.extend_from_slice(&vp8_keyframe());
    p
}

/// A plain RTP packet with a one-byte header extension (RFC 8285) carrying
/// an audio level, Opus payload type 111.
pub fn rtp_opus() -> Vec<u8> {
    let mut p = vec![0x90, 111, 0, 1, 0, 0, 3, 0xc0, 0x55, 0x66, 0x77, 0x88];
    p.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0x94, 0, 0]); // id 1, level 20, voice
    p.extend_from_slice(&opus_payload(40, &trailer(false)));
    p
}

/// A compound RTCP packet: SR, RR with one report block, SDES CNAME, PLI,
/// generic NACK.
pub fn rtcp_compound() -> Vec<u8> {
    let ssrc = [0x11, 0x22, 0x33, 0x44];
    let media = [0x55, 0x66, 0x77, 0x88];
    let mut p = Vec::new();
    // SR: sender info (NTP, RTP ts, packets, octets), no report blocks.
    p.extend_from_slice(&[0x80, 200, 0, 6]);
    p.extend_from_slice(&ssrc);
    p.extend_from_slice(&[
        0xe9, 0, 0, 0, 0x80, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 50, 0, 0, 0x20, 0,
    ]);
    // RR with one report block.
    p.extend_from_slice(&[0x81, 201, 0, 7]);
    p.extend_from_slice(&ssrc);
    p.extend_from_slice(&media);
    p.extend_from_slice(&[
        0, 0, 0, 0, 0, 0, 0x12, 0x34, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    // SDES with a CNAME.
    p.extend_from_slice(&[0x81, 202, 0, 3]);
    p.extend_from_slice(&ssrc);
    p.extend_from_slice(&[1, 4, b'f', b'u', b'z', b'z', 0, 0]);
    // PLI.
    p.extend_from_slice(&[0x81, 206, 0, 2]);
    p.extend_from_slice(&ssrc);
    p.extend_from_slice(&media);
    // Generic NACK: seq 0x1234 and the next 16.
    p.extend_from_slice(&[0x81, 205, 0, 3]);
    p.extend_from_slice(&ssrc);
    p.extend_from_slice(&media);
    p.extend_from_slice(&[0x12, 0x34, 0xff, 0xff]);
    p
}

fn datagram_seeds() -> Vec<(&'static str, Vec<Op>)> {
    let stun = stun_binding_request("pz1abcdef:client", "0123456789abcdefghijklmn");
    let signed = |participant, from_unknown, use_candidate| Op::Stun {
        participant,
        from_unknown,
        use_candidate,
        controlling: true,
        priority: 1_845_501_695,
        tie_breaker: 0x1234_5678,
    };
    let rtp = |participant, stream, seq_offset, payload: Vec<u8>, level| Op::Rtp {
        participant,
        stream,
        seq_offset,
        timestamp: 90_000,
        marker: true,
        audio_level: level,
        payload,
    };
    let known = |participant, bytes: Vec<u8>| Op::Known { participant, bytes };
    let delta = vp8_payload(true, false, 1235, 7, 320, 180, 120, &trailer(false));
    vec![
        (
            "stun-unknown-source",
            vec![Op::Unknown {
                port: 5000,
                bytes: stun.clone(),
            }],
        ),
        ("stun-known-source", vec![known(0, stun)]),
        (
            "stun-signed",
            vec![signed(0, false, true), signed(1, false, false)],
        ),
        (
            "stun-signed-new-address",
            vec![signed(1, true, true), Op::Advance { millis: 300 }],
        ),
        ("dtls-client-hello", vec![known(0, dtls_client_hello())]),
        (
            "dtls-client-hello-unknown",
            vec![Op::Unknown {
                port: 6000,
                bytes: dtls_client_hello(),
            }],
        ),
        ("rtp-plain", vec![known(0, rtp_vp8()), known(1, rtp_opus())]),
        ("rtcp-plain", vec![known(1, rtcp_compound())]),
        (
            "rtp-srtp-camera",
            vec![
                rtp(0, 1, 0, vp8_keyframe(), None),
                rtp(0, 1, 1, delta.clone(), None),
                Op::Advance { millis: 200 },
            ],
        ),
        (
            "rtp-srtp-screen-and-layers",
            vec![
                rtp(0, 4, 0, vp8_keyframe(), None),
                rtp(1, 2, 0, vp8_keyframe(), None),
                rtp(1, 3, -3, delta, None),
            ],
        ),
        (
            "rtp-srtp-audio",
            vec![
                rtp(1, 0, 0, opus_payload(60, &trailer(false)), Some(10)),
                rtp(1, 0, 1, opus_payload(60, &trailer(false)), Some(127)),
            ],
        ),
        (
            "control-then-media",
            vec![
                Op::Control {
                    participant: 0,
                    bytes: br#"{"type":"pause","mid":"{v0}"}"#.to_vec(),
                },
                Op::Advance { millis: 150 },
                Op::Control {
                    participant: 0,
                    bytes: br#"{"type":"resume","mid":"{v0}"}"#.to_vec(),
                },
                Op::Advance { millis: 300 },
            ],
        ),
        ("time", vec![Op::Advance { millis: 1000 }]),
        (
            "garbage",
            vec![
                known(1, vec![0xff; 40]),
                Op::Unknown {
                    port: 1,
                    bytes: vec![0; 3],
                },
            ],
        ),
    ]
}

fn control_seeds() -> Vec<(&'static str, String)> {
    [
        ("pin", r#"{"type":"pin","participant":"{other}"}"#),
        ("pin-self-then-unpin", "{\"type\":\"pin\",\"participant\":\"{self}\"}\n{\"type\":\"pin\",\"participant\":null}"),
        ("pin-unknown", r#"{"type":"pin","participant":"p999"}"#),
        ("max-resolution", r#"{"type":"max_resolution","mid":"{v0}","height":180}"#),
        ("max-resolution-uncapped", "{\"type\":\"max_resolution\",\"mid\":\"{v1}\",\"height\":0}\n{\"type\":\"max_resolution\",\"mid\":\"{v1}\",\"height\":null}"),
        ("pause-resume", "{\"type\":\"pause\",\"mid\":\"{v0}\"}\n{\"type\":\"resume\",\"mid\":\"{v0}\"}"),
        ("pause-audio-mid", r#"{"type":"pause","mid":"{a0}"}"#),
        ("from-both", "{\"type\":\"pin\",\"participant\":\"{other}\"}\n>{\"type\":\"pause\",\"mid\":\"{v1}\"}"),
        ("unknown-type", r#"{"type":"subscribe","mid":"{v0}"}"#),
        ("not-json", "pin p1"),
        ("chat-all", "{\"type\":\"chat\",\"text\":\"hello room\",\"local_id\":\"c1\"}\n>{\"type\":\"chat\",\"text\":\"hi\\nthere\\t!\",\"to\":null}"),
        ("chat-private", r#"{"type":"chat","text":"psst","to":"{other}","local_id":"x"}"#),
        ("chat-to-self-and-nobody", "{\"type\":\"chat\",\"text\":\"me\",\"to\":\"{self}\"}\n{\"type\":\"chat\",\"text\":\"who\",\"to\":\"p999\"}\n{\"type\":\"chat\",\"text\":\"bad\",\"to\":\"q\"}"),
        ("chat-empty-and-control", "{\"type\":\"chat\",\"text\":\"  \"}\n{\"type\":\"chat\",\"text\":\"a\\u0007b\"}\n{\"type\":\"chat\",\"text\":\"\\u00e9t\\u00e9 \\ud83d\\ude00\"}"),
        ("chat-wrong-types", "{\"type\":\"chat\",\"text\":5}\n{\"type\":\"chat\"}\n{\"type\":\"chat\",\"text\":\"x\",\"encrypted\":\"yes\"}\n{\"type\":\"chat\",\"text\":\"x\",\"local_id\":\"0123456789012345678901234567890123456789012345678901234567890123456789\"}"),
        ("chat-burst", "{\"type\":\"chat\",\"text\":\"1\"}\n{\"type\":\"chat\",\"text\":\"2\"}\n{\"type\":\"chat\",\"text\":\"3\"}\n{\"type\":\"chat\",\"text\":\"4\"}\n{\"type\":\"chat\",\"text\":\"5\"}\n{\"type\":\"chat\",\"text\":\"6\"}\n{\"type\":\"chat\",\"text\":\"7\"}\n{\"type\":\"chat\",\"text\":\"8\"}\n{\"type\":\"chat\",\"text\":\"9\"}\n{\"type\":\"chat\",\"text\":\"10\"}\n{\"type\":\"chat\",\"text\":\"11\"}\n{\"type\":\"chat\",\"text\":\"12\"}"),
        ("key-in-normal-room", r#"{"type":"key","data":"hello"}"#),
        ("e2ee-chat", "e2ee\n{\"type\":\"chat\",\"text\":\"plain\"}\n{\"type\":\"chat\",\"text\":\"AAECAw==\",\"encrypted\":true}\n>{\"type\":\"chat\",\"text\":\"BAUG\",\"encrypted\":true,\"to\":\"{other}\"}"),
        ("e2ee-key-relay", "e2ee\n{\"type\":\"key\",\"data\":\"{\\\"t\\\":\\\"hello\\\"}\"}\n>{\"type\":\"key\",\"to\":\"{other}\",\"data\":\"wrapped\"}\n{\"type\":\"key\",\"to\":\"{self}\",\"data\":\"x\"}\n{\"type\":\"key\",\"data\":\"\"}"),
    ]
    .into_iter()
    .map(|(n, t)| (n, t.to_string()))
    .collect()
}

fn offers() -> Vec<(&'static str, String)> {
    let now = Instant::now();
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 5000);
    let offer = |f: &dyn Fn(&mut ClientConfig)| {
        let mut c = ClientConfig::new(1);
        f(&mut c);
        SimClient::new(c, addr, now, now).offer().to_string()
    };
    vec![
        ("client-default", offer(&|_| {})),
        ("client-screen", offer(&|c| c.screen = true)),
        (
            "viewer",
            offer(&|c| {
                c.audio = false;
                c.camera_layers.clear();
            }),
        ),
        (
            "data-channel-only",
            offer(&|c| {
                c.audio = false;
                c.camera_layers.clear();
                c.video_slots = 0;
                c.audio_slots = 0;
            }),
        ),
        ("too-many-slots", offer(&|c| c.audio_slots = 9)),
        (
            "single-layer-camera",
            offer(&|c| c.camera_layers.truncate(1)),
        ),
    ]
}

fn http_seeds() -> Vec<(&'static str, u8, Vec<u8>)> {
    let json = |s: &str| s.as_bytes().to_vec();
    let offer = offers()
        .into_iter()
        .next()
        .map(|(_, o)| o.into_bytes())
        .unwrap_or_default();
    vec![
        ("create-empty", 0, vec![]),
        (
            "create-full",
            0,
            json(
                r#"{"name":"Team","max_participants":10,"public":true,"starts_at":"2026-01-02T10:00:00Z"}"#,
            ),
        ),
        ("create-unix-start", 0, json(r#"{"starts_at":1700000000}"#)),
        ("create-unknown-field", 0, json(r#"{"size":3}"#)),
        ("lock", 1, json(r#"{"locked":true}"#)),
        ("public", 1, json(r#"{"public":true}"#)),
        ("lock-as-guest", 1 + 4, json(r#"{"locked":true}"#)),
        (
            "mint",
            2,
            json(r#"{"grants":["join","subscribe"],"ttl":3600}"#),
        ),
        (
            "mint-admin",
            2,
            json(r#"{"grants":["admin","publish","join"]}"#),
        ),
        ("mint-no-token", 2 + 8, json(r#"{"grants":["join"]}"#)),
        ("join", 3, offer.clone()),
        ("join-guest", 3 + 4, offer.clone()),
        ("join-bad-token", 3 + 12, offer),
        ("join-not-sdp", 3, json("v=0\r\n")),
    ]
}
