//! `POST /publish?topic=T`: the HTTP route that publishes its body (text if UTF-8, else binary) on topic
//! `T` to every worker's handler, or without a topic broadcasts it to every open connection.
//!
//! Only the decision lives here: [`publish_step`] reads a request head and the body bytes received so far
//! and says whether to refuse (with which answer), wait for more body, or publish what. The worker acts on
//! it (keeps the partial body, publishes, queues the answer). No I/O, no clock, no allocation.

use crate::protocol::handshake::{write_http_response, HandshakeError, Request};
use crate::protocol::MessageKind;

use super::query_param;
use crate::topics::valid_topic;

const TEXT: &str = "text/plain; charset=utf-8";
const CLOSE: (&str, &str) = ("Connection", "close");

/// What to do with a `/publish` request whose head has arrived.
#[derive(Debug, PartialEq, Eq)]
pub enum PublishStep<'r> {
    /// Answer with an error and publish nothing.
    Refuse(PublishRefusal),
    /// The head is acceptable but the body is not complete: keep what came and wait for the rest.
    NeedBody,
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
    /// The body is larger than the largest message: 413.
    TooLarge,
    /// The topic is not a valid topic name: 400.
    InvalidTopic,
}

impl PublishRefusal {
    /// The HTTP status of the answer.
    pub fn status(&self) -> u16 {
        match self {
            PublishRefusal::MethodNotAllowed => 405,
            PublishRefusal::Unauthorized => 401,
            PublishRefusal::LengthRequired => 411,
            PublishRefusal::BadLength(error) => error.status(),
            PublishRefusal::TooLarge => 413,
            PublishRefusal::InvalidTopic => 400,
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
        }
    }
}

/// The answer to a publish that went out.
pub fn write_published(out: &mut Vec<u8>) {
    write_http_response(out, 200, TEXT, &[CLOSE], b"published\n");
}

/// Decides what to do with `request` (a `/publish` head) given the body bytes received so far. With
/// `token`, the request must carry `Authorization: Bearer <token>`.
pub fn publish_step<'r>(
    request: &Request<'r>,
    body: &'r [u8],
    token: Option<&str>,
    max_message_size: usize,
) -> PublishStep<'r> {
    if request.method() != "POST" {
        return PublishStep::Refuse(PublishRefusal::MethodNotAllowed);
    }
    if let Some(token) = token {
        let authorized = request
            .header("authorization")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().strip_prefix("Bearer "))
            .is_some_and(|given| given.trim() == token);
        if !authorized {
            return PublishStep::Refuse(PublishRefusal::Unauthorized);
        }
    }
    let length = match request.content_length() {
        Ok(Some(length)) => length,
        Ok(None) => return PublishStep::Refuse(PublishRefusal::LengthRequired),
        Err(error) => return PublishStep::Refuse(PublishRefusal::BadLength(error)),
    };
    if length > max_message_size as u64 {
        return PublishStep::Refuse(PublishRefusal::TooLarge);
    }
    if (body.len() as u64) < length {
        return PublishStep::NeedBody;
    }
    let body = &body[..length as usize];
    let topic = query_param(request.path(), "topic");
    if topic.is_some_and(|topic| !valid_topic(topic)) {
        return PublishStep::Refuse(PublishRefusal::InvalidTopic);
    }
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

    /// Runs `publish_step` on a raw request (head and whatever body bytes follow it).
    fn step(raw: &[u8], token: Option<&str>, max: usize) -> String {
        let (request, consumed) = parse_request(raw, 8192).unwrap().unwrap();
        format!("{:?}", publish_step(&request, &raw[consumed..], token, max))
    }

    #[test]
    fn a_complete_post_publishes_its_body_on_its_topic() {
        let raw = b"POST /publish?topic=news HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(
            step(raw, None, 100),
            r#"Publish { topic: Some("news"), kind: Text, body: [104, 101, 108, 108, 111] }"#
        );
    }

    #[test]
    fn no_topic_broadcasts_and_non_utf8_is_binary() {
        let raw = b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n\xff\x00";
        assert_eq!(
            step(raw, None, 100),
            "Publish { topic: None, kind: Binary, body: [255, 0] }"
        );
    }

    #[test]
    fn bytes_beyond_content_length_are_not_published() {
        let raw = b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nabcd";
        assert_eq!(
            step(raw, None, 100),
            "Publish { topic: None, kind: Text, body: [97, 98] }"
        );
    }

    #[test]
    fn a_partial_body_waits_for_the_rest() {
        let raw = b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc";
        assert_eq!(step(raw, None, 100), "NeedBody");
    }

    #[test]
    fn each_refusal_has_its_status() {
        let cases: &[(&[u8], Option<&str>, u16)] = &[
            (b"GET /publish HTTP/1.1\r\nHost: x\r\n\r\n", None, 405),
            (b"POST /publish HTTP/1.1\r\nHost: x\r\n\r\n", None, 411),
            (
                b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: x1\r\n\r\n",
                None,
                400,
            ),
            (
                b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n",
                None,
                413,
            ),
            (
                b"POST /publish?topic=a%20b HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx",
                None,
                400,
            ),
            (
                b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx",
                Some("secret"),
                401,
            ),
            (
                b"POST /publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\nContent-Length: 1\r\n\r\nx",
                Some("secret"),
                401,
            ),
        ];
        for (raw, token, status) in cases {
            let (request, consumed) = parse_request(raw, 8192).unwrap().unwrap();
            match publish_step(&request, &raw[consumed..], *token, 100) {
                PublishStep::Refuse(refusal) => {
                    assert_eq!(
                        refusal.status(),
                        *status,
                        "{}",
                        String::from_utf8_lossy(raw)
                    );
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
    fn the_right_token_is_accepted() {
        let raw =
            b"POST /publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\nContent-Length: 1\r\n\r\nx";
        assert!(step(raw, Some("secret"), 100).starts_with("Publish"));
    }
}
