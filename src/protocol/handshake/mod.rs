//! The opening handshake (RFC 6455 section 4) over HTTP/1.1, both sides, without I/O.
//!
//! Server side: `parse_request` (httparse, zero-copy, fixed header array; "need more" vs error; header block
//! limit), `validate_upgrade` (RFC 6455 4.2.1 plus Origin allowlist and subprotocol choice), `accept_key`,
//! `write_101`, and `HandshakeError`, mapped in exactly one place (`status`, `reason`, `write_response`) to
//! the HTTP answer. Client side: `build_client_request` and `validate_server_response`.
//!
//! It must never allocate while parsing (responses are appended to the caller's `Vec`), never echo a
//! subprotocol the client did not offer, and never panic on any input.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha1::{Digest, Sha1};
use std::fmt;

// compatibility re-export: the generic HTTP/1.1 response writer lives in `protocol::http_response`.
pub use crate::protocol::http_response::{status_text, write_http_response};

mod error;
mod request;
#[cfg(test)]
mod test_support;

pub use error::HandshakeError;
pub use request::{parse_request, Request, DEFAULT_MAX_HEADER_BYTES, MAX_HEADERS};
use request::{tokens, trim};

/// RFC 6455 section 1.3.
const WEBSOCKET_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Server configuration for accepting upgrades.
#[derive(Debug, Clone, Copy, Default)]
pub struct HandshakePolicy<'p> {
    /// Accepted `Origin` values (exact, ASCII case-insensitive). Empty: any origin. A request without `Origin`
    /// (a non-browser client, which could send any value anyway) is accepted.
    pub allowed_origins: &'p [String],
    /// Subprotocols this server speaks, most preferred first.
    pub subprotocols: &'p [String],
}

/// An accepted upgrade: what `write_101` needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upgrade<'b> {
    /// The client's `Sec-WebSocket-Key` (trimmed).
    pub key: &'b [u8],
    /// The chosen subprotocol, borrowed from the client's offer (so always one it offered).
    pub protocol: Option<&'b str>,
}

/// Checks an upgrade request per RFC 6455 section 4.2.1 and the policy; chooses the subprotocol (the first of
/// `policy.subprotocols` the client offered; none if it offered none of them).
pub fn validate_upgrade<'b>(
    request: &Request<'b>,
    policy: &HandshakePolicy<'_>,
) -> Result<Upgrade<'b>, HandshakeError> {
    if request.method() != "GET" {
        return Err(HandshakeError::MethodNotAllowed);
    }
    if request.version() != 1 {
        return Err(HandshakeError::NotHttp11);
    }
    if request.headers_named("host").count() != 1 {
        return Err(HandshakeError::MissingHost);
    }
    if !request.is_upgrade() {
        return Err(HandshakeError::UpgradeRequired);
    }
    if !request.header_has_token("connection", "upgrade") {
        return Err(HandshakeError::BadRequest(
            "Connection header must list Upgrade",
        ));
    }
    let mut versions = request.headers_named("sec-websocket-version");
    match (versions.next().map(trim), versions.next()) {
        (Some(b"13"), None) => {}
        _ => return Err(HandshakeError::VersionNotSupported),
    }
    let mut keys = request.headers_named("sec-websocket-key");
    let key = match (keys.next().map(trim), keys.next()) {
        (Some(key), None) if is_valid_key(key) => key,
        _ => return Err(HandshakeError::BadRequest("invalid Sec-WebSocket-Key")),
    };
    match request.content_length()? {
        None | Some(0) => {}
        Some(_) => return Err(HandshakeError::BadRequest("upgrade request with a body")),
    }
    if request.header("transfer-encoding").is_some() {
        return Err(HandshakeError::BadRequest("upgrade request with a body"));
    }
    if !policy.allowed_origins.is_empty() {
        let mut origins = request.headers_named("origin");
        match (origins.next(), origins.next()) {
            (None, _) => {}
            (Some(origin), None) => {
                let origin = trim(origin);
                if !policy
                    .allowed_origins
                    .iter()
                    .any(|allowed| allowed.as_bytes().eq_ignore_ascii_case(origin))
                {
                    return Err(HandshakeError::OriginNotAllowed);
                }
            }
            (Some(_), Some(_)) => return Err(HandshakeError::OriginNotAllowed),
        }
    }
    let protocol = choose_subprotocol(request, policy.subprotocols);
    Ok(Upgrade { key, protocol })
}

fn choose_subprotocol<'b>(request: &Request<'b>, supported: &[String]) -> Option<&'b str> {
    for wanted in supported {
        for value in request.headers_named("sec-websocket-protocol") {
            for offered in tokens(value) {
                if offered == wanted.as_bytes() {
                    // `offered` is a sub-slice of a header value httparse validated as visible ASCII.
                    return std::str::from_utf8(offered).ok();
                }
            }
        }
    }
    None
}

/// A key is the base64 of 16 bytes: 24 characters, the last two `==`.
fn is_valid_key(key: &[u8]) -> bool {
    let mut decoded = [0u8; 18];
    key.len() == 24 && matches!(BASE64.decode_slice(key, &mut decoded), Ok(16))
}

/// `Sec-WebSocket-Accept` for a key: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &[u8]) -> [u8; 28] {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(WEBSOCKET_GUID);
    let digest = sha.finalize();
    let mut out = [0u8; 28];
    let n = BASE64
        .encode_slice(digest, &mut out)
        .expect("20 bytes encode to 28");
    debug_assert_eq!(n, 28);
    out
}

/// Appends the `101 Switching Protocols` response for `key`, with the chosen subprotocol if any.
pub fn write_101(out: &mut Vec<u8>, key: &[u8], protocol: Option<&str>) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(&accept_key(key));
    out.extend_from_slice(b"\r\n");
    if let Some(protocol) = protocol {
        out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
        out.extend_from_slice(protocol.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Base64 of 16 caller-supplied random bytes: a client `Sec-WebSocket-Key`.
pub fn encode_key(random: [u8; 16]) -> [u8; 24] {
    let mut out = [0u8; 24];
    BASE64
        .encode_slice(random, &mut out)
        .expect("16 bytes encode to 24");
    out
}

/// Appends a client upgrade request (`GET path HTTP/1.1` with Host, Upgrade, Connection, key, version 13,
/// and `Sec-WebSocket-Protocol` if `protocols` is not empty).
pub fn build_client_request(
    out: &mut Vec<u8>,
    host: &str,
    path: &str,
    key_b64: &str,
    protocols: &[&str],
) {
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ");
    out.extend_from_slice(key_b64.as_bytes());
    out.extend_from_slice(b"\r\nSec-WebSocket-Version: 13\r\n");
    if !protocols.is_empty() {
        out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
        for (i, protocol) in protocols.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(protocol.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Why a client refuses the server's handshake response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseError {
    /// Not a parsable HTTP/1.1 response head.
    Malformed(&'static str),
    /// The head exceeds the limit or has too many header lines.
    TooLarge,
    /// A status other than 101.
    Status(u16),
    /// Missing `Upgrade: websocket` or `Connection: Upgrade`.
    NotUpgraded,
    /// `Sec-WebSocket-Accept` missing or wrong.
    BadAccept,
    /// A `Sec-WebSocket-Protocol` the client did not offer (or several).
    UnrequestedProtocol,
    /// A `Sec-WebSocket-Extensions` header: none was offered.
    UnrequestedExtension,
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseError::Malformed(why) => write!(f, "malformed handshake response: {why}"),
            ResponseError::TooLarge => f.write_str("handshake response too large"),
            ResponseError::Status(status) => write!(f, "handshake refused with status {status}"),
            ResponseError::NotUpgraded => f.write_str("response does not upgrade to websocket"),
            ResponseError::BadAccept => f.write_str("wrong Sec-WebSocket-Accept"),
            ResponseError::UnrequestedProtocol => {
                f.write_str("server chose a subprotocol that was not offered")
            }
            ResponseError::UnrequestedExtension => {
                f.write_str("server chose an extension that was not offered")
            }
        }
    }
}

impl std::error::Error for ResponseError {}

/// Checks the server's answer to `build_client_request`. `Ok(None)`: incomplete, read more.
/// `Ok(Some((consumed, protocol)))`: upgraded; bytes after `consumed` are already WebSocket frames.
/// `expected_accept` is `accept_key(key)`; `offered_protocols` what the request listed.
pub fn validate_server_response(
    buf: &[u8],
    expected_accept: &[u8],
    offered_protocols: &[&str],
) -> Result<Option<(usize, Option<String>)>, ResponseError> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut raw);
    let window = &buf[..buf.len().min(DEFAULT_MAX_HEADER_BYTES)];
    let consumed = match response.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= DEFAULT_MAX_HEADER_BYTES => {
            return Err(ResponseError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ResponseError::TooLarge),
        Err(_) => return Err(ResponseError::Malformed("invalid HTTP response head")),
    };
    if response.version != Some(1) {
        return Err(ResponseError::Malformed("not HTTP/1.1"));
    }
    let status = response.code.unwrap_or(0);
    if status != 101 {
        return Err(ResponseError::Status(status));
    }
    let named = |name: &'static str| {
        response
            .headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let has_token = |name: &'static str, token: &str| {
        named(name).any(|v| tokens(v).any(|t| t.eq_ignore_ascii_case(token.as_bytes())))
    };
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return Err(ResponseError::NotUpgraded);
    }
    let mut accepts = named("sec-websocket-accept");
    match (accepts.next().map(trim), accepts.next()) {
        (Some(accept), None) if accept == expected_accept => {}
        _ => return Err(ResponseError::BadAccept),
    }
    if named("sec-websocket-extensions").next().is_some() {
        return Err(ResponseError::UnrequestedExtension);
    }
    let mut protocols = named("sec-websocket-protocol");
    let protocol = match (protocols.next().map(trim), protocols.next()) {
        (None, _) => None,
        (Some(chosen), None) => match offered_protocols.iter().find(|p| p.as_bytes() == chosen) {
            Some(p) => Some((*p).to_string()),
            None => return Err(ResponseError::UnrequestedProtocol),
        },
        (Some(_), Some(_)) => return Err(ResponseError::UnrequestedProtocol),
    };
    Ok(Some((consumed, protocol)))
}

#[cfg(test)]
mod tests {
    use super::test_support::{request, RFC_KEY};
    use super::*;

    fn validate(
        bytes: &[u8],
        policy: &HandshakePolicy<'_>,
    ) -> Result<Option<String>, HandshakeError> {
        let (req, _) = parse_request(bytes, DEFAULT_MAX_HEADER_BYTES)?.expect("complete request");
        validate_upgrade(&req, policy).map(|u| u.protocol.map(str::to_string))
    }

    fn replace(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
        String::from_utf8(bytes.to_vec())
            .unwrap()
            .replacen(from, to, 1)
            .into_bytes()
    }

    #[test]
    fn rfc_accept_key() {
        // RFC 6455 section 1.3.
        assert_eq!(
            &accept_key(RFC_KEY.as_bytes()),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn parses_and_accepts_a_valid_upgrade() {
        let mut bytes = request("");
        let head_len = bytes.len();
        bytes.extend_from_slice(b"\x81\x80");
        let (req, consumed) = parse_request(&bytes, DEFAULT_MAX_HEADER_BYTES)
            .unwrap()
            .unwrap();
        assert_eq!(consumed, head_len);
        assert_eq!(
            (req.method(), req.path(), req.path_only(), req.version()),
            ("GET", "/chat?room=1", "/chat", 1)
        );
        assert_eq!(req.header("HOST"), Some(&b"example.com"[..]));
        assert!(req.is_upgrade());
        assert_eq!(req.content_length(), Ok(None));
        let upgrade = validate_upgrade(&req, &HandshakePolicy::default()).unwrap();
        assert_eq!(
            upgrade,
            Upgrade {
                key: RFC_KEY.as_bytes(),
                protocol: None
            }
        );
        let mut out = Vec::new();
        write_101(&mut out, upgrade.key, Some("chat"));
        assert_eq!(
            out,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n\r\n"
        );
    }

    #[test]
    fn each_rule_has_its_status() {
        let ok = request("");
        let policy = HandshakePolicy::default();
        let cases: Vec<(Vec<u8>, HandshakeError, u16)> = vec![
            (
                replace(&ok, "GET", "POST"),
                HandshakeError::MethodNotAllowed,
                405,
            ),
            (
                replace(&ok, "HTTP/1.1", "HTTP/1.0"),
                HandshakeError::NotHttp11,
                400,
            ),
            (
                replace(&ok, "Host: example.com\r\n", ""),
                HandshakeError::MissingHost,
                400,
            ),
            (request("Host: other\r\n"), HandshakeError::MissingHost, 400),
            (
                replace(&ok, "Upgrade: websocket\r\n", ""),
                HandshakeError::UpgradeRequired,
                426,
            ),
            (
                replace(&ok, "Upgrade: websocket", "Upgrade: h2c"),
                HandshakeError::UpgradeRequired,
                426,
            ),
            (
                replace(&ok, "keep-alive, Upgrade", "keep-alive"),
                HandshakeError::BadRequest("Connection header must list Upgrade"),
                400,
            ),
            (
                replace(&ok, "Version: 13", "Version: 8"),
                HandshakeError::VersionNotSupported,
                426,
            ),
            (
                replace(&ok, "Sec-WebSocket-Version: 13\r\n", ""),
                HandshakeError::VersionNotSupported,
                426,
            ),
            (
                replace(&ok, RFC_KEY, "dGhlIHNhbXBsZSBub25jZQ"),
                HandshakeError::BadRequest("invalid Sec-WebSocket-Key"),
                400,
            ),
            (
                replace(&ok, RFC_KEY, "AAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
                HandshakeError::BadRequest("invalid Sec-WebSocket-Key"),
                400,
            ),
            (
                request(&format!("Sec-WebSocket-Key: {RFC_KEY}\r\n")),
                HandshakeError::BadRequest("invalid Sec-WebSocket-Key"),
                400,
            ),
            (
                request("Content-Length: 5\r\n"),
                HandshakeError::BadRequest("upgrade request with a body"),
                400,
            ),
            (
                request("Content-Length: x\r\n"),
                HandshakeError::BadRequest("invalid Content-Length"),
                400,
            ),
        ];
        for (bytes, expected, status) in cases {
            let err = validate(&bytes, &policy).unwrap_err();
            assert_eq!(
                (err, err.status()),
                (expected, status),
                "{}",
                String::from_utf8_lossy(&bytes)
            );
        }
        assert_eq!(
            parse_request(b"\x16\x03\x01\x02\x00", 1024)
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(HandshakeError::NotFound.status(), 404);
    }

    #[test]
    fn tokens_are_case_insensitive_and_may_span_lines() {
        let bytes = replace(
            &request("Connection: UPGRADE\r\n"),
            "Connection: keep-alive, Upgrade",
            "Connection: keep-alive",
        );
        let bytes = replace(&bytes, "Upgrade: websocket", "upgrade: WebSocket");
        assert_eq!(validate(&bytes, &HandshakePolicy::default()), Ok(None));
    }

    #[test]
    fn origin_allowlist() {
        let allowed = vec!["https://good.example".to_string()];
        let policy = HandshakePolicy {
            allowed_origins: &allowed,
            subprotocols: &[],
        };
        assert_eq!(
            validate(&request("Origin: https://good.example\r\n"), &policy),
            Ok(None)
        );
        assert_eq!(
            validate(&request("Origin: HTTPS://GOOD.example\r\n"), &policy),
            Ok(None)
        );
        let err = validate(&request("Origin: https://evil.example\r\n"), &policy).unwrap_err();
        assert_eq!((err, err.status()), (HandshakeError::OriginNotAllowed, 403));
        assert_eq!(
            validate(&request(""), &policy),
            Ok(None),
            "no Origin: not a browser"
        );
        assert_eq!(
            validate(
                &request("Origin: https://evil.example\r\n"),
                &HandshakePolicy::default()
            ),
            Ok(None)
        );
    }

    #[test]
    fn subprotocol_is_only_ever_one_the_client_offered() {
        let ours = vec!["v2.chat".to_string(), "v1.chat".to_string()];
        let policy = HandshakePolicy {
            allowed_origins: &[],
            subprotocols: &ours,
        };
        assert_eq!(
            validate(
                &request("Sec-WebSocket-Protocol: v1.chat, v2.chat\r\n"),
                &policy
            ),
            Ok(Some("v2.chat".into()))
        );
        assert_eq!(
            validate(
                &request("Sec-WebSocket-Protocol: v1.chat\r\nSec-WebSocket-Protocol: x\r\n"),
                &policy
            ),
            Ok(Some("v1.chat".into()))
        );
        assert_eq!(
            validate(&request("Sec-WebSocket-Protocol: other\r\n"), &policy),
            Ok(None)
        );
        assert_eq!(validate(&request(""), &policy), Ok(None));
        assert_eq!(
            validate(&request("Sec-WebSocket-Protocol: V2.CHAT\r\n"), &policy),
            Ok(None),
            "exact match"
        );
    }

    #[test]
    fn client_request_round_trips_through_the_server_side() {
        let key = encode_key(*b"0123456789abcdef");
        let key_str = std::str::from_utf8(&key).unwrap();
        let mut req = Vec::new();
        build_client_request(&mut req, "127.0.0.1:9000", "/echo", key_str, &["a", "b"]);
        let ours = vec!["b".to_string()];
        let policy = HandshakePolicy {
            allowed_origins: &[],
            subprotocols: &ours,
        };
        let (parsed, consumed) = parse_request(&req, DEFAULT_MAX_HEADER_BYTES)
            .unwrap()
            .unwrap();
        assert_eq!(consumed, req.len());
        let upgrade = validate_upgrade(&parsed, &policy).unwrap();
        assert_eq!(upgrade.protocol, Some("b"));
        let mut resp = Vec::new();
        write_101(&mut resp, upgrade.key, upgrade.protocol);
        let head = resp.len();
        resp.extend_from_slice(b"\x81\x00");
        let accept = accept_key(&key);
        for len in 0..head {
            assert_eq!(
                validate_server_response(&resp[..len], &accept, &["a", "b"]),
                Ok(None)
            );
        }
        assert_eq!(
            validate_server_response(&resp, &accept, &["a", "b"]),
            Ok(Some((head, Some("b".into()))))
        );
        assert_eq!(
            validate_server_response(&resp, &accept, &["a"]),
            Err(ResponseError::UnrequestedProtocol)
        );
        assert_eq!(
            validate_server_response(&resp, &accept_key(b"other"), &["b"]),
            Err(ResponseError::BadAccept)
        );
        let mut refused = Vec::new();
        HandshakeError::VersionNotSupported.write_response(&mut refused);
        assert_eq!(
            validate_server_response(&refused, &accept, &[]),
            Err(ResponseError::Status(426))
        );
    }
}
