//! ICE servers (STUN and TURN) handed to clients before they join, so a
//! participant whose network lets nothing through but a relay still joins.
//!
//! The engine itself is ICE-lite: it never contacts a STUN or TURN server.
//! A client behind a firewall that drops UDP to the engine allocates a relay
//! on a TURN server (RFC 8656) and sends its checks and media from there; the
//! engine answers the relayed address like any other.
//!
//! Each configured entry is one of:
//! - STUN or TURN URLs alone (no credentials: STUN);
//! - URLs with a fixed `username` and `credential` (RFC 8489 section 9.2
//!   long-term credentials, the same for everyone);
//! - URLs with a shared `secret`: time-limited credentials per the TURN REST
//!   convention (draft-uberti-behave-turn-rest, what coturn's
//!   `use-auth-secret` / `static-auth-secret` check): the username is
//!   `EXPIRY:SUBJECT` (EXPIRY in Unix seconds) and the password
//!   `base64(HMAC-SHA1(secret, username))`. The TURN server recomputes the
//!   password from the username and refuses it after EXPIRY; the secret
//!   never leaves the servers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Default lifetime of time-limited TURN credentials.
pub const DEFAULT_TURN_TTL: Duration = Duration::from_secs(3600);

/// One configured ICE server (TOML `[[ice_servers]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServerConfig {
    /// `stun:HOST:PORT`, `turn:HOST:PORT?transport=udp|tcp`, `turns:HOST:PORT`.
    pub urls: Vec<String>,
    /// Fixed long-term credentials (with `credential`).
    #[serde(default)]
    pub username: Option<String>,
    /// The password of `username`.
    #[serde(default)]
    pub credential: Option<String>,
    /// Shared secret for time-limited credentials (TURN REST convention).
    #[serde(default)]
    pub secret: Option<String>,
    /// Lifetime of time-limited credentials: seconds or text (`"1h"`).
    /// Default 1 h.
    #[serde(default, with = "ttl_serde")]
    pub ttl: Option<Duration>,
}

mod ttl_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Value {
        Seconds(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<Value>::deserialize(d)? {
            None => Ok(None),
            Some(Value::Seconds(s)) => Ok(Some(Duration::from_secs(s))),
            Some(Value::Text(t)) => super::super::parse_duration(&t)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

impl IceServerConfig {
    /// Refuse an entry that cannot serve, saying why.
    pub fn validate(&self) -> Result<(), String> {
        if self.urls.is_empty() {
            return Err("ice_servers: an entry has no urls".into());
        }
        for url in &self.urls {
            let scheme = url.split(':').next().unwrap_or_default();
            if !matches!(scheme, "stun" | "stuns" | "turn" | "turns") || !url.contains(':') {
                return Err(format!(
                    "ice_servers: {url:?} is not a stun:, stuns:, turn: or turns: URL (RFC 7064, RFC 7065)"
                ));
            }
        }
        let turn = self.urls.iter().any(|u| u.starts_with("turn"));
        match (&self.username, &self.credential, &self.secret) {
            (Some(_), Some(_), None) | (None, None, None) => {}
            (None, None, Some(s)) if s.len() >= 16 => {}
            (None, None, Some(_)) => {
                return Err("ice_servers: secret must be at least 16 bytes".into());
            }
            (Some(_), None, _) | (None, Some(_), _) => {
                return Err("ice_servers: username and credential go together".into());
            }
            (Some(_), Some(_), Some(_)) => {
                return Err(
                    "ice_servers: give either username and credential or secret, not both".into(),
                );
            }
        }
        if turn && self.username.is_none() && self.secret.is_none() {
            return Err(format!(
                "ice_servers: TURN URLs {:?} need username and credential or a secret",
                self.urls
            ));
        }
        if let Some(ttl) = self.ttl
            && (ttl.is_zero() || ttl > Duration::from_secs(7 * 24 * 3600))
        {
            return Err("ice_servers: ttl must be longer than zero and at most 7 days".into());
        }
        Ok(())
    }
}

/// An ICE server as the client's `RTCPeerConnection` takes it
/// (`RTCIceServer` of the W3C WebRTC API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IceServer {
    /// The entry's STUN/TURN URLs.
    pub urls: Vec<String>,
    /// Fixed or minted (`EXPIRY:SUBJECT`) username; none for STUN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The password for `username`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// The ICE servers for one client: fixed entries as configured,
/// time-limited ones with credentials minted for `subject` (who asks:
/// the room and the token's subject), valid until `now + ttl`. Returns the
/// list and the earliest expiry of a minted credential.
pub fn ice_servers_for(
    config: &[IceServerConfig],
    subject: &str,
    now: SystemTime,
) -> (Vec<IceServer>, Option<SystemTime>) {
    let mut earliest: Option<SystemTime> = None;
    let servers = config
        .iter()
        .map(|c| match &c.secret {
            Some(secret) => {
                let expiry = now + c.ttl.unwrap_or(DEFAULT_TURN_TTL);
                earliest = Some(earliest.map_or(expiry, |e| e.min(expiry)));
                let secs = expiry
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                let username = format!("{secs}:{subject}");
                let credential = turn_rest_password(secret.as_bytes(), &username);
                IceServer {
                    urls: c.urls.clone(),
                    username: Some(username),
                    credential: Some(credential),
                }
            }
            None => IceServer {
                urls: c.urls.clone(),
                username: c.username.clone(),
                credential: c.credential.clone(),
            },
        })
        .collect();
    (servers, earliest)
}

/// `base64(HMAC-SHA1(secret, username))`: the TURN REST password (SHA-1
/// because that is what TURN servers compute; HMAC-SHA1 is not weakened by
/// SHA-1's collisions).
pub fn turn_rest_password(secret: &[u8], username: &str) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = aws_lc_rs::hmac::sign(&key, username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_rest_password_matches_rfc_2202_and_coturn() {
        // RFC 2202 test case 2: HMAC-SHA1("Jefe", "what do ya want for nothing?")
        // = effcdf6ae5eb2fa2d27416d5f184df9c259a7c79.
        assert_eq!(
            turn_rest_password(b"Jefe", "what do ya want for nothing?"),
            "7/zfauXrL6LSdBbV8YTfnCWafHk="
        );
    }

    #[test]
    fn time_limited_entries_get_minted_credentials() {
        let config = vec![
            IceServerConfig {
                urls: vec!["stun:stun.example.com:3478".into()],
                username: None,
                credential: None,
                secret: None,
                ttl: None,
            },
            IceServerConfig {
                urls: vec!["turn:turn.example.com:3478?transport=udp".into()],
                username: None,
                credential: None,
                secret: Some("0123456789abcdef-secret".into()),
                ttl: Some(Duration::from_secs(600)),
            },
        ];
        for c in &config {
            c.validate().unwrap();
        }
        let now = UNIX_EPOCH + Duration::from_secs(1_900_000_000);
        let (servers, expiry) = ice_servers_for(&config, "room1:p7", now);
        assert_eq!(servers[0].username, None);
        assert_eq!(servers[1].username.as_deref(), Some("1900000600:room1:p7"));
        assert_eq!(
            servers[1].credential.as_deref(),
            Some(turn_rest_password(b"0123456789abcdef-secret", "1900000600:room1:p7").as_str())
        );
        assert_eq!(expiry, Some(now + Duration::from_secs(600)));
        let json = serde_json::to_string(&servers[0]).unwrap();
        assert_eq!(json, r#"{"urls":["stun:stun.example.com:3478"]}"#);
    }

    #[test]
    fn bad_entries_say_what_is_wrong() {
        let entry = |urls: &[&str], user: Option<&str>, secret: Option<&str>| IceServerConfig {
            urls: urls.iter().map(|u| u.to_string()).collect(),
            username: user.map(String::from),
            credential: user.map(String::from),
            secret: secret.map(String::from),
            ttl: None,
        };
        let e = entry(&["http://x"], None, None).validate().unwrap_err();
        assert!(e.contains("not a stun"), "{e}");
        let e = entry(&["turn:x:3478"], None, None).validate().unwrap_err();
        assert!(e.contains("need username"), "{e}");
        let e = entry(&["turn:x:3478"], None, Some("short"))
            .validate()
            .unwrap_err();
        assert!(e.contains("16 bytes"), "{e}");
        let e = entry(&["turn:x:3478"], Some("u"), Some("0123456789abcdef"))
            .validate()
            .unwrap_err();
        assert!(e.contains("not both"), "{e}");
        let e = entry(&[], None, None).validate().unwrap_err();
        assert!(e.contains("no urls"), "{e}");
        entry(&["turn:x:3478"], Some("u"), None).validate().unwrap();
    }
}
