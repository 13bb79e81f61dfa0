//! JSON Web Tokens for the tests of JWT authentication: the clock they are dated by and HS256 signing.

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

/// Seconds since the Unix epoch (what `exp` and `nbf` count).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `claims` signed with HS256 and `secret`.
pub fn hs256_token(claims: &serde_json::Value, secret: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}
