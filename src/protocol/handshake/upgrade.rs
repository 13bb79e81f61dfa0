//! The server side of the opening handshake (RFC 6455 section 4.2): `validate_upgrade` checks a parsed
//! request against RFC 6455 4.2.1 and the `HandshakePolicy` (Origin allowlist, subprotocols), checks the
//! `Sec-WebSocket-Key`, chooses the subprotocol, and `write_101` appends the `101 Switching Protocols` answer
//! with its `accept_key`.
//!
//! It must never echo a subprotocol the client did not offer, never accept a request with a body, never
//! allocate (the `Upgrade` borrows the request; the 101 is appended to the caller's `Vec`), and never panic.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha1::{Digest, Sha1};

use super::error::HandshakeError;
use super::request::{tokens, trim, Request};

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
    write_101_with_extensions(out, key, protocol, None);
}

/// `write_101` with the `Sec-WebSocket-Extensions` answer of a permessage-deflate agreement, if any.
pub fn write_101_with_extensions(
    out: &mut Vec<u8>,
    key: &[u8],
    protocol: Option<&str>,
    deflate: Option<&crate::protocol::deflate::Agreed>,
) {
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
    if let Some(agreed) = deflate {
        out.extend_from_slice(b"Sec-WebSocket-Extensions: ");
        agreed.write_value(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::super::request::{parse_request, DEFAULT_MAX_HEADER_BYTES};
    use super::super::test_support::{request, RFC_KEY};
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
    fn a_body_in_any_form_is_refused() {
        let policy = HandshakePolicy::default();
        assert_eq!(
            validate(&request("Content-Length: 0\r\n"), &policy),
            Ok(None)
        );
        let with_body = Err(HandshakeError::BadRequest("upgrade request with a body"));
        assert_eq!(
            validate(&request("Transfer-Encoding: chunked\r\n"), &policy),
            with_body
        );
        assert_eq!(
            validate(
                &request("Content-Length: 0\r\nTransfer-Encoding: identity\r\n"),
                &policy
            ),
            Err(HandshakeError::LengthAndTransferEncoding),
            "refused by the parser, before the upgrade's checks"
        );
    }

    #[test]
    fn version_and_key_must_each_appear_once() {
        let policy = HandshakePolicy::default();
        assert_eq!(
            validate(&request("Sec-WebSocket-Version: 13\r\n"), &policy),
            Err(HandshakeError::VersionNotSupported)
        );
        let ok = request("");
        for key in [
            "dGhlIHNhbXBsZSBub25jZQ!=",
            "dGhlIHNhbXBsZSBub25jZQ",
            "dGhlIHNhbXBsZSBub25jZQ===",
            "",
        ] {
            assert_eq!(
                validate(&replace(&ok, RFC_KEY, key), &policy),
                Err(HandshakeError::BadRequest("invalid Sec-WebSocket-Key")),
                "{key:?}"
            );
        }
    }

    #[test]
    fn several_origins_are_refused_only_under_an_allowlist() {
        let two = request("Origin: https://good.example\r\nOrigin: https://good.example\r\n");
        let allowed = vec!["https://good.example".to_string()];
        let policy = HandshakePolicy {
            allowed_origins: &allowed,
            subprotocols: &[],
        };
        assert_eq!(
            validate(&two, &policy),
            Err(HandshakeError::OriginNotAllowed)
        );
        assert_eq!(validate(&two, &HandshakePolicy::default()), Ok(None));
    }

    #[test]
    fn the_101_without_a_subprotocol_names_none() {
        let mut out = b"earlier".to_vec();
        write_101(&mut out, RFC_KEY.as_bytes(), None);
        assert_eq!(
            out,
            b"earlierHTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
    }
}
