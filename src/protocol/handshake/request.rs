//! HTTP/1.1 request heads, as the opening handshake and the plain HTTP routes see them: `parse_request`
//! (httparse, zero-copy into a fixed header array; "need more" vs error; the header block limit; a head with
//! both `Content-Length` and `Transfer-Encoding` refused) and
//! `Request` with its header helpers (case-insensitive lookup, comma-separated tokens, `Content-Length`).
//!
//! It never allocates (the request borrows the receive buffer), never panics on any input, and decides
//! nothing about WebSockets beyond `is_upgrade` (whether one was asked for; `upgrade.rs` checks the rest).

use super::error::HandshakeError;

/// Most header lines accepted in a request or response; more -> 431.
pub const MAX_HEADERS: usize = 64;

/// Default limit of the request line plus header block, in bytes.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 8192;

/// A parsed HTTP/1.x request head, borrowing the receive buffer.
#[derive(Debug, Clone, Copy)]
pub struct Request<'b> {
    method: &'b str,
    path: &'b str,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    version: u8,
    headers: [httparse::Header<'b>; MAX_HEADERS],
    header_count: usize,
}

impl<'b> Request<'b> {
    pub fn method(&self) -> &'b str {
        self.method
    }

    /// The request target as sent, query included (`/chat?room=1`).
    pub fn path(&self) -> &'b str {
        self.path
    }

    /// The target without its query.
    pub fn path_only(&self) -> &'b str {
        self.path.split('?').next().unwrap_or(self.path)
    }

    /// The HTTP minor version (1 for HTTP/1.1).
    pub fn version(&self) -> u8 {
        self.version
    }

    /// All header lines in order.
    pub fn headers(&self) -> impl Iterator<Item = (&'b str, &'b [u8])> + '_ {
        self.headers[..self.header_count]
            .iter()
            .map(|h| (h.name, h.value))
    }

    /// The value of the first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        self.headers_named(name).next()
    }

    /// The values of every header line with this name (case-insensitive), in order.
    pub fn headers_named<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'b [u8]> + 's {
        self.headers()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Does any comma-separated token of any `name` header equal `token` (case-insensitive)?
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers_named(name)
            .any(|v| tokens(v).any(|t| t.eq_ignore_ascii_case(token.as_bytes())))
    }

    /// Does the request ask for a WebSocket (an `Upgrade` header listing `websocket`)? The rest is checked by
    /// `validate_upgrade`.
    pub fn is_upgrade(&self) -> bool {
        self.header_has_token("upgrade", "websocket")
    }

    /// The `Content-Length`, if any. Err if malformed or given twice with different values.
    pub fn content_length(&self) -> Result<Option<u64>, HandshakeError> {
        let mut found: Option<u64> = None;
        for value in self.headers_named("content-length") {
            let value = trim(value);
            if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
                return Err(HandshakeError::BadRequest("invalid Content-Length"));
            }
            let n = value
                .iter()
                .fold(0u64, |acc, d| acc * 10 + (d - b'0') as u64);
            if found.is_some_and(|f| f != n) {
                return Err(HandshakeError::BadRequest("conflicting Content-Length"));
            }
            found = Some(n);
        }
        Ok(found)
    }
}

/// Comma-separated tokens of a header value, trimmed, empty ones skipped.
pub(super) fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(trim)
        .filter(|t| !t.is_empty())
}

pub(super) fn trim(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// Parses a request head from the start of `buf`. `Ok(None)`: incomplete, read more (unless the buffer is
/// already at `max_header_bytes`, which is 431). `Ok(Some((request, consumed)))`: bytes after `consumed` are
/// not part of the head. A head with both `Content-Length` and `Transfer-Encoding` is refused here, for
/// every route (`LengthAndTransferEncoding`, 400; RFC 9112 section 6.1 lets a server reject it, and we
/// never decode chunked bodies), so no caller can read a body whose length two parties would disagree on.
pub fn parse_request(
    buf: &[u8],
    max_header_bytes: usize,
) -> Result<Option<(Request<'_>, usize)>, HandshakeError> {
    // httparse fills the request's own header array: no second array, no copy.
    let mut request = Request {
        method: "",
        path: "",
        version: 0,
        headers: [httparse::EMPTY_HEADER; MAX_HEADERS],
        header_count: 0,
    };
    let mut parsed = httparse::Request::new(&mut request.headers);
    let window = &buf[..buf.len().min(max_header_bytes)];
    match parsed.parse(window) {
        Ok(httparse::Status::Complete(consumed)) => {
            let (Some(method), Some(path), Some(version)) =
                (parsed.method, parsed.path, parsed.version)
            else {
                return Err(HandshakeError::BadRequest("malformed request line"));
            };
            let header_count = parsed.headers.len();
            request.method = method;
            request.path = path;
            request.version = version;
            request.header_count = header_count;
            if request.header("content-length").is_some()
                && request.header("transfer-encoding").is_some()
            {
                return Err(HandshakeError::LengthAndTransferEncoding);
            }
            Ok(Some((request, consumed)))
        }
        Ok(httparse::Status::Partial) => {
            if buf.len() >= max_header_bytes {
                Err(HandshakeError::HeadersTooLarge)
            } else {
                Ok(None)
            }
        }
        Err(httparse::Error::TooManyHeaders) => Err(HandshakeError::HeadersTooLarge),
        Err(httparse::Error::Version) => Err(HandshakeError::BadRequest("not an HTTP/1.x request")),
        Err(_) => Err(HandshakeError::BadRequest("malformed HTTP request")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::request;
    use super::*;

    #[test]
    fn incomplete_needs_more_at_every_prefix() {
        let bytes = request("");
        for len in 0..bytes.len() {
            assert!(
                parse_request(&bytes[..len], DEFAULT_MAX_HEADER_BYTES)
                    .unwrap()
                    .is_none(),
                "prefix {len}"
            );
        }
    }

    #[test]
    fn header_block_limits_are_431() {
        let bytes = request(&format!("X-Pad: {}\r\n", "a".repeat(600)));
        assert_eq!(
            parse_request(&bytes, 512).unwrap_err(),
            HandshakeError::HeadersTooLarge
        );
        assert_eq!(
            parse_request(&bytes[..600], 512).unwrap_err(),
            HandshakeError::HeadersTooLarge
        );
        assert!(parse_request(&bytes[..300], 512).unwrap().is_none());
        let many: String = (0..MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            parse_request(&request(&many), 1 << 16).unwrap_err(),
            HandshakeError::HeadersTooLarge
        );
        assert_eq!(HandshakeError::HeadersTooLarge.status(), 431);
    }

    fn parse(bytes: &[u8]) -> Request<'_> {
        parse_request(bytes, DEFAULT_MAX_HEADER_BYTES)
            .unwrap()
            .expect("complete request")
            .0
    }

    #[test]
    fn the_head_ends_at_the_blank_line() {
        let mut bytes = request("");
        let head_len = bytes.len();
        bytes.extend_from_slice(b"GET /next HTTP/1.1\r\n");
        let (req, consumed) = parse_request(&bytes, DEFAULT_MAX_HEADER_BYTES)
            .unwrap()
            .unwrap();
        assert_eq!(consumed, head_len);
        assert_eq!(req.path(), "/chat?room=1");
        let old = b"GET /old HTTP/1.0\r\n\r\n";
        let req = parse(old);
        assert_eq!(
            (req.method(), req.path_only(), req.version()),
            ("GET", "/old", 0)
        );
        assert_eq!(req.headers().count(), 0);
    }

    #[test]
    fn the_limit_counts_the_whole_head() {
        let bytes = request("");
        assert!(parse_request(&bytes, bytes.len()).unwrap().is_some());
        assert_eq!(
            parse_request(&bytes, bytes.len() - 1).unwrap_err(),
            HandshakeError::HeadersTooLarge
        );
        let base_headers = parse(&bytes).headers().count();
        let fill = |n: usize| -> String { (0..n).map(|i| format!("X-{i}: v\r\n")).collect() };
        let at_limit = request(&fill(MAX_HEADERS - base_headers));
        assert_eq!(parse(&at_limit).headers().count(), MAX_HEADERS);
        assert_eq!(
            parse_request(&request(&fill(MAX_HEADERS - base_headers + 1)), 1 << 16).unwrap_err(),
            HandshakeError::HeadersTooLarge
        );
    }

    #[test]
    fn malformed_heads_are_400() {
        for bytes in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
            b"GET /\r\n\r\n",
            b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            let err = parse_request(bytes, DEFAULT_MAX_HEADER_BYTES).unwrap_err();
            assert!(
                matches!(err, HandshakeError::BadRequest(_)),
                "{}: {err:?}",
                String::from_utf8_lossy(bytes)
            );
            assert_eq!(err.status(), 400);
        }
    }

    #[test]
    fn headers_are_found_case_insensitively_in_order() {
        let bytes = request("X-Multi: one\r\nx-multi: two\r\nX-MULTI: three\r\n");
        let req = parse(&bytes);
        assert_eq!(req.header("x-multi"), Some(&b"one"[..]));
        assert_eq!(
            req.headers_named("X-Multi").collect::<Vec<_>>(),
            [&b"one"[..], b"two", b"three"]
        );
        assert_eq!(req.header("absent"), None);
        let names: Vec<&str> = req.headers().map(|(name, _)| name).collect();
        assert_eq!(names.first(), Some(&"Host"));
        assert_eq!(names.last(), Some(&"X-MULTI"));
        assert_eq!(req.path_only(), "/chat");
        let plain = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        let req = parse(plain);
        assert_eq!((req.path(), req.path_only()), ("/healthz", "/healthz"));
        assert!(!req.is_upgrade());
    }

    #[test]
    fn tokens_are_trimmed_and_empty_ones_skipped() {
        let bytes = request("X-List: ,, alpha ,\tBeta\t,,\r\n");
        let req = parse(&bytes);
        assert!(req.header_has_token("x-list", "alpha"));
        assert!(req.header_has_token("x-list", "beta"));
        assert!(!req.header_has_token("x-list", ""));
        assert!(!req.header_has_token("x-list", "alpha ,"));
        assert!(!req.header_has_token("x-absent", "alpha"));
        assert_eq!(
            tokens(b" a,\tb ,, c").collect::<Vec<_>>(),
            [&b"a"[..], b"b", b"c"]
        );
        assert_eq!(trim(b" \t x y \t "), b"x y");
        assert_eq!(trim(b" \t "), b"");
    }

    #[test]
    fn content_length_with_transfer_encoding_is_400_on_every_route() {
        let both = [
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "transfer-encoding: chunked\r\ncontent-length: 0\r\n",
            "Content-Length: 0\r\nTransfer-Encoding: identity\r\n",
            "Transfer-Encoding: \r\nContent-Length: 3\r\n",
        ];
        let heads = [
            "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n",
            "POST /publish HTTP/1.1\r\nHost: x\r\n",
            "GET /healthz HTTP/1.1\r\nHost: x\r\n",
        ];
        for head in heads {
            for extra in both {
                let bytes = format!("{head}{extra}\r\n");
                let err = parse_request(bytes.as_bytes(), DEFAULT_MAX_HEADER_BYTES).unwrap_err();
                assert_eq!(err, HandshakeError::LengthAndTransferEncoding, "{bytes:?}");
                assert_eq!(err.status(), 400);
            }
        }
        // Either one alone is left to the route (a body length, or 411 on /publish).
        let te_only = b"POST /publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse(te_only).content_length(), Ok(None));
        let cl_only = b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(parse(cl_only).content_length(), Ok(Some(5)));
    }

    #[test]
    fn content_length_must_be_digits_and_agree() {
        let length = |extra: &str| parse(&request(extra)).content_length();
        assert_eq!(length(""), Ok(None));
        assert_eq!(length("Content-Length: 0\r\n"), Ok(Some(0)));
        assert_eq!(
            length("Content-Length: 42\r\ncontent-length: 42\r\n"),
            Ok(Some(42))
        );
        assert_eq!(
            length("Content-Length: 9999999999999999999\r\n"),
            Ok(Some(9_999_999_999_999_999_999))
        );
        let invalid = Err(HandshakeError::BadRequest("invalid Content-Length"));
        for value in ["", "+5", "-1", "5 5", "0x10", "12345678901234567890"] {
            assert_eq!(
                length(&format!("Content-Length: {value}\r\n")),
                invalid,
                "{value:?}"
            );
        }
        assert_eq!(
            length("Content-Length: 1\r\nContent-Length: 2\r\n"),
            Err(HandshakeError::BadRequest("conflicting Content-Length"))
        );
    }
}
