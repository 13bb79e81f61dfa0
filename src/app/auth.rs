//! JWT authentication at the upgrade and the topic permissions a token grants (`--auth-jwt-secret*`,
//! `--auth-jwt-public-key`; docs/PROTOCOL.md, "Authentication").
//!
//! Owns where a token is read from ([`token_of`]: `Authorization: Bearer`, else `?token=`), its
//! verification ([`Auth::verify`], with the `jsonwebtoken` crate: HS256 with the secret, RS256/ES256 with
//! the public key, no leeway), the mapping of every failure to an [`AuthFailure`] (the 401's reason and
//! metrics label), and the claims' permissions ([`Grant`], [`Permissions::allows`]: exact names and
//! `prefix*` patterns). Never answers, counts or closes anything itself: `PubSub` does, through the
//! worker. Runs once per upgrade, never per message: a permission check is a scan of the token's
//! patterns, with no allocation.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

pub use crate::server::AuthFailure;

/// What the server verifies tokens with: a shared secret (HS256), a public key (RS256 or ES256), or both.
pub struct Auth {
    secret: Option<(DecodingKey, Validation)>,
    public: Option<(DecodingKey, Validation)>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("hs256", &self.secret.is_some())
            .field(
                "public_key",
                &self.public.as_ref().map(|(_, v)| v.algorithms[0]),
            )
            .finish()
    }
}

/// A public key file that is neither an RSA nor an EC P-256 public key in PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError(pub String);

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeyError {}

fn validation(algorithm: Algorithm) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = 0;
    validation.validate_nbf = true;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "sub"]);
    validation
}

impl Auth {
    /// Verifies HS256 tokens with `secret`.
    pub fn hs256(secret: &[u8]) -> Auth {
        Auth {
            secret: Some((
                DecodingKey::from_secret(secret),
                validation(Algorithm::HS256),
            )),
            public: None,
        }
    }

    /// Verifies RS256 or ES256 tokens (by the key's type) with a PEM public key (`BEGIN PUBLIC KEY`, or
    /// `BEGIN RSA PUBLIC KEY`).
    pub fn public_key_pem(pem: &[u8]) -> Result<Auth, KeyError> {
        Auth {
            secret: None,
            public: None,
        }
        .with_public_key_pem(pem)
    }

    /// This verifier, also accepting RS256 or ES256 tokens signed for `pem`'s key.
    pub fn with_public_key_pem(mut self, pem: &[u8]) -> Result<Auth, KeyError> {
        let public = if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            (key, validation(Algorithm::ES256))
        } else if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            (key, validation(Algorithm::RS256))
        } else {
            return Err(KeyError(
                "not a PEM RSA or EC P-256 public key (BEGIN PUBLIC KEY)".into(),
            ));
        };
        self.public = Some(public);
        Ok(self)
    }

    /// The grant of the token an upgrade request carries: read by [`token_of`], then [`Auth::verify`].
    pub fn check(&self, authorization: Option<&[u8]>, path: &str) -> Result<Grant, AuthFailure> {
        self.verify(token_of(authorization, path)?)
    }

    /// Verifies `token` (signature, algorithm, `exp`, `nbf`, claims) and returns what it grants.
    pub fn verify(&self, token: &str) -> Result<Grant, AuthFailure> {
        let algorithm = match jsonwebtoken::decode_header(token) {
            Ok(header) => header.alg,
            Err(_) => return Err(unreadable_header(token)),
        };
        let (key, validation) = [&self.secret, &self.public]
            .into_iter()
            .flatten()
            .find(|(_, validation)| validation.algorithms[0] == algorithm)
            .ok_or(AuthFailure::WrongAlgorithm)?;
        let claims = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidRsaKey(_)
                | ErrorKind::Crypto(_) => AuthFailure::BadSignature,
                ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
                    AuthFailure::WrongAlgorithm
                }
                ErrorKind::ExpiredSignature => AuthFailure::Expired,
                ErrorKind::ImmatureSignature => AuthFailure::NotYetValid,
                // The signature verified: what it signed is not the claims asked for.
                ErrorKind::Json(_) | ErrorKind::MissingRequiredClaim(_) => AuthFailure::Claims,
                _ => AuthFailure::Malformed,
            })?
            .claims;
        Grant::from_claims(claims)
    }
}

/// Why a token's header did not decode: an `alg` the crate does not know (`none`, `HS512`...) is a wrong
/// algorithm; anything else is malformed.
fn unreadable_header(token: &str) -> AuthFailure {
    use base64::Engine;
    let header = token.split('.').next().unwrap_or_default();
    let alg = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok())
        .is_some_and(|header| header.get("alg").is_some_and(|alg| alg.is_string()));
    match alg {
        true if token.split('.').count() == 3 => AuthFailure::WrongAlgorithm,
        _ => AuthFailure::Malformed,
    }
}

/// Where an upgrade's token is: `Authorization: Bearer <jwt>` when the request has an `Authorization`
/// header (any other form of it is malformed), else the first `?token=` of `path`, as is.
pub fn token_of<'r>(
    authorization: Option<&'r [u8]>,
    path: &'r str,
) -> Result<&'r str, AuthFailure> {
    if let Some(value) = authorization {
        let value = std::str::from_utf8(value).map_err(|_| AuthFailure::Malformed)?;
        let (scheme, token) = value.trim().split_once(' ').ok_or(AuthFailure::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthFailure::Malformed);
        }
        let token = token.trim_start_matches(' ');
        return match token.is_empty() {
            true => Err(AuthFailure::Missing),
            false => Ok(token),
        };
    }
    match crate::server::http::query_param(path, "token") {
        None | Some("") => Err(AuthFailure::Missing),
        Some(token) => Ok(token),
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    channels: Channels,
    /// Optional client information shown in presence (any JSON value).
    #[serde(default)]
    info: Option<Box<serde_json::value::RawValue>>,
}

#[derive(Deserialize, Default)]
struct Channels {
    #[serde(default)]
    sub: Vec<String>,
    #[serde(default, rename = "pub")]
    publish: Vec<String>,
}

/// What a verified token grants one connection: its user, its expiry and its topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The `sub` claim (the user id).
    pub user: Box<str>,
    /// The `exp` claim, in seconds since the Unix epoch.
    pub exp: u64,
    pub permissions: Permissions,
    /// The `info` claim as JSON text (shown to presence queries and join events), if any.
    pub info: Option<std::sync::Arc<str>>,
}

impl Grant {
    fn from_claims(claims: Claims) -> Result<Grant, AuthFailure> {
        if claims.sub.is_empty() {
            return Err(AuthFailure::Claims);
        }
        Ok(Grant {
            user: claims.sub.into_boxed_str(),
            exp: claims.exp,
            info: claims.info.map(|raw| std::sync::Arc::from(raw.get())),
            permissions: Permissions {
                subscribe: patterns(claims.channels.sub)?,
                publish: patterns(claims.channels.publish)?,
            },
        })
    }
}

/// A token's topic patterns (`channels.sub`, `channels.pub`): each an exact name, or a prefix followed
/// by one `*` at its end.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Permissions {
    subscribe: Box<[Box<str>]>,
    publish: Box<[Box<str>]>,
}

fn patterns(list: Vec<String>) -> Result<Box<[Box<str>]>, AuthFailure> {
    list.into_iter()
        .map(|pattern| {
            let stars = pattern.matches('*').count();
            match stars == 0 || (stars == 1 && pattern.ends_with('*')) {
                true => Ok(pattern.into_boxed_str()),
                false => Err(AuthFailure::Claims),
            }
        })
        .collect()
}

/// Whether `topic` matches `pattern`: equal, or `pattern` is `prefix*` and `topic` starts with `prefix`
/// and is longer.
fn matches(pattern: &str, topic: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => topic.len() > prefix.len() && topic.starts_with(prefix),
        None => pattern == topic,
    }
}

/// The command a permission is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Subscribe,
    Publish,
}

impl Permissions {
    /// Whether the token lets its connection `access` `topic`.
    pub fn allows(&self, access: Access, topic: &str) -> bool {
        let patterns = match access {
            Access::Subscribe => &self.subscribe,
            Access::Publish => &self.publish,
        };
        patterns.iter().any(|pattern| matches(pattern, topic))
    }

    /// Heap bytes these patterns hold.
    pub fn heap_bytes(&self) -> usize {
        let list = |p: &[Box<str>]| p.len() * 16 + p.iter().map(|s| s.len()).sum::<usize>();
        list(&self.subscribe) + list(&self.publish)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn hs(claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap()
    }

    #[test]
    fn the_header_wins_over_the_query() {
        assert_eq!(token_of(Some(b"Bearer a.b.c"), "/?token=x"), Ok("a.b.c"));
        assert_eq!(token_of(Some(b"bearer  a.b.c"), "/"), Ok("a.b.c"));
        assert_eq!(token_of(None, "/ws?topic=t&token=q.r.s"), Ok("q.r.s"));
        assert_eq!(token_of(None, "/ws?topic=t"), Err(AuthFailure::Missing));
        assert_eq!(token_of(None, "/ws?token="), Err(AuthFailure::Missing));
        assert_eq!(
            token_of(Some(b"Basic abc"), "/?token=x"),
            Err(AuthFailure::Malformed)
        );
        assert_eq!(token_of(Some(b"Bearer"), "/"), Err(AuthFailure::Malformed));
        assert_eq!(token_of(Some(b"\xff x"), "/"), Err(AuthFailure::Malformed));
    }

    #[test]
    fn each_failure_has_its_reason() {
        let auth = Auth::hs256(b"secret");
        let good = serde_json::json!({"sub": "u", "exp": now() + 60});
        assert_eq!(auth.verify(&hs(good.clone())).unwrap().user.as_ref(), "u");
        assert_eq!(auth.verify("abc"), Err(AuthFailure::Malformed));
        assert_eq!(auth.verify("a.b.c"), Err(AuthFailure::Malformed));
        let other = encode(
            &Header::new(Algorithm::HS256),
            &good,
            &EncodingKey::from_secret(b"other"),
        )
        .unwrap();
        assert_eq!(auth.verify(&other), Err(AuthFailure::BadSignature));
        let hs384 = encode(
            &Header::new(Algorithm::HS384),
            &good,
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert_eq!(auth.verify(&hs384), Err(AuthFailure::WrongAlgorithm));
        // `alg: none`, unsigned.
        let none = format!(
            "eyJhbGciOiJub25lIn0.{}.",
            hs(good).split('.').nth(1).unwrap()
        );
        assert_eq!(auth.verify(&none), Err(AuthFailure::WrongAlgorithm));
        let expired = hs(serde_json::json!({"sub": "u", "exp": now() - 2}));
        assert_eq!(auth.verify(&expired), Err(AuthFailure::Expired));
        let early = hs(serde_json::json!({"sub": "u", "exp": now() + 60, "nbf": now() + 30}));
        assert_eq!(auth.verify(&early), Err(AuthFailure::NotYetValid));
        for claims in [
            serde_json::json!({"exp": now() + 60}),
            serde_json::json!({"sub": "u"}),
            serde_json::json!({"sub": "", "exp": now() + 60}),
            serde_json::json!({"sub": 7, "exp": now() + 60}),
            serde_json::json!({"sub": "u", "exp": now() + 60, "channels": {"sub": ["a*b"]}}),
            serde_json::json!({"sub": "u", "exp": now() + 60, "channels": {"pub": "a"}}),
        ] {
            assert_eq!(
                auth.verify(&hs(claims.clone())),
                Err(AuthFailure::Claims),
                "{claims}"
            );
        }
    }

    proptest::proptest! {
        /// The stable counterpart of the `auth` fuzz target: any header and path, and any three
        /// base64url segments, give a grant or a failure, never a panic.
        #[test]
        fn any_input_is_a_grant_or_a_failure(
            header in proptest::option::of(proptest::collection::vec(proptest::num::u8::ANY, 0..200)),
            path in ".{0,200}",
            segments in proptest::collection::vec("[A-Za-z0-9_=-]{0,80}", 0..5),
        ) {
            let auth = Auth::hs256(b"secret");
            let _ = auth.check(header.as_deref(), &path);
            let _ = auth.verify(&segments.join("."));
            use base64::Engine;
            let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
            let token = format!("{}.{}.{}", b64(r#"{"alg":"HS256"}"#), b64(&path), segments.join(""));
            let _ = auth.verify(&token);
        }
    }

    #[test]
    fn patterns_are_exact_names_or_prefixes() {
        let auth = Auth::hs256(b"secret");
        let grant = auth
            .verify(&hs(serde_json::json!({
                "sub": "u", "exp": now() + 60,
                "channels": {"sub": ["room.1", "news.*"], "pub": ["room.1"]}
            })))
            .unwrap();
        let p = &grant.permissions;
        assert!(p.allows(Access::Subscribe, "room.1"));
        assert!(!p.allows(Access::Subscribe, "room.10"));
        assert!(!p.allows(Access::Subscribe, "room"));
        assert!(p.allows(Access::Subscribe, "news.a"));
        assert!(p.allows(Access::Subscribe, "news.a.b"));
        assert!(!p.allows(Access::Subscribe, "news."));
        assert!(!p.allows(Access::Subscribe, "news"));
        assert!(p.allows(Access::Publish, "room.1"));
        assert!(!p.allows(Access::Publish, "news.a"));
        let all = Permissions {
            subscribe: vec!["*".into()].into(),
            publish: Box::default(),
        };
        assert!(all.allows(Access::Subscribe, "x"));
        assert!(!all.allows(Access::Publish, "x"));
    }
}
