//! Join preparation: everything about a new participant that costs CPU
//! (parsing the offer, building the `Rtc`, accepting the offer) happens here,
//! on the caller's thread, never on a shard. The shard only adopts the result.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use str0m::bwe::Bitrate;
use str0m::change::SdpOffer;
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::format::{Codec, CodecConfig, PayloadParams};
use str0m::ice::IceCreds;
use str0m::media::{Direction, MediaKind, Mid, Pt, Rid, Rids};
use str0m::net::TcpType;
use str0m::{Candidate, Rtc, RtcConfig};

use crate::config::RoomConfig;
use crate::error::Error;
use crate::ids::{ParticipantId, RoomId, VideoCodec};

/// The H.264 payload types the engine offers to match: (pt, rtx pt,
/// profile-level-id), constrained baseline first. The PTs are str0m's
/// defaults; accepting an offer re-maps them to the offer's.
const H264_PROFILES: &[(u8, u8, u32)] = &[(108, 109, 0x42e01f), (127, 121, 0x42001f)];

/// Engine-wide material shared by every participant's `Rtc`, and the
/// random source of its ICE credentials.
pub(crate) struct JoinContext {
    pub crypto: Arc<CryptoProvider>,
    pub cert: DtlsCert,
    /// Seeded once (from the engine's seed): a seeded run draws the same
    /// credentials. Joins on several threads take turns (a few ns each).
    rng: Mutex<fastrand::Rng>,
}

impl JoinContext {
    /// One DTLS certificate for the whole engine (generating one costs
    /// ~0.6 ms); ICE credentials drawn from an RNG seeded with `seed`.
    pub fn new(seed: u64) -> Result<Self, Error> {
        let crypto = Arc::new(str0m::crypto::from_feature_flags());
        let cert = crypto
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| Error::Internal("DTLS certificate generation failed".into()))?;
        Ok(JoinContext {
            crypto,
            cert,
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
        })
    }

    /// `len` random characters for ICE credentials. Unguessable (the seed
    /// comes from the OS unless a run fixes it), not cryptographic-grade:
    /// ICE only needs a peer not to guess another's ufrag and password.
    fn random_token(&self, len: usize) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        // Nothing panics while holding the lock; a poisoned RNG is still an RNG.
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        (0..len)
            .map(|_| ALPHABET[rng.usize(..ALPHABET.len())] as char)
            .collect()
    }
}

/// A publisher's incoming track as the offer declared it.
#[derive(Debug, Clone)]
pub(crate) struct InTrack {
    pub mid: Mid,
    /// Simulcast rids, lowest layer first; empty without simulcast.
    pub rids: Vec<Rid>,
}

/// What the client's offer asked for, from the engine's point of view.
#[derive(Debug, Clone, Default)]
pub(crate) struct MediaLayout {
    pub audio_in: Option<InTrack>,
    pub camera_in: Option<InTrack>,
    pub screen_in: Option<InTrack>,
    /// The client's recvonly video m-lines: our video send slots.
    pub video_slots: Vec<Mid>,
    /// What each video slot negotiated (same order as `video_slots`).
    pub video_slot_pts: Vec<VideoPts>,
    /// The client's recvonly audio m-lines: our audio send slots.
    pub audio_slots: Vec<Mid>,
    pub has_data_channel: bool,
    /// Every video payload type of the session and its codec: what an
    /// incoming video packet's PT says it carries.
    pub video_pts: Vec<(Pt, VideoCodec)>,
    pub pt_opus: Option<Pt>,
}

impl MediaLayout {
    /// The codec of an incoming video packet, from its payload type.
    #[inline]
    pub fn video_codec(&self, pt: Pt) -> Option<VideoCodec> {
        self.video_pts
            .iter()
            .find(|(p, _)| *p == pt)
            .map(|(_, c)| *c)
    }
}

/// The payload type a video slot sends each codec with; `None`: the slot
/// did not negotiate it (the subscriber cannot decode it there).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct VideoPts {
    pub vp8: Option<Pt>,
    pub h264: Option<Pt>,
}

impl VideoPts {
    /// The payload type for `codec`, if negotiated.
    #[inline]
    pub fn pt(&self, codec: VideoCodec) -> Option<Pt> {
        match codec {
            VideoCodec::Vp8 => self.vp8,
            VideoCodec::H264 => self.h264,
        }
    }

    /// Whether the slot can carry `codec`.
    #[inline]
    pub fn accepts(&self, codec: VideoCodec) -> bool {
        self.pt(codec).is_some()
    }

    /// A VP8-only slot (PT 96), for unit tests of the slot logic.
    #[cfg(test)]
    pub fn vp8_for_tests() -> Self {
        VideoPts {
            vp8: Some(96.into()),
            h264: None,
        }
    }
}

/// A participant ready to be adopted by a shard.
pub(crate) struct Prepared {
    pub room: RoomId,
    pub id: ParticipantId,
    pub name: String,
    pub rtc: Rtc,
    pub ufrag: String,
    pub layout: MediaLayout,
    pub answer: String,
    /// Admitted into a locked room ([`crate::JoinOptions::rejoining`]).
    pub rejoining: bool,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("room", &self.room)
            .field("id", &self.id)
            .field("ufrag", &self.ufrag)
            .finish()
    }
}

/// Parse the offer, build the participant's `Rtc` (ICE-lite, RTP mode, the
/// engine's certificate) and accept the offer. ~2-5 ms of CPU: call off-shard.
#[allow(clippy::too_many_arguments)]
pub(crate) fn prepare(
    ctx: &JoinContext,
    room: RoomId,
    room_config: &RoomConfig,
    id: ParticipantId,
    name: String,
    offer_sdp: &str,
    candidate_addr: SocketAddr,
    tcp_candidate_addr: Option<SocketAddr>,
    now: Instant,
) -> Result<Prepared, Error> {
    let offer =
        SdpOffer::from_sdp_string(offer_sdp).map_err(|e| Error::MalformedSdp(e.to_string()))?;

    // The ufrag carries the participant id, so it is unique per engine and the
    // shard can route STUN by it; the rest is random.
    let ufrag = format!("pz{}{}", id.0, ctx.random_token(6));
    let creds = IceCreds {
        ufrag: ufrag.clone(),
        pass: ctx.random_token(24),
    };
    // str0m's own parse of the offer decides which m-lines there are (every
    // parsed m-line has exactly one a=mid): audio/video in offer order.
    let mids: Vec<Mid> = offer
        .media_lines
        .iter()
        .filter(|m| m.typ.is_media())
        .map(|m| m.mid())
        .collect();
    let has_data_channel = offer.media_lines.iter().any(|m| m.typ.is_channel());

    const STATS_INTERVAL: Duration = Duration::from_millis(200);
    let mut config = RtcConfig::new();
    if room_config.bandwidth_estimation {
        config = config
            .enable_bwe(Some(Bitrate::bps(room_config.initial_bitrate_bps)))
            .set_bwe_pacing_factor(room_config.pacing_factor)
            // Receiver reports reach the allocator through egress stats
            // (a heavily lossy one caps the estimate at once).
            .set_stats_interval(Some(STATS_INTERVAL));
    }
    let mut config = config
        .set_crypto_provider(ctx.crypto.clone())
        .set_dtls_cert(ctx.cert.clone())
        .set_local_ice_credentials(creds)
        .set_ice_lite(true)
        .set_rtp_mode(true)
        // Only what we forward: parsing a 55 m-line offer costs ~4x less.
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true);
    // H.264 after VP8 (the answer keeps the offer's order, so the client's
    // preference decides; the browser client puts VP8 first): constrained
    // baseline and baseline, packetization-mode 1 only (FU-A is what
    // browsers send at camera resolutions), each with RTX.
    for (pt, rtx, profile) in H264_PROFILES {
        config
            .codec_config()
            .add_h264((*pt).into(), Some((*rtx).into()), true, *profile);
    }
    let mut rtc = config.build(now);

    let unusable = |addr: SocketAddr, e: str0m::error::IceError| {
        Error::InvalidConfig(crate::config::ConfigError::new(
            "public_ip",
            format!("{addr} is no usable ICE host candidate: {e}"),
        ))
    };
    let candidate =
        Candidate::host(candidate_addr, "udp").map_err(|e| unusable(candidate_addr, e))?;
    rtc.add_local_candidate(candidate);
    // ICE-TCP (RFC 6544): a passive candidate, the client connects. Its
    // type preference (90 against UDP's 126) makes clients choose UDP
    // whenever both work.
    if let Some(addr) = tcp_candidate_addr {
        let c = Candidate::builder()
            .tcp()
            .host(addr)
            .tcptype(TcpType::Passive)
            .build()
            .map_err(|e| unusable(addr, e))?;
        rtc.add_local_candidate(c);
    }

    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| Error::Negotiation(e.to_string()))?;

    let mut layout = inspect(&mut rtc, &mids, room_config, has_data_channel)?;
    layout.has_data_channel = has_data_channel;
    Ok(Prepared {
        room,
        id,
        name,
        rtc,
        ufrag,
        layout,
        // Candidates in every m-section and a=end-of-candidates (answer.rs).
        answer: crate::answer::with_candidates_in_every_section(&answer.to_sdp_string()),
        rejoining: false,
    })
}

/// The codec the engine forwards under these payload parameters.
fn codec_of(p: &PayloadParams) -> Option<VideoCodec> {
    let spec = p.spec();
    match spec.codec {
        Codec::Vp8 => Some(VideoCodec::Vp8),
        // Only packetization-mode 1 is configured; a mode 0 stream would
        // need no FU-A, but nothing negotiates it.
        Codec::H264 if spec.format.packetization_mode == Some(1) => Some(VideoCodec::H264),
        _ => None,
    }
}

/// A slot's payload type per codec, from what its m-line negotiated
/// (`remote_pts`). For H.264 constrained baseline (42e01f) is preferred:
/// browser encoders produce it, and a baseline decoder decodes it too.
fn slot_pts(config: &CodecConfig, remote_pts: &[Pt]) -> VideoPts {
    let mut pts = VideoPts::default();
    let mut h264_baseline = None;
    for p in config.iter().filter(|p| remote_pts.contains(&p.pt())) {
        match codec_of(p) {
            Some(VideoCodec::Vp8) if pts.vp8.is_none() => pts.vp8 = Some(p.pt()),
            Some(VideoCodec::H264) => {
                if p.spec().format.profile_level_id == Some(0x42e01f) {
                    pts.h264 = pts.h264.or(Some(p.pt()));
                } else {
                    h264_baseline = h264_baseline.or(Some(p.pt()));
                }
            }
            _ => {}
        }
    }
    pts.h264 = pts.h264.or(h264_baseline);
    pts
}

/// Classify the offer's m-lines from our side: the first send video is the
/// camera, the second the screen share; recvonly lines are receive slots.
fn inspect(
    rtc: &mut Rtc,
    mids: &[Mid],
    room_config: &RoomConfig,
    has_data_channel: bool,
) -> Result<MediaLayout, Error> {
    let mut layout = MediaLayout::default();
    let mut unusable = 0;
    let mut usable = 0;
    for &mid in mids {
        let Some(media) = rtc.media(mid) else {
            unusable += 1;
            continue;
        };
        let direction = media.direction();
        if media.remote_pts().is_empty() || direction == Direction::Inactive {
            unusable += 1;
            continue;
        }
        usable += 1;
        // Directions are ours: the client's recvonly is our SendOnly.
        let we_receive = matches!(direction, Direction::RecvOnly | Direction::SendRecv);
        let we_send = matches!(direction, Direction::SendOnly);
        let rids: Vec<Rid> = match media.rids_rx() {
            Rids::Specific(r) => r.clone(),
            _ => Vec::new(),
        };
        let track = InTrack { mid, rids };
        match (media.kind(), we_receive, we_send) {
            (MediaKind::Audio, true, _) if layout.audio_in.is_none() => {
                layout.audio_in = Some(track)
            }
            (MediaKind::Video, true, _) if layout.camera_in.is_none() => {
                layout.camera_in = Some(track)
            }
            (MediaKind::Video, true, _) if layout.screen_in.is_none() => {
                layout.screen_in = Some(track)
            }
            (MediaKind::Audio, _, true) => layout.audio_slots.push(mid),
            (MediaKind::Video, _, true) => {
                layout.video_slots.push(mid);
                layout
                    .video_slot_pts
                    .push(slot_pts(rtc.codec_config(), media.remote_pts()));
            }
            // Extra send tracks beyond one audio, camera and screen are
            // accepted by SDP but not forwarded.
            _ => {}
        }
    }

    layout.video_pts = rtc
        .codec_config()
        .iter()
        .filter_map(|p| Some((p.pt(), codec_of(p)?)))
        .collect();
    layout.pt_opus = rtc
        .codec_config()
        .iter()
        .find(|p| p.spec().codec == Codec::Opus)
        .map(|p| p.pt());

    if usable == 0 && unusable > 0 {
        return Err(Error::NoUsableCodec);
    }
    if usable == 0 {
        // Data channel only is allowed (a listener that only wants control);
        // nothing at all is not.
        return if has_data_channel {
            Ok(layout)
        } else {
            Err(Error::EmptyOffer)
        };
    }
    if layout.video_slots.len() > room_config.max_video_slots {
        return Err(Error::TooManySlots {
            kind: "video",
            offered: layout.video_slots.len(),
            max: room_config.max_video_slots,
        });
    }
    if layout.audio_slots.len() > room_config.max_audio_slots {
        return Err(Error::TooManySlots {
            kind: "audio",
            offered: layout.audio_slots.len(),
            max: room_config.max_audio_slots,
        });
    }
    Ok(layout)
}
