//! A generic HTTP/1.1 response writer: status line with its standard reason phrase, `Content-Type`,
//! `Content-Length`, the caller's extra headers in order, blank line, body.
//!
//! It owns only the response bytes: it knows nothing of WebSockets or routes (the handshake's refusals and
//! the server's plain HTTP answers both use it), appends to the caller's `Vec` and allocates nothing else,
//! and never touches a socket.

/// The reason phrase of `status`: the IANA HTTP status code registry's name (RFC 9110 section 15 and the
/// RFCs it points to) for every registered code, so that whatever the server or a `Handler` refusing an
/// upgrade (any 400..=599) sends goes out with its name. "Unknown" only for unregistered codes (a reason
/// phrase is informative only, RFC 9112 section 4).
pub fn status_text(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        102 => "Processing",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        208 => "Already Reported",
        226 => "IM Used",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        418 => "I'm a teapot",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        _ => "Unknown",
    }
}

/// Appends a complete HTTP/1.1 response: status line, `Content-Type`, `Content-Length`, `extra_headers` in
/// order, blank line, body. Add `("Connection", "close")` to `extra_headers` if the connection will close.
pub fn write_http_response(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    extra_headers: &[(&str, &str)],
    body: &[u8],
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, status as u64);
    out.push(b' ');
    out.extend_from_slice(status_text(status).as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: ");
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: ");
    push_decimal(out, body.len() as u64);
    out.extend_from_slice(b"\r\n");
    for (name, value) in extra_headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

fn push_decimal(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_complete_response() {
        let mut out = Vec::new();
        write_http_response(&mut out, 200, "text/plain", &[], b"ok\n");
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n"
        );
    }

    /// The status line of a response `write` produces: (status, reason phrase).
    fn status_line(write: impl FnOnce(&mut Vec<u8>)) -> (u16, String) {
        let mut out = Vec::new();
        write(&mut out);
        let text = String::from_utf8_lossy(&out);
        let line = text.split("\r\n").next().unwrap_or_default();
        let mut parts = line.splitn(3, ' ');
        assert_eq!(parts.next(), Some("HTTP/1.1"), "{line}");
        let status = parts.next().and_then(|s| s.parse().ok()).expect(line);
        (status, parts.next().unwrap_or_default().to_string())
    }

    /// Every status a code path of the server sends, with the phrase it must carry: the handshake's
    /// refusals (`HandshakeError`, every variant) and its 101, the plain routes (200, 404, 405), the 503 for
    /// capacity and shutdown, and `POST /publish` (200 and every `PublishRefusal`). A `Handler` refusing an
    /// upgrade may send any 400..=599: `every_registered_status_has_its_name` covers those.
    #[test]
    fn every_status_the_server_sends_has_its_phrase() {
        use crate::protocol::handshake::{write_101, HandshakeError};
        use crate::server::http::publish::{write_published, PublishRefusal};
        use crate::server::http::{route, write_503};

        let mut sent: Vec<(&str, (u16, String))> = Vec::new();
        for error in [
            HandshakeError::BadRequest("bad"),
            HandshakeError::NotHttp11,
            HandshakeError::MissingHost,
            HandshakeError::MethodNotAllowed,
            HandshakeError::UpgradeRequired,
            HandshakeError::VersionNotSupported,
            HandshakeError::OriginNotAllowed,
            HandshakeError::HeadersTooLarge,
            HandshakeError::LengthAndTransferEncoding,
            HandshakeError::NotFound,
        ] {
            sent.push((
                "handshake refusal",
                status_line(|out| error.write_response(out)),
            ));
        }
        sent.push((
            "upgrade",
            status_line(|out| write_101(out, b"dGhlIHNhbXBsZSBub25jZQ==", None)),
        ));
        for refusal in [
            PublishRefusal::MethodNotAllowed,
            PublishRefusal::Unauthorized,
            PublishRefusal::LengthRequired,
            PublishRefusal::BadLength(HandshakeError::BadRequest("invalid Content-Length")),
            PublishRefusal::TooLarge,
            PublishRefusal::InvalidTopic,
        ] {
            sent.push((
                "publish refusal",
                status_line(|out| refusal.write_response(out)),
            ));
        }
        sent.push(("publish", status_line(write_published)));
        sent.push(("capacity", status_line(write_503)));
        for head in [
            &b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            let (request, _) = crate::protocol::handshake::parse_request(head, 8192)
                .unwrap()
                .unwrap();
            sent.push((
                "route",
                status_line(|out| {
                    route(&request, &[], out);
                }),
            ));
        }
        let expected = [
            (101, "Switching Protocols"),
            (200, "OK"),
            (400, "Bad Request"),
            (401, "Unauthorized"),
            (403, "Forbidden"),
            (404, "Not Found"),
            (405, "Method Not Allowed"),
            (411, "Length Required"),
            (413, "Content Too Large"),
            (426, "Upgrade Required"),
            (431, "Request Header Fields Too Large"),
            (503, "Service Unavailable"),
        ];
        for (path, (status, phrase)) in &sent {
            let want = expected
                .iter()
                .find(|(code, _)| code == status)
                .unwrap_or_else(|| panic!("{path}: status {status} is not in the list"));
            assert_eq!(phrase, want.1, "{path}: {status}");
        }
        for (code, _) in expected {
            assert!(
                sent.iter().any(|(_, (status, _))| *status == code),
                "{code} is listed but no code path sends it"
            );
        }
    }

    /// Every code the `http` crate knows has a name here (the same name, but for the two RFC 9110
    /// renamed), so a `Handler` refusal with any registered status goes out named.
    #[test]
    fn every_registered_status_has_its_name() {
        for code in 100..=599u16 {
            let Some(reference) = http::StatusCode::from_u16(code)
                .ok()
                .and_then(|s| s.canonical_reason())
            else {
                assert_eq!(status_text(code), "Unknown", "{code}");
                continue;
            };
            let renamed = match code {
                203 => Some("Non-Authoritative Information"),
                413 => Some("Content Too Large"),
                422 => Some("Unprocessable Content"),
                _ => None,
            };
            assert_eq!(status_text(code), renamed.unwrap_or(reference), "{code}");
            let mut out = Vec::new();
            write_http_response(&mut out, code, "text/plain", &[], b"");
            let line = format!("HTTP/1.1 {code} {}\r\n", status_text(code));
            assert!(out.starts_with(line.as_bytes()), "{code}");
        }
        assert_eq!(status_text(499), "Unknown");
        assert_eq!(status_text(999), "Unknown");
    }

    #[test]
    fn extra_headers_follow_in_order_and_output_is_appended() {
        let mut out = b"earlier bytes".to_vec();
        write_http_response(
            &mut out,
            405,
            "text/plain; charset=utf-8",
            &[("Allow", "GET, HEAD"), ("Connection", "close")],
            b"",
        );
        assert_eq!(
            out,
            b"earlier bytesHTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\n\
              Content-Length: 0\r\nAllow: GET, HEAD\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn content_length_is_the_body_length_in_decimal() {
        let body = vec![b'x'; 12_345];
        let mut out = Vec::new();
        write_http_response(&mut out, 200, "application/octet-stream", &[], &body);
        let head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 12345\r\n\r\n";
        assert_eq!(&out[..head.len()], head);
        assert_eq!(&out[head.len()..], &body[..]);
    }

    #[test]
    fn decimal_writer_covers_the_whole_u64_range() {
        for (value, text) in [
            (0, "0"),
            (7, "7"),
            (10, "10"),
            (1_000_000, "1000000"),
            (u64::MAX, "18446744073709551615"),
        ] {
            let mut out = Vec::new();
            push_decimal(&mut out, value);
            assert_eq!(out, text.as_bytes());
        }
    }
}
