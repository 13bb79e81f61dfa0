//! A generic HTTP/1.1 response writer: status line with its standard reason phrase, `Content-Type`,
//! `Content-Length`, the caller's extra headers in order, blank line, body.
//!
//! It owns only the response bytes: it knows nothing of WebSockets or routes (the handshake's refusals and
//! the server's plain HTTP answers both use it), appends to the caller's `Vec` and allocates nothing else,
//! and never touches a socket.

/// The standard reason phrase of the statuses this server sends.
pub fn status_text(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
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

    #[test]
    fn status_line_carries_the_standard_reason_phrase() {
        let phrases = [
            (101, "Switching Protocols"),
            (200, "OK"),
            (204, "No Content"),
            (400, "Bad Request"),
            (403, "Forbidden"),
            (404, "Not Found"),
            (405, "Method Not Allowed"),
            (408, "Request Timeout"),
            (413, "Content Too Large"),
            (426, "Upgrade Required"),
            (429, "Too Many Requests"),
            (431, "Request Header Fields Too Large"),
            (500, "Internal Server Error"),
            (503, "Service Unavailable"),
        ];
        for (status, phrase) in phrases {
            assert_eq!(status_text(status), phrase, "{status}");
            let mut out = Vec::new();
            write_http_response(&mut out, status, "text/plain", &[], b"");
            let line = format!("HTTP/1.1 {status} {phrase}\r\n");
            assert!(out.starts_with(line.as_bytes()), "{status}");
        }
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
