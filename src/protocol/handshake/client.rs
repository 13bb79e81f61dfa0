//! The client side of the opening handshake (RFC 6455 section 4.1), as the load generator and the tests
//! speak it: `encode_key`, `build_client_request`, and `validate_server_response`, which checks the server's
//! answer and refuses it with a `ResponseError`.
//!
//! It never picks its own randomness (the caller supplies the key's bytes), never accepts a subprotocol or
//! extension it did not offer, never panics on any response, and allocates nothing but the request bytes
//! appended to the caller's `Vec` and the chosen subprotocol's name.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use std::fmt;

use super::request::{tokens, trim, DEFAULT_MAX_HEADER_BYTES, MAX_HEADERS};

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
    use super::super::error::HandshakeError;
    use super::super::request::parse_request;
    use super::super::upgrade::{accept_key, validate_upgrade, write_101, HandshakePolicy};
    use super::*;

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

    /// The accept value for RFC 6455's sample key.
    const RFC_ACCEPT: &[u8] = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    /// A valid 101 for RFC 6455's sample key, with `extra` header lines; `edit` replaces its first match.
    fn response(extra: &str, edit: (&str, &str)) -> Vec<u8> {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n{extra}\r\n"
        )
        .replacen(edit.0, edit.1, 1)
        .into_bytes()
    }

    fn check(
        bytes: &[u8],
        offered: &[&str],
    ) -> Result<Option<(usize, Option<String>)>, ResponseError> {
        validate_server_response(bytes, RFC_ACCEPT, offered)
    }

    #[test]
    fn key_and_request_bytes() {
        assert_eq!(
            &encode_key(*b"the sample nonce"),
            b"dGhlIHNhbXBsZSBub25jZQ=="
        );
        let mut out = b"earlier".to_vec();
        build_client_request(&mut out, "example.com:80", "/chat?x=1", "KEY", &[]);
        assert_eq!(
            out,
            b"earlierGET /chat?x=1 HTTP/1.1\r\nHost: example.com:80\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Key: KEY\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        let mut out = Vec::new();
        build_client_request(&mut out, "h", "/", "KEY", &["v2.chat", "v1.chat", "x"]);
        assert!(out.ends_with(
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v2.chat, v1.chat, x\r\n\r\n"
        ));
    }

    #[test]
    fn an_upgrade_is_recognised_case_insensitively() {
        let ok = response("", ("", ""));
        assert_eq!(check(&ok, &[]), Ok(Some((ok.len(), None))));
        let loose = response(
            "",
            (
                "Upgrade: websocket\r\nConnection: Upgrade",
                "upgrade: WebSocket\r\nconnection: keep-alive, UPGRADE",
            ),
        );
        assert_eq!(check(&loose, &[]), Ok(Some((loose.len(), None))));
    }

    #[test]
    fn each_refusal_has_its_reason() {
        let cases: Vec<(Vec<u8>, &[&str], ResponseError)> = vec![
            (
                b"\x16\x03\x01\x00\x02\r\n\r\n".to_vec(),
                &[],
                ResponseError::Malformed("invalid HTTP response head"),
            ),
            (
                response("", ("HTTP/1.1", "HTTP/1.0")),
                &[],
                ResponseError::Malformed("not HTTP/1.1"),
            ),
            (
                response("", ("101 Switching Protocols", "200 OK")),
                &[],
                ResponseError::Status(200),
            ),
            (
                response("", ("Upgrade: websocket\r\n", "")),
                &[],
                ResponseError::NotUpgraded,
            ),
            (
                response("", ("Upgrade: websocket", "Upgrade: h2c")),
                &[],
                ResponseError::NotUpgraded,
            ),
            (
                response("", ("Connection: Upgrade\r\n", "")),
                &[],
                ResponseError::NotUpgraded,
            ),
            (
                response(
                    "",
                    ("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n", ""),
                ),
                &[],
                ResponseError::BadAccept,
            ),
            (
                response(
                    "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n",
                    ("", ""),
                ),
                &[],
                ResponseError::BadAccept,
            ),
            (
                response("Sec-WebSocket-Extensions: permessage-deflate\r\n", ("", "")),
                &[],
                ResponseError::UnrequestedExtension,
            ),
            (
                response("Sec-WebSocket-Protocol: chat\r\n", ("", "")),
                &[],
                ResponseError::UnrequestedProtocol,
            ),
            (
                response(
                    "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: chat\r\n",
                    ("", ""),
                ),
                &["chat"],
                ResponseError::UnrequestedProtocol,
            ),
        ];
        for (bytes, offered, expected) in cases {
            assert_eq!(
                check(&bytes, offered),
                Err(expected),
                "{}",
                String::from_utf8_lossy(&bytes)
            );
        }
        assert_eq!(
            check(
                &response("Sec-WebSocket-Protocol:  chat \r\n", ("", "")),
                &["x", "chat"]
            )
            .map(|r| r.and_then(|(_, protocol)| protocol)),
            Ok(Some("chat".to_string()))
        );
    }

    #[test]
    fn an_oversized_head_is_too_large() {
        let many: String = (0..MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            check(&response(&many, ("", "")), &[]),
            Err(ResponseError::TooLarge)
        );
        let padded = response(
            &format!("X-Pad: {}\r\n", "a".repeat(DEFAULT_MAX_HEADER_BYTES)),
            ("", ""),
        );
        assert_eq!(check(&padded, &[]), Err(ResponseError::TooLarge));
        assert_eq!(
            check(&padded[..DEFAULT_MAX_HEADER_BYTES - 1], &[]),
            Ok(None),
            "below the limit it is only incomplete"
        );
    }
}
