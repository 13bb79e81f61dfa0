//! Why an opening handshake is refused, and the HTTP answer to each refusal, mapped in exactly one place:
//! `HandshakeError::status`, `reason` and `write_response`.
//!
//! It owns the mapping only: it never decides whether a request is acceptable (that is `request.rs` and
//! `upgrade.rs`), and writing an answer allocates nothing beyond the bytes appended to the caller's `Vec`.

use crate::protocol::http_response::write_http_response;
use std::fmt;

/// Why a handshake is refused; each maps to one HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// Not an HTTP/1.x request at all, or a malformed header; also bad WebSocket headers (400).
    BadRequest(&'static str),
    /// HTTP/1.0 (RFC 6455 requires HTTP/1.1 or higher) (400).
    NotHttp11,
    /// No `Host` header, or more than one (400).
    MissingHost,
    /// A method other than GET (405, with `Allow: GET`).
    MethodNotAllowed,
    /// No `Upgrade: websocket` on a WebSocket-only resource (426, with `Upgrade: websocket`).
    UpgradeRequired,
    /// `Sec-WebSocket-Version` missing or not 13 (426, with `Sec-WebSocket-Version: 13`).
    VersionNotSupported,
    /// `Origin` not in the allowlist (403).
    OriginNotAllowed,
    /// Request line plus headers over the limit, or too many header lines (431).
    HeadersTooLarge,
    /// Both `Content-Length` and `Transfer-Encoding` (RFC 9112 section 6.1: the body's length is ambiguous,
    /// the shape of request smuggling; we never decode chunked bodies, so we refuse it) (400).
    LengthAndTransferEncoding,
    /// No such resource (404).
    NotFound,
}

impl HandshakeError {
    /// The HTTP status code of the answer.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::BadRequest(_)
            | HandshakeError::NotHttp11
            | HandshakeError::MissingHost
            | HandshakeError::LengthAndTransferEncoding => 400,
            HandshakeError::OriginNotAllowed => 403,
            HandshakeError::NotFound => 404,
            HandshakeError::MethodNotAllowed => 405,
            HandshakeError::UpgradeRequired | HandshakeError::VersionNotSupported => 426,
            HandshakeError::HeadersTooLarge => 431,
        }
    }

    /// A short explanation: the response body and a log line.
    pub fn reason(&self) -> &'static str {
        match self {
            HandshakeError::BadRequest(reason) => reason,
            HandshakeError::NotHttp11 => "HTTP/1.1 required",
            HandshakeError::MissingHost => "exactly one Host header required",
            HandshakeError::MethodNotAllowed => "only GET can open a WebSocket",
            HandshakeError::UpgradeRequired => "WebSocket upgrade required",
            HandshakeError::VersionNotSupported => "Sec-WebSocket-Version 13 required",
            HandshakeError::OriginNotAllowed => "origin not allowed",
            HandshakeError::HeadersTooLarge => "request header fields too large",
            HandshakeError::LengthAndTransferEncoding => {
                "both Content-Length and Transfer-Encoding"
            }
            HandshakeError::NotFound => "not found",
        }
    }

    /// Appends the complete HTTP/1.1 answer (status, `Connection: close`, `Content-Length`, the headers the
    /// status requires, a one-line text body).
    pub fn write_response(&self, out: &mut Vec<u8>) {
        let extra: &[(&str, &str)] = match self {
            HandshakeError::MethodNotAllowed => &[("Allow", "GET"), ("Connection", "close")],
            HandshakeError::UpgradeRequired => &[
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Version", "13"),
                ("Connection", "close"),
            ],
            HandshakeError::VersionNotSupported => {
                &[("Sec-WebSocket-Version", "13"), ("Connection", "close")]
            }
            _ => &[("Connection", "close")],
        };
        let reason = self.reason();
        let mut body = [0u8; 128];
        let n = reason.len().min(body.len() - 1);
        body[..n].copy_from_slice(&reason.as_bytes()[..n]);
        body[n] = b'\n';
        write_http_response(
            out,
            self.status(),
            "text/plain; charset=utf-8",
            extra,
            &body[..n + 1],
        );
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status(), self.reason())
    }
}

impl std::error::Error for HandshakeError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_responses_are_complete_http() {
        for err in [
            HandshakeError::VersionNotSupported,
            HandshakeError::MethodNotAllowed,
            HandshakeError::HeadersTooLarge,
            HandshakeError::BadRequest("invalid Sec-WebSocket-Key"),
        ] {
            let mut out = Vec::new();
            err.write_response(&mut out);
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut resp = httparse::Response::new(&mut headers);
            let n = match resp.parse(&out).unwrap() {
                httparse::Status::Complete(n) => n,
                httparse::Status::Partial => panic!("incomplete response"),
            };
            assert_eq!(resp.code, Some(err.status()));
            let get = |name: &str| {
                resp.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| h.value)
            };
            assert_eq!(get("connection"), Some(&b"close"[..]));
            let body = &out[n..];
            assert_eq!(
                get("content-length"),
                Some(body.len().to_string().as_bytes())
            );
            assert_eq!(body, format!("{}\n", err.reason()).as_bytes());
            if err == HandshakeError::VersionNotSupported {
                assert_eq!(get("sec-websocket-version"), Some(&b"13"[..]));
            }
            if err == HandshakeError::MethodNotAllowed {
                assert_eq!(get("allow"), Some(&b"GET"[..]));
            }
        }
    }

    const EVERY_ERROR: [HandshakeError; 10] = [
        HandshakeError::BadRequest("invalid Sec-WebSocket-Key"),
        HandshakeError::NotHttp11,
        HandshakeError::MissingHost,
        HandshakeError::MethodNotAllowed,
        HandshakeError::UpgradeRequired,
        HandshakeError::VersionNotSupported,
        HandshakeError::OriginNotAllowed,
        HandshakeError::HeadersTooLarge,
        HandshakeError::LengthAndTransferEncoding,
        HandshakeError::NotFound,
    ];

    /// Parses a response `write_response` produced: (status, headers as (lowercase name, value), body).
    fn parse(out: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        let n = match resp.parse(out).unwrap() {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => panic!("incomplete response"),
        };
        let headers = resp
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8(h.value.to_vec()).unwrap(),
                )
            })
            .collect();
        (resp.code.unwrap(), headers, out[n..].to_vec())
    }

    #[test]
    fn each_error_has_its_status_and_reason() {
        let expected = [
            (400, "invalid Sec-WebSocket-Key"),
            (400, "HTTP/1.1 required"),
            (400, "exactly one Host header required"),
            (405, "only GET can open a WebSocket"),
            (426, "WebSocket upgrade required"),
            (426, "Sec-WebSocket-Version 13 required"),
            (403, "origin not allowed"),
            (431, "request header fields too large"),
            (400, "both Content-Length and Transfer-Encoding"),
            (404, "not found"),
        ];
        for (err, (status, reason)) in EVERY_ERROR.into_iter().zip(expected) {
            assert_eq!((err.status(), err.reason()), (status, reason), "{err:?}");
            assert_eq!(err.to_string(), format!("{status} {reason}"));
        }
    }

    #[test]
    fn every_answer_closes_and_carries_the_headers_its_status_requires() {
        for err in EVERY_ERROR {
            let mut out = Vec::new();
            err.write_response(&mut out);
            let (status, headers, body) = parse(&out);
            assert_eq!(status, err.status());
            let get = |name: &str| {
                headers
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.as_str())
            };
            assert_eq!(get("connection"), Some("close"), "{err:?}");
            assert_eq!(get("content-type"), Some("text/plain; charset=utf-8"));
            assert_eq!(body, format!("{}\n", err.reason()).as_bytes());
            let required: &[(&str, &str)] = match err {
                HandshakeError::MethodNotAllowed => &[("allow", "GET")],
                HandshakeError::UpgradeRequired => {
                    &[("upgrade", "websocket"), ("sec-websocket-version", "13")]
                }
                HandshakeError::VersionNotSupported => &[("sec-websocket-version", "13")],
                _ => &[],
            };
            for (name, value) in required {
                assert_eq!(get(name), Some(*value), "{err:?}");
            }
            assert_eq!(
                headers.len(),
                3 + required.len(),
                "{err:?}: only Content-Type, Content-Length, Connection and the required ones"
            );
        }
    }

    #[test]
    fn a_long_reason_is_cut_to_a_128_byte_body() {
        let long: &'static str = "r".repeat(300).leak();
        let mut out = Vec::new();
        HandshakeError::BadRequest(long).write_response(&mut out);
        let (status, _, body) = parse(&out);
        assert_eq!(status, 400);
        assert_eq!(body.len(), 128);
        assert_eq!(&body[..127], &long.as_bytes()[..127]);
        assert_eq!(body[127], b'\n');
    }
}
