//! Room tokens: HMAC-SHA256 signed JWTs (RFC 7519), scoped to one room,
//! carrying grants and an expiry.
//!
//! | token | `sub` | grants | minted by |
//! |---|---|---|---|
//! | owner | `owner` | join, publish, subscribe, admin | `POST /v1/rooms` |
//! | invite | `invite` | join, publish, subscribe | `POST /v1/rooms` (in the invite link), `POST /v1/rooms/{room}/tokens` |
//! | participant | `p12` | those of the token it joined with | a successful join (`X-Piazza-Token`) |
//!
//! A participant token identifies one participant: it can leave, rejoin
//! (replacing its old session) and, with `admin`, control the room. The
//! server refuses the participant tokens of kicked participants.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use crate::ParticipantId;

const ISSUER: &str = "piazza";

/// What a token allows in its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Grant {
    /// Join the room (`POST .../participants`).
    Join,
    /// Publish audio and video (send m-lines in the offer).
    Publish,
    /// Receive others (recvonly m-lines in the offer).
    Subscribe,
    /// Room owner: lock, kick, mint tokens, close; join before `starts_at`.
    Admin,
}

impl Grant {
    /// Every grant, the owner's set.
    pub const ALL: [Grant; 4] = [Grant::Join, Grant::Publish, Grant::Subscribe, Grant::Admin];
    /// What an invite link carries.
    pub const GUEST: [Grant; 3] = [Grant::Join, Grant::Publish, Grant::Subscribe];
}

/// The signed content of a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Always `piazza`.
    pub iss: String,
    /// The room's public id.
    pub room: String,
    /// `owner`, `invite`, or the participant id (`p12`).
    pub sub: String,
    /// What the token allows.
    pub grants: Vec<Grant>,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

impl Claims {
    /// Claims for `room`, valid for `ttl` from now.
    pub fn new(room: &str, sub: impl Into<String>, grants: &[Grant], ttl: Duration) -> Self {
        let now = unix_now();
        Claims {
            iss: ISSUER.into(),
            room: room.into(),
            sub: sub.into(),
            grants: grants.to_vec(),
            iat: now,
            exp: now.saturating_add(ttl.as_secs()),
        }
    }

    /// Whether the token carries `grant`.
    pub fn has(&self, grant: Grant) -> bool {
        self.grants.contains(&grant)
    }

    /// The participant this token belongs to, for participant tokens.
    pub fn participant(&self) -> Option<ParticipantId> {
        self.sub.parse().ok()
    }

    /// Expiry as a time.
    pub fn expires_at(&self) -> SystemTime {
        UNIX_EPOCH
            .checked_add(Duration::from_secs(self.exp))
            .unwrap_or(UNIX_EPOCH)
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Signs and verifies tokens with one HMAC secret.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(..)")
    }
}

impl TokenKeys {
    /// Keys from a secret (use at least 32 random bytes).
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss"]);
        TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Sign claims into a compact JWT.
    pub fn sign(&self, claims: &Claims) -> Result<String, ApiError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| ApiError::internal(format!("could not sign a token: {e}")))
    }

    /// Verify a token's signature, issuer and expiry; 401 otherwise.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) => Ok(data.claims),
            Err(e) => Err(match e.kind() {
                ErrorKind::ExpiredSignature => ApiError::unauthorized(
                    "token_expired",
                    "the token has expired; ask the room owner for a new invite link",
                ),
                ErrorKind::InvalidSignature => ApiError::unauthorized(
                    "invalid_token",
                    "the token's signature does not verify (tampered, or from another server)",
                ),
                _ => ApiError::unauthorized(
                    "invalid_token",
                    format!("the token is not a valid Piazza token: {e}"),
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let keys = TokenKeys::new(b"0123456789abcdef0123456789abcdef");
        let claims = Claims::new("abc", "invite", &Grant::GUEST, Duration::from_secs(60));
        let token = keys.sign(&claims).unwrap();
        assert_eq!(keys.verify(&token).unwrap(), claims);

        // Flip one character of the signature.
        let mut bad = token.clone().into_bytes();
        let last = bad.len() - 2;
        bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
        let err = keys.verify(std::str::from_utf8(&bad).unwrap()).unwrap_err();
        assert_eq!(err.code, "invalid_token");

        let other = TokenKeys::new(b"another secret, another server!!");
        assert_eq!(other.verify(&token).unwrap_err().code, "invalid_token");
        assert_eq!(keys.verify("garbage").unwrap_err().code, "invalid_token");
    }

    #[test]
    fn expired_tokens_are_refused() {
        let keys = TokenKeys::new(b"0123456789abcdef0123456789abcdef");
        let mut claims = Claims::new("abc", "invite", &Grant::GUEST, Duration::ZERO);
        claims.exp -= 10;
        let token = keys.sign(&claims).unwrap();
        assert_eq!(keys.verify(&token).unwrap_err().code, "token_expired");
    }
}
