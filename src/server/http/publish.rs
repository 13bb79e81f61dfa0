//! `POST /publish?topic=T`: the HTTP route that publishes its body (text if UTF-8, else binary) on topic
//! `T` to every worker's handler, or without a topic broadcasts it to every open connection.
//!
//! The route exists only when [`ServerConfig::publish`](crate::server::ServerConfig::publish) is set, and
//! then every request must carry `Authorization: Bearer <token>` (scheme in any case, one token, compared
//! in constant time) and a body of at most its `max_body`. Without it, `/publish` is an unknown path (404):
//! the worker never calls this module.
//!
//! Only the decision lives here: [`publish_step`] reads a request head and the body bytes received so far
//! and says whether to refuse (with which answer), wait for more body, or publish what. The worker acts on
//! it (keeps the partial body, publishes, queues the answer). No I/O, no clock, no allocation.
//!
//! `Expect` (RFC 9110 section 10.1.1, [`expectation`](super::expectation)): every check that does not need the body (method,
//! token, expectation, `Content-Length` within the limit, topic) is made on the head alone, so a refusal
//! goes out at once, before any body is sent, and the connection is closed without waiting for one. A head
//! that passes them with `Expect: 100-continue` and no body yet gets [`CONTINUE`] before the body is read;
//! an expectation other than `100-continue` is refused with 417.

use crate::protocol::handshake::{write_http_response, HandshakeError, Request};
use crate::protocol::MessageKind;

use subtle::ConstantTimeEq;

use super::{expectation, query_param, Expectation};
use crate::server::config::PublishConfig;
use crate::topics::valid_topic;

const TEXT: &str = "text/plain; charset=utf-8";
const CLOSE: (&str, &str) = ("Connection", "close");

/// What to do with a `/publish` request whose head has arrived.
#[derive(Debug, PartialEq, Eq)]
pub enum PublishStep<'r> {
    /// Answer with an error and publish nothing.
    Refuse(PublishRefusal),
    /// The head is acceptable but the body is not complete: keep what came and wait for the rest.
    NeedBody {
        /// The body's length (`Content-Length`, within the limits).
        length: usize,
        /// The client asked for `100 Continue` before it sends the body, and none of the body came yet.
        send_continue: bool,
    },
    /// Publish `body` on `topic` (`None`: broadcast to every open connection), then answer 200.
    Publish {
        topic: Option<&'r str>,
        kind: MessageKind,
        body: &'r [u8],
    },
}

/// Why a `/publish` request is refused; each maps to one HTTP answer.
#[derive(Debug, PartialEq, Eq)]
pub enum PublishRefusal {
    /// Not a POST: 405 with `Allow: POST`.
    MethodNotAllowed,
    /// A publish token is configured and the request does not carry it: 401.
    Unauthorized,
    /// No `Content-Length`: 411.
    LengthRequired,
    /// An invalid or conflicting `Content-Length`: the handshake error's answer (400).
    BadLength(HandshakeError),
    /// The body is larger than the route's body limit (or the largest message): 413.
    TooLarge,
    /// The topic is not a valid topic name: 400.
    InvalidTopic,
    /// An `Expect` other than `100-continue`: 417.
    ExpectationFailed,
}

/// The `reason` label of each refusal in `ringws_publish_refusals_total`, indexed by
/// [`PublishRefusal::index`].
pub const PUBLISH_REFUSALS: [&str; 7] = [
    "method",
    "unauthorized",
    "length_required",
    "bad_length",
    "too_large",
    "invalid_topic",
    "expectation",
];

impl PublishRefusal {
    /// This refusal's place in [`PUBLISH_REFUSALS`].
    pub fn index(&self) -> usize {
        match self {
            PublishRefusal::MethodNotAllowed => 0,
            PublishRefusal::Unauthorized => 1,
            PublishRefusal::LengthRequired => 2,
            PublishRefusal::BadLength(_) => 3,
            PublishRefusal::TooLarge => 4,
            PublishRefusal::InvalidTopic => 5,
            PublishRefusal::ExpectationFailed => 6,
        }
    }

    /// The HTTP status of the answer.
    pub fn status(&self) -> u16 {
        match self {
            PublishRefusal::MethodNotAllowed => 405,
            PublishRefusal::Unauthorized => 401,
            PublishRefusal::LengthRequired => 411,
            PublishRefusal::BadLength(error) => error.status(),
            PublishRefusal::TooLarge => 413,
            PublishRefusal::InvalidTopic => 400,
            PublishRefusal::ExpectationFailed => 417,
        }
    }

    /// Writes the complete answer (with `Connection: close`).
    pub fn write_response(&self, out: &mut Vec<u8>) {
        match self {
            PublishRefusal::MethodNotAllowed => {
                write_http_response(out, 405, TEXT, &[("Allow", "POST"), CLOSE], b"use POST\n")
            }
            PublishRefusal::Unauthorized => write_http_response(
                out,
                401,
                TEXT,
                &[("WWW-Authenticate", "Bearer"), CLOSE],
                b"bad or missing token\n",
            ),
            PublishRefusal::LengthRequired => {
                write_http_response(out, 411, TEXT, &[CLOSE], b"Content-Length required\n")
            }
            PublishRefusal::BadLength(error) => error.write_response(out),
            PublishRefusal::TooLarge => {
                write_http_response(out, 413, TEXT, &[CLOSE], b"message too large\n")
            }
            PublishRefusal::InvalidTopic => {
                write_http_response(out, 400, TEXT, &[CLOSE], b"invalid topic\n")
            }
            PublishRefusal::ExpectationFailed => super::write_expectation_failed(out),
        }
    }
}

/// The answer to a publish that went out.
pub fn write_published(out: &mut Vec<u8>) {
    write_http_response(out, 200, TEXT, &[CLOSE], b"published\n");
}

/// Whether an `Authorization` header value is `Bearer <token>`: the scheme in any case, then one or more
/// spaces, then exactly one token (no further spaces), equal to `token`. The token bytes are compared in
/// constant time (only a length difference ends the comparison early, which reveals the length alone).
pub fn bearer_matches(header: &[u8], token: &str) -> bool {
    let header = header.trim_ascii();
    let Some(space) = header.iter().position(|&b| b == b' ') else {
        return false;
    };
    let (scheme, rest) = header.split_at(space);
    let given = rest.trim_ascii_start();
    if !scheme.eq_ignore_ascii_case(b"bearer")
        || given.is_empty()
        || given.iter().any(|b| b.is_ascii_whitespace())
    {
        return false;
    }
    bool::from(given.ct_eq(token.as_bytes()))
}

/// Decides what to do with `request` (a `/publish` head, the route being on with `publish`) given the body
/// bytes received so far: the request must carry `publish.token` and a body of at most `publish.max_body`
/// and `max_message_size`. Every check but the body's arrival is made on the head alone, in this order:
/// method, token, expectation, `Content-Length`, size, topic.
pub fn publish_step<'r>(
    request: &Request<'r>,
    body: &'r [u8],
    publish: &PublishConfig,
    max_message_size: usize,
) -> PublishStep<'r> {
    if request.method() != "POST" {
        return PublishStep::Refuse(PublishRefusal::MethodNotAllowed);
    }
    let mut authorizations = request.headers_named("authorization");
    let authorized = match (authorizations.next(), authorizations.next()) {
        (Some(value), None) => bearer_matches(value, &publish.token),
        _ => false, // none, or several (which one would count is ambiguous)
    };
    if !authorized {
        return PublishStep::Refuse(PublishRefusal::Unauthorized);
    }
    let expectation = expectation(request);
    if expectation == Expectation::Unsupported {
        return PublishStep::Refuse(PublishRefusal::ExpectationFailed);
    }
    let length = match request.content_length() {
        Ok(Some(length)) => length,
        Ok(None) => return PublishStep::Refuse(PublishRefusal::LengthRequired),
        Err(error) => return PublishStep::Refuse(PublishRefusal::BadLength(error)),
    };
    if length > publish.max_body.min(max_message_size) as u64 {
        return PublishStep::Refuse(PublishRefusal::TooLarge);
    }
    let topic = query_param(request.path(), "topic");
    if topic.is_some_and(|topic| !valid_topic(topic)) {
        return PublishStep::Refuse(PublishRefusal::InvalidTopic);
    }
    // Within `max_body` (a usize) from here.
    let length = length as usize;
    if body.len() < length {
        return PublishStep::NeedBody {
            length,
            send_continue: expectation == Expectation::Continue && body.is_empty(),
        };
    }
    let body = &body[..length];
    let kind = if std::str::from_utf8(body).is_ok() {
        MessageKind::Text
    } else {
        MessageKind::Binary
    };
    PublishStep::Publish { topic, kind, body }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::handshake::parse_request;

    const AUTH: &str = "Authorization: Bearer secret\r\n";

    /// `raw` with `header` (a full line) added right after the request line.
    fn with_header(raw: &[u8], header: &str) -> Vec<u8> {
        let line_end = raw.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
        [&raw[..line_end], header.as_bytes(), &raw[line_end..]].concat()
    }

    /// Runs `publish_step` on a raw request (head and whatever body bytes follow it), the route's token
    /// being `secret` and its body limit `max_body`.
    fn step_with(raw: &[u8], max_body: usize, max_message_size: usize) -> String {
        let (request, consumed) = parse_request(raw, 8192).unwrap().unwrap();
        let publish = PublishConfig {
            token: "secret".into(),
            max_body,
        };
        format!(
            "{:?}",
            publish_step(&request, &raw[consumed..], &publish, max_message_size)
        )
    }

    /// `raw` with the right token, body limit 100.
    fn step(raw: &[u8]) -> String {
        step_with(&with_header(raw, AUTH), 100, 1000)
    }

    #[test]
    fn a_complete_post_publishes_its_body_on_its_topic() {
        let raw = b"POST /publish?topic=news HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(
            step(raw),
            r#"Publish { topic: Some("news"), kind: Text, body: [104, 101, 108, 108, 111] }"#
        );
    }

    #[test]
    fn no_topic_broadcasts_and_non_utf8_is_binary() {
        let raw = b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n\xff\x00";
        assert_eq!(
            step(raw),
            "Publish { topic: None, kind: Binary, body: [255, 0] }"
        );
    }

    #[test]
    fn bytes_beyond_content_length_are_not_published() {
        let raw = b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nabcd";
        assert_eq!(
            step(raw),
            "Publish { topic: None, kind: Text, body: [97, 98] }"
        );
    }

    #[test]
    fn a_partial_body_waits_for_the_rest() {
        let raw = b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc";
        assert_eq!(step(raw), "NeedBody { length: 10, send_continue: false }");
    }

    #[test]
    fn a_head_that_expects_100_continue_is_told_to_continue_only_before_its_body() {
        let head = "POST /publish?topic=news HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n";
        for expect in [
            "100-continue",
            "100-Continue",
            " 100-CONTINUE ",
            "100-continue, ",
        ] {
            let raw = format!("{head}Expect: {expect}\r\n\r\n");
            assert_eq!(
                step(raw.as_bytes()),
                "NeedBody { length: 5, send_continue: true }",
                "{expect:?}"
            );
            // Part of the body came with the head: the client is sending it already.
            let raw = format!("{head}Expect: {expect}\r\n\r\nhe");
            assert_eq!(
                step(raw.as_bytes()),
                "NeedBody { length: 5, send_continue: false }"
            );
            // All of it: publish at once, no interim answer.
            let raw = format!("{head}Expect: {expect}\r\n\r\nhello");
            assert!(step(raw.as_bytes()).starts_with("Publish"), "{expect:?}");
        }
        // HTTP/1.0: the expectation is ignored (RFC 9110 section 10.1.1).
        let raw = "POST /publish HTTP/1.0\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n";
        assert_eq!(
            step(raw.as_bytes()),
            "NeedBody { length: 5, send_continue: false }"
        );
    }

    #[test]
    fn head_checks_refuse_before_any_body_arrives() {
        // With `Expect: 100-continue` and no body sent, each refusal that the head alone decides comes
        // at once (the worker answers and closes without waiting for the body).
        let expect = "Expect: 100-continue\r\n";
        let cases: [(&str, &str, &str); 5] = [
            ("/publish", "", "Refuse(Unauthorized)"),
            ("/publish", AUTH, "Refuse(TooLarge)"),
            ("/publish?topic=a%20b", AUTH, "Refuse(InvalidTopic)"),
            (
                "/publish",
                "Expect: 200-ok\r\nAuthorization: Bearer secret\r\n",
                "Refuse(ExpectationFailed)",
            ),
            (
                "/publish",
                "Authorization: Bearer wrong\r\n",
                "Refuse(Unauthorized)",
            ),
        ];
        for (path, lines, refusal) in cases {
            let length = if refusal == "Refuse(TooLarge)" {
                101
            } else {
                5
            };
            let raw = format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\n{expect}{lines}Content-Length: {length}\r\n\r\n"
            );
            assert_eq!(step_with(raw.as_bytes(), 100, 1000), refusal, "{raw:?}");
        }
    }

    #[test]
    fn each_refusal_has_its_status_and_reason() {
        let authorized = |raw: &[u8]| with_header(raw, AUTH);
        let cases: Vec<(Vec<u8>, u16, &str)> = vec![
            (
                authorized(b"GET /publish HTTP/1.1\r\nHost: x\r\n\r\n"),
                405,
                "method",
            ),
            (
                authorized(b"POST /publish HTTP/1.1\r\nHost: x\r\n\r\n"),
                411,
                "length_required",
            ),
            (
                authorized(b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: x1\r\n\r\n"),
                400,
                "bad_length",
            ),
            (
                authorized(b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n"),
                413,
                "too_large",
            ),
            (
                authorized(
                    b"POST /publish?topic=a%20b HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx",
                ),
                400,
                "invalid_topic",
            ),
            (
                authorized(
                    b"POST /publish HTTP/1.1\r\nHost: x\r\nExpect: 100-continue, 200-ok\r\nContent-Length: 1\r\n\r\n",
                ),
                417,
                "expectation",
            ),
            (
                b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx".to_vec(),
                401,
                "unauthorized",
            ),
            (
                b"POST /publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\nContent-Length: 1\r\n\r\nx".to_vec(),
                401,
                "unauthorized",
            ),
        ];
        for (raw, status, reason) in &cases {
            let (request, consumed) = parse_request(raw, 8192).unwrap().unwrap();
            let publish = PublishConfig {
                token: "secret".into(),
                max_body: 100,
            };
            match publish_step(&request, &raw[consumed..], &publish, 1000) {
                PublishStep::Refuse(refusal) => {
                    let shown = String::from_utf8_lossy(raw);
                    assert_eq!(refusal.status(), *status, "{shown}");
                    assert_eq!(PUBLISH_REFUSALS[refusal.index()], *reason, "{shown}");
                    let mut out = Vec::new();
                    refusal.write_response(&mut out);
                    let head = format!("HTTP/1.1 {status} ");
                    assert!(
                        out.starts_with(head.as_bytes()),
                        "{}",
                        String::from_utf8_lossy(&out)
                    );
                }
                other => panic!("{other:?} for {}", String::from_utf8_lossy(raw)),
            }
        }
    }

    #[test]
    fn the_body_limit_is_the_smaller_of_max_body_and_max_message_size() {
        let raw = with_header(
            b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n",
            AUTH,
        );
        assert_eq!(
            step_with(&raw, 50, 1000),
            "NeedBody { length: 50, send_continue: false }"
        );
        assert_eq!(step_with(&raw, 49, 1000), "Refuse(TooLarge)");
        assert_eq!(step_with(&raw, 1000, 49), "Refuse(TooLarge)");
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_takes_exactly_one_token() {
        for good in [
            "Bearer secret",
            "bearer secret",
            "BEARER secret",
            "bEaReR   secret",
            " Bearer secret ",
        ] {
            assert!(bearer_matches(good.as_bytes(), "secret"), "{good:?}");
        }
        for bad in [
            "",
            "Bearer",
            "Bearer ",
            "Bearersecret",
            "Basic secret",
            "Bearer secret extra",
            "Bearer secret\tx",
            "Bearer Secret",
            "Bearer secre",
            "Bearer secrets",
            "Bearer \"secret\"",
            "Token secret",
        ] {
            assert!(!bearer_matches(bad.as_bytes(), "secret"), "{bad:?}");
        }
    }

    #[test]
    fn the_right_token_is_accepted_and_only_alone() {
        let raw =
            b"POST /publish HTTP/1.1\r\nHost: x\r\nauthorization: bearer secret\r\nContent-Length: 1\r\n\r\nx";
        assert!(step_with(raw, 100, 1000).starts_with("Publish"));
        // Two Authorization headers: which one counts would be ambiguous, so neither does.
        let twice = with_header(raw, "Authorization: Bearer wrong\r\n");
        assert_eq!(step_with(&twice, 100, 1000), "Refuse(Unauthorized)");
        let twice = with_header(raw, AUTH);
        assert_eq!(step_with(&twice, 100, 1000), "Refuse(Unauthorized)");
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let shown = format!("{:?}", PublishConfig::new("secret"));
        assert!(!shown.contains("secret"), "{shown}");
    }
}
