//! Room chat and the end-to-end encryption key relay, both carried on the
//! control data channel (see `docs/api.md`, "Chat").
//!
//! A pure state machine like the rest of the core: [`Chat::post`] and
//! [`Chat::relay_key`] take the sender, the message and `now`, check the
//! limits and return what to deliver to whom; the room writes it to the
//! data channels. What it keeps is a bounded history (by count and by
//! bytes) for participants who join later, and one pair of token buckets
//! per participant. Nothing here logs a message's text, in any room.
//!
//! In an end-to-end encrypted room the text is ciphertext the server cannot
//! read (`docs/e2ee.md`); the chat requires the `encrypted` flag there so a
//! client that does not encrypt is refused instead of leaking. Key-exchange
//! messages (`key`) are relayed as opaque strings, only in such rooms, and
//! never kept.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::core::control::ServerMessage;
use crate::ids::ParticipantId;

/// Limits of a room's chat. Part of [`RoomConfig`](crate::RoomConfig).
#[derive(Debug, Clone, PartialEq)]
pub struct ChatConfig {
    /// Longest `text` accepted, in bytes of UTF-8 (for an encrypted
    /// message, of its base64 ciphertext). Default 4096. Longer messages
    /// are refused with `too_long`.
    pub max_text_bytes: usize,
    /// Messages to everyone kept for later joiners. Default 100.
    pub history_messages: usize,
    /// Bytes of text kept for later joiners (the oldest messages go first).
    /// Default 48 KiB: the whole history is written to a joiner's control
    /// channel at once, and str0m buffers at most 128 KiB per peer.
    pub history_bytes: usize,
    /// Messages one participant may send at once before
    /// [`ChatConfig::per_second`] applies. Default 10.
    pub burst: u32,
    /// Sustained messages per second per participant. Default 1.
    pub per_second: f64,
    /// Longest key-exchange message, in bytes. Default 2048 (a wrapped key
    /// with its public key and MAC is about 400 bytes).
    pub max_key_bytes: usize,
    /// Key-exchange messages one participant may send at once. Default 300:
    /// after a departure every sender sends its new key to each of up to 49
    /// others, and a joiner answers every hello.
    pub key_burst: u32,
    /// Sustained key-exchange messages per second per participant.
    /// Default 100.
    pub key_per_second: f64,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            max_text_bytes: 4096,
            history_messages: 100,
            history_bytes: 48 * 1024,
            burst: 10,
            per_second: 1.0,
            max_key_bytes: 2048,
            key_burst: 300,
            key_per_second: 100.0,
        }
    }
}

/// Why a chat or key message was refused. The `code` strings are the API's
/// (`chat_error` messages, `docs/api.md`).
#[derive(Debug, Clone, PartialEq)]
pub enum ChatError {
    /// The text is empty (or only whitespace).
    Empty,
    /// The text is longer than [`ChatConfig::max_text_bytes`].
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The text holds control characters other than newline and tab.
    ControlCharacters,
    /// The sender exceeded its rate; it may send again after this long.
    RateLimited {
        /// Time until one more message is allowed.
        retry_after: Duration,
    },
    /// `to` names nobody in the room.
    UnknownRecipient {
        /// The id given.
        to: String,
    },
    /// `to` is the sender itself.
    ToSelf,
    /// The room is end-to-end encrypted and the message is not.
    EncryptionRequired,
    /// A key-exchange message in a room without end-to-end encryption.
    NotEncryptedRoom,
    /// The client's `local_id` is longer than 64 bytes.
    LocalIdTooLong,
}

impl ChatError {
    /// The stable code sent to the client.
    pub fn code(&self) -> &'static str {
        match self {
            ChatError::Empty => "empty",
            ChatError::TooLong { .. } => "too_long",
            ChatError::ControlCharacters => "control_characters",
            ChatError::RateLimited { .. } => "rate_limited",
            ChatError::UnknownRecipient { .. } => "unknown_recipient",
            ChatError::ToSelf => "to_self",
            ChatError::EncryptionRequired => "encryption_required",
            ChatError::NotEncryptedRoom => "not_encrypted_room",
            ChatError::LocalIdTooLong => "local_id_too_long",
        }
    }
}

impl std::fmt::Display for ChatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChatError::Empty => write!(f, "the message is empty"),
            ChatError::TooLong { len, max } => write!(
                f,
                "the message is {len} bytes; the most this room accepts is {max}: shorten it or split it"
            ),
            ChatError::ControlCharacters => write!(
                f,
                "the message holds control characters (only newline and tab are allowed)"
            ),
            ChatError::RateLimited { retry_after } => write!(
                f,
                "too many messages: wait {} ms before sending the next one",
                retry_after.as_millis().max(1)
            ),
            ChatError::UnknownRecipient { to } => {
                write!(f, "nobody in this room has the id {to:?}")
            }
            ChatError::ToSelf => write!(f, "a private message needs another participant"),
            ChatError::EncryptionRequired => write!(
                f,
                "this room is end-to-end encrypted: the client must encrypt chat messages (set \"encrypted\": true)"
            ),
            ChatError::NotEncryptedRoom => write!(
                f,
                "key-exchange messages are only relayed in end-to-end encrypted rooms"
            ),
            ChatError::LocalIdTooLong => write!(f, "local_id must be at most 64 bytes"),
        }
    }
}

impl std::error::Error for ChatError {}

/// Who receives a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipients {
    /// Every participant, the sender included (its copy confirms the send).
    All,
    /// One participant and the sender.
    One(ParticipantId),
    /// One participant only (key exchange: the sender needs no copy).
    Only(ParticipantId),
    /// Everyone but the sender (key exchange).
    Others,
}

/// A message to deliver, and to whom.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// To whom.
    pub to: Recipients,
    /// What.
    pub message: ServerMessage,
}

/// One chat message as sent by a client (the fields of
/// [`ClientMessage::Chat`](crate::core::control::ClientMessage::Chat)).
#[derive(Debug, Clone, Copy)]
pub struct Post<'a> {
    /// The text (ciphertext when `encrypted`).
    pub text: &'a str,
    /// Recipient id, or `None` for everyone.
    pub to: Option<&'a str>,
    /// The client says the text is end-to-end encrypted.
    pub encrypted: bool,
    /// The client's own reference, echoed back.
    pub local_id: Option<&'a str>,
}

/// Counters of one room's chat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChatStats {
    /// Messages accepted (to everyone or private).
    pub messages: u64,
    /// Messages refused (any reason).
    pub refused: u64,
    /// Of those, refused by the rate limit.
    pub rate_limited: u64,
    /// Key-exchange messages relayed.
    pub key_messages: u64,
    /// History messages dropped to stay within the bounds.
    pub history_evicted: u64,
}

/// A token bucket: `burst` deep, refilled at `rate` per second.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(burst: u32, now: Instant) -> Self {
        Bucket {
            tokens: f64::from(burst),
            at: now,
        }
    }

    /// Take one token, or say how long until one is there.
    fn take(&mut self, burst: u32, rate: f64, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now.max(self.at);
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else if rate > 0.0 {
            Err(Duration::from_secs_f64(
                ((1.0 - self.tokens) / rate).min(3600.0),
            ))
        } else {
            Err(Duration::from_secs(3600))
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    chat: Bucket,
    keys: Bucket,
}

/// A room's chat: ids, history and limits.
#[derive(Debug)]
pub struct Chat {
    config: ChatConfig,
    e2ee: bool,
    next_id: u64,
    history: VecDeque<ServerMessage>,
    history_bytes: usize,
    limits: HashMap<ParticipantId, Limits>,
    /// `(instant, Unix ms)` pairing the room's clock with the wall clock,
    /// taken at the first message (see [`Chat::unix_ms`]).
    anchor: Option<(Instant, u64)>,
    stats: ChatStats,
}

impl Chat {
    /// A room's chat; `e2ee` requires encrypted messages and enables the
    /// key relay.
    pub fn new(config: ChatConfig, e2ee: bool) -> Self {
        Chat {
            config,
            e2ee,
            next_id: 1,
            history: VecDeque::new(),
            history_bytes: 0,
            limits: HashMap::new(),
            anchor: None,
            stats: ChatStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> ChatStats {
        self.stats
    }

    /// The messages to everyone kept for later joiners, oldest first (each
    /// with `history: true`).
    pub fn history(&self) -> impl Iterator<Item = &ServerMessage> {
        self.history.iter()
    }

    /// Forget a participant's rate limits (it left).
    pub fn forget(&mut self, p: ParticipantId) {
        self.limits.remove(&p);
    }

    /// Label messages with wall-clock times: at `at` the wall clock read
    /// `unix_ms`. The driver reads the clock, never the core: the shard
    /// thread passes `Instant::now()` and `SystemTime::now()` read together,
    /// the simulator a fixed anchor, so a seeded run replays exactly.
    pub fn set_wall_clock(&mut self, at: Instant, unix_ms: u64) {
        self.anchor = Some((at, unix_ms));
    }

    /// The message's time in Unix milliseconds: the wall-clock anchor plus
    /// the room's own `now` since then. Without an anchor
    /// ([`Chat::set_wall_clock`]) times count from the room's first message
    /// as if it were sent at the Unix epoch.
    fn unix_ms(&mut self, now: Instant) -> u64 {
        let (at, ms) = *self.anchor.get_or_insert((now, 0));
        ms + now.saturating_duration_since(at).as_millis() as u64
    }

    fn limits(&mut self, p: ParticipantId, now: Instant) -> &mut Limits {
        let c = &self.config;
        let (burst, key_burst) = (c.burst, c.key_burst);
        self.limits.entry(p).or_insert_with(|| Limits {
            chat: Bucket::new(burst, now),
            keys: Bucket::new(key_burst, now),
        })
    }

    /// A chat message from `from` (named `name`); `present` says whether an
    /// id is in the room. Returns the message to deliver, or why not.
    pub fn post(
        &mut self,
        from: ParticipantId,
        name: &str,
        post: Post<'_>,
        present: impl Fn(ParticipantId) -> bool,
        now: Instant,
    ) -> Result<Delivery, ChatError> {
        let result = self.check_post(from, post, present, now);
        let to = match result {
            Ok(to) => to,
            Err(e) => {
                self.stats.refused += 1;
                if matches!(e, ChatError::RateLimited { .. }) {
                    self.stats.rate_limited += 1;
                }
                return Err(e);
            }
        };
        self.stats.messages += 1;
        let id = self.next_id;
        self.next_id += 1;
        let message = ServerMessage::Chat {
            id,
            from: from.to_string(),
            name: name.to_string(),
            to: to.map(|p| p.to_string()),
            time: self.unix_ms(now),
            text: post.text.to_string(),
            encrypted: post.encrypted,
            history: false,
            local_id: post.local_id.map(str::to_string),
        };
        match to {
            Some(p) => Ok(Delivery {
                to: Recipients::One(p),
                message,
            }),
            None => {
                self.remember(&message);
                Ok(Delivery {
                    to: Recipients::All,
                    message,
                })
            }
        }
    }

    fn check_post(
        &mut self,
        from: ParticipantId,
        post: Post<'_>,
        present: impl Fn(ParticipantId) -> bool,
        now: Instant,
    ) -> Result<Option<ParticipantId>, ChatError> {
        if post.local_id.is_some_and(|l| l.len() > 64) {
            return Err(ChatError::LocalIdTooLong);
        }
        if post.text.trim().is_empty() {
            return Err(ChatError::Empty);
        }
        let max = self.config.max_text_bytes;
        if post.text.len() > max {
            return Err(ChatError::TooLong {
                len: post.text.len(),
                max,
            });
        }
        if post
            .text
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            return Err(ChatError::ControlCharacters);
        }
        if self.e2ee && !post.encrypted {
            return Err(ChatError::EncryptionRequired);
        }
        let to = match post.to {
            None => None,
            Some(s) => {
                let p = s
                    .parse::<ParticipantId>()
                    .ok()
                    .filter(|p| present(*p))
                    .ok_or_else(|| ChatError::UnknownRecipient { to: s.to_string() })?;
                if p == from {
                    return Err(ChatError::ToSelf);
                }
                Some(p)
            }
        };
        // Limits last: a refused message costs no token.
        let (burst, rate) = (self.config.burst, self.config.per_second);
        self.limits(from, now)
            .chat
            .take(burst, rate, now)
            .map_err(|retry_after| ChatError::RateLimited { retry_after })?;
        Ok(to)
    }

    /// Keep a message to everyone, evicting the oldest beyond the bounds.
    fn remember(&mut self, message: &ServerMessage) {
        let ServerMessage::Chat { text, .. } = message else {
            return;
        };
        let mut kept = message.clone();
        if let ServerMessage::Chat { history, .. } = &mut kept {
            *history = true;
        }
        self.history_bytes += text.len();
        self.history.push_back(kept);
        while self.history.len() > self.config.history_messages
            || (self.history_bytes > self.config.history_bytes && !self.history.is_empty())
        {
            if let Some(ServerMessage::Chat { text, .. }) = self.history.pop_front() {
                self.history_bytes -= text.len();
            }
            self.stats.history_evicted += 1;
        }
    }

    /// A key-exchange message: relayed as is to one participant or to
    /// every other, never kept.
    pub fn relay_key(
        &mut self,
        from: ParticipantId,
        to: Option<&str>,
        data: &str,
        present: impl Fn(ParticipantId) -> bool,
        now: Instant,
    ) -> Result<Delivery, ChatError> {
        let result = self.check_key(from, to, data, present, now);
        match result {
            Ok(to) => {
                self.stats.key_messages += 1;
                Ok(Delivery {
                    to: to.map_or(Recipients::Others, Recipients::Only),
                    message: ServerMessage::Key {
                        from: from.to_string(),
                        data: data.to_string(),
                    },
                })
            }
            Err(e) => {
                self.stats.refused += 1;
                if matches!(e, ChatError::RateLimited { .. }) {
                    self.stats.rate_limited += 1;
                }
                Err(e)
            }
        }
    }

    fn check_key(
        &mut self,
        from: ParticipantId,
        to: Option<&str>,
        data: &str,
        present: impl Fn(ParticipantId) -> bool,
        now: Instant,
    ) -> Result<Option<ParticipantId>, ChatError> {
        if !self.e2ee {
            return Err(ChatError::NotEncryptedRoom);
        }
        if data.is_empty() {
            return Err(ChatError::Empty);
        }
        let max = self.config.max_key_bytes;
        if data.len() > max {
            return Err(ChatError::TooLong {
                len: data.len(),
                max,
            });
        }
        if data.chars().any(char::is_control) {
            return Err(ChatError::ControlCharacters);
        }
        let to = match to {
            None => None,
            Some(s) => {
                let p = s
                    .parse::<ParticipantId>()
                    .ok()
                    .filter(|p| present(*p))
                    .ok_or_else(|| ChatError::UnknownRecipient { to: s.to_string() })?;
                if p == from {
                    return Err(ChatError::ToSelf);
                }
                Some(p)
            }
        };
        let (burst, rate) = (self.config.key_burst, self.config.key_per_second);
        self.limits(from, now)
            .keys
            .take(burst, rate, now)
            .map_err(|retry_after| ChatError::RateLimited { retry_after })?;
        Ok(to)
    }
}

/// The `chat_error` message for a refusal.
pub fn error_message(e: &ChatError, local_id: Option<&str>) -> ServerMessage {
    ServerMessage::ChatError {
        code: e.code().to_string(),
        message: e.to_string(),
        local_id: local_id.map(str::to_string),
        retry_after_ms: match e {
            ChatError::RateLimited { retry_after } => Some(retry_after.as_millis().max(1) as u64),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(n: u32) -> ParticipantId {
        ParticipantId::from_raw(n)
    }

    fn post(text: &str) -> Post<'_> {
        Post {
            text,
            to: None,
            encrypted: false,
            local_id: None,
        }
    }

    fn everyone(_: ParticipantId) -> bool {
        true
    }

    #[test]
    fn messages_get_increasing_ids_sender_and_time() {
        let mut chat = Chat::new(ChatConfig::default(), false);
        let t0 = Instant::now();
        let a = chat
            .post(pid(1), "Ann", post("hello"), everyone, t0)
            .unwrap();
        let b = chat
            .post(
                pid(2),
                "Bob",
                post("hi"),
                everyone,
                t0 + Duration::from_secs(2),
            )
            .unwrap();
        let (
            ServerMessage::Chat {
                id: ia,
                from,
                name,
                time: ta,
                ..
            },
            ServerMessage::Chat {
                id: ib, time: tb, ..
            },
        ) = (&a.message, &b.message)
        else {
            panic!("chat messages expected");
        };
        assert_eq!((*ia, *ib), (1, 2));
        assert_eq!((from.as_str(), name.as_str()), ("p1", "Ann"));
        assert_eq!(tb - ta, 2000);
        assert_eq!(a.to, Recipients::All);
    }

    #[test]
    fn private_messages_go_to_one_and_are_not_kept() {
        let mut chat = Chat::new(ChatConfig::default(), false);
        let now = Instant::now();
        let p = Post {
            to: Some("p2"),
            ..post("psst")
        };
        let d = chat.post(pid(1), "Ann", p, everyone, now).unwrap();
        assert_eq!(d.to, Recipients::One(pid(2)));
        assert_eq!(chat.history().count(), 0);
        let nobody = Post {
            to: Some("p9"),
            ..post("psst")
        };
        let err = chat
            .post(pid(1), "Ann", nobody, |p| p != pid(9), now)
            .unwrap_err();
        assert_eq!(err.code(), "unknown_recipient");
        let me = Post {
            to: Some("p1"),
            ..post("psst")
        };
        assert_eq!(
            chat.post(pid(1), "Ann", me, everyone, now).unwrap_err(),
            ChatError::ToSelf
        );
    }

    #[test]
    fn size_and_content_limits_give_clear_errors() {
        let config = ChatConfig {
            max_text_bytes: 10,
            ..ChatConfig::default()
        };
        let mut chat = Chat::new(config, false);
        let now = Instant::now();
        let e = chat
            .post(pid(1), "Ann", post("01234567890"), everyone, now)
            .unwrap_err();
        assert_eq!(e, ChatError::TooLong { len: 11, max: 10 });
        assert!(e.to_string().contains("11 bytes"), "{e}");
        assert_eq!(
            chat.post(pid(1), "Ann", post("  \n"), everyone, now)
                .unwrap_err(),
            ChatError::Empty
        );
        assert_eq!(
            chat.post(pid(1), "Ann", post("a\u{7}b"), everyone, now)
                .unwrap_err(),
            ChatError::ControlCharacters
        );
        assert!(
            chat.post(pid(1), "Ann", post("a\nb\tc"), everyone, now)
                .is_ok()
        );
        let long_ref = "x".repeat(65);
        let p = Post {
            local_id: Some(&long_ref),
            ..post("hi")
        };
        assert_eq!(
            chat.post(pid(1), "Ann", p, everyone, now).unwrap_err(),
            ChatError::LocalIdTooLong
        );
        assert_eq!(chat.stats().refused, 4);
    }

    #[test]
    fn rate_limit_allows_a_burst_then_one_per_interval() {
        let mut chat = Chat::new(ChatConfig::default(), false);
        let t0 = Instant::now();
        for i in 0..10 {
            assert!(
                chat.post(pid(1), "Ann", post("x"), everyone, t0).is_ok(),
                "message {i} of the burst"
            );
        }
        let e = chat
            .post(pid(1), "Ann", post("x"), everyone, t0)
            .unwrap_err();
        let ChatError::RateLimited { retry_after } = e else {
            panic!("{e:?}");
        };
        assert_eq!(retry_after, Duration::from_secs(1));
        let m = error_message(&e, Some("c7"));
        let ServerMessage::ChatError {
            code,
            retry_after_ms,
            local_id,
            ..
        } = m
        else {
            panic!()
        };
        assert_eq!(
            (code.as_str(), retry_after_ms, local_id.as_deref()),
            ("rate_limited", Some(1000), Some("c7"))
        );
        // Another participant has its own budget.
        assert!(chat.post(pid(2), "Bob", post("x"), everyone, t0).is_ok());
        // One second later, one more.
        let t1 = t0 + Duration::from_secs(1);
        assert!(chat.post(pid(1), "Ann", post("x"), everyone, t1).is_ok());
        assert!(chat.post(pid(1), "Ann", post("x"), everyone, t1).is_err());
        assert_eq!(chat.stats().rate_limited, 2);
    }

    #[test]
    fn history_is_bounded_by_count_and_bytes() {
        let config = ChatConfig {
            history_messages: 5,
            history_bytes: 100,
            burst: 1000,
            ..ChatConfig::default()
        };
        let mut chat = Chat::new(config, false);
        let now = Instant::now();
        for i in 0..20 {
            chat.post(pid(1), "Ann", post(&format!("m{i}")), everyone, now)
                .unwrap();
        }
        let kept: Vec<u64> = chat
            .history()
            .map(|m| match m {
                ServerMessage::Chat { id, history, .. } => {
                    assert!(history);
                    *id
                }
                _ => panic!(),
            })
            .collect();
        assert_eq!(kept, vec![16, 17, 18, 19, 20]);
        let big = "y".repeat(60);
        chat.post(pid(1), "Ann", post(&big), everyone, now).unwrap();
        chat.post(pid(1), "Ann", post(&big), everyone, now).unwrap();
        assert_eq!(
            chat.history().count(),
            1,
            "two 60-byte texts exceed 100 bytes"
        );
        assert_eq!(
            chat.stats().history_evicted,
            21,
            "15 by count, then 6 to fit the bytes"
        );
    }

    #[test]
    fn e2ee_rooms_require_encrypted_chat_and_relay_keys() {
        let mut chat = Chat::new(ChatConfig::default(), true);
        let now = Instant::now();
        assert_eq!(
            chat.post(pid(1), "Ann", post("plain"), everyone, now)
                .unwrap_err(),
            ChatError::EncryptionRequired
        );
        let sealed = Post {
            encrypted: true,
            ..post("AAEC")
        };
        assert!(chat.post(pid(1), "Ann", sealed, everyone, now).is_ok());
        let d = chat
            .relay_key(pid(1), None, "hello", everyone, now)
            .unwrap();
        assert_eq!(d.to, Recipients::Others);
        let d = chat
            .relay_key(pid(1), Some("p2"), "wrapped", everyone, now)
            .unwrap();
        assert_eq!(d.to, Recipients::Only(pid(2)));
        assert_eq!(
            d.message,
            ServerMessage::Key {
                from: "p1".into(),
                data: "wrapped".into()
            }
        );
        let mut plain = Chat::new(ChatConfig::default(), false);
        assert_eq!(
            plain
                .relay_key(pid(1), None, "x", everyone, now)
                .unwrap_err(),
            ChatError::NotEncryptedRoom
        );
        let big = "k".repeat(2049);
        assert_eq!(
            chat.relay_key(pid(1), None, &big, everyone, now)
                .unwrap_err()
                .code(),
            "too_long"
        );
    }
}
