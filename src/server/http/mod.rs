//! Plain HTTP on the WebSocket port: `GET /healthz`, `GET /metrics` (404 when it has its own listener,
//! `--metrics-listen`), `GET /` (the demo page), `GET /ringws.js` (the browser client library),
//! `POST /publish` ([`publish`], only when configured), and the answers for everything else (404 for an
//! unknown path whatever the method, 405, 503). One request per connection (`Connection: close`).
//!
//! `Expect` (RFC 9110 section 10.1.1) is read by [`expectation`]: `POST /publish` answers `100-continue`
//! ([`CONTINUE`]) and refuses any other expectation with 417; a WebSocket upgrade ignores `100-continue`
//! (it has no content to wait for: the 101 or the refusal is the answer) and refuses any other with 417.
//! The other plain routes have no content and ignore `Expect`.
//!
//! Only the routing and the response bytes live here; the worker decides when a request is plain HTTP
//! and queues what this module writes. Never on the message hot path.

pub mod publish;
pub mod refusals;

use crate::protocol::handshake::{write_http_response, Request};

use super::metrics::{render_prometheus, WorkerMetrics};

/// The demo page served at `/`.
pub const DEMO_PAGE: &str = include_str!("../../../web/demo.html");

/// The browser client library (an ES module) served at `/ringws.js`: what the demo page imports.
pub const CLIENT_LIBRARY: &str = include_str!("../../../web/ringws.js");

/// Whether a request is an attempt to open a WebSocket (and so gets the handshake's checks and
/// statuses rather than plain routing).
pub fn wants_websocket(request: &Request<'_>) -> bool {
    request.is_upgrade()
        || request.header("sec-websocket-key").is_some()
        || request.header("sec-websocket-version").is_some()
}

/// The body of the 404 for `/metrics` on the WebSocket port when it is served elsewhere: says why,
/// without telling the public where.
pub const METRICS_ELSEWHERE: &[u8] =
    b"not found: /metrics is served on the operators' address (--metrics-listen)\n";

/// Writes the answer to a plain (non-upgrade) request into `out`, `/metrics` included; returns its
/// status.
pub fn route(
    request: &Request<'_>,
    metrics: &[std::sync::Arc<WorkerMetrics>],
    out: &mut Vec<u8>,
) -> u16 {
    route_with_metrics(request, metrics, true, out)
}

/// [`route`], with `serve_metrics` false when `/metrics` lives on the operators' listener: it is then
/// answered 404 here ([`METRICS_ELSEWHERE`]). `/healthz` reads `metrics` either way (the broker link).
pub fn route_with_metrics(
    request: &Request<'_>,
    metrics: &[std::sync::Arc<WorkerMetrics>],
    serve_metrics: bool,
    out: &mut Vec<u8>,
) -> u16 {
    let close = [("Connection", "close")];
    let head = request.method() == "HEAD";
    let path = request.path_only();
    let known = matches!(
        path,
        "/healthz" | "/metrics" | "/" | "/index.html" | "/ringws.js"
    );
    // An unknown path is 404 whatever the method (`POST /publish` too when that route is off); a known
    // one with another method than GET or HEAD is 405.
    if known && request.method() != "GET" && !head {
        let body = b"method not allowed\n";
        write_http_response(
            out,
            405,
            "text/plain; charset=utf-8",
            &[("Allow", "GET, HEAD"), close[0]],
            body,
        );
        return 405;
    }
    let (status, content_type, body): (u16, &str, std::borrow::Cow<'_, [u8]>) = match path {
        "/healthz" => match super::metrics::health(metrics) {
            Ok(()) => (200, "text/plain; charset=utf-8", b"ok\n"[..].into()),
            Err(reason) => (
                503,
                "text/plain; charset=utf-8",
                format!("{reason}\n").into_bytes().into(),
            ),
        },
        "/metrics" => match serve_metrics {
            true => (
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                render_prometheus(metrics).into_bytes().into(),
            ),
            false => (404, "text/plain; charset=utf-8", METRICS_ELSEWHERE.into()),
        },
        "/" | "/index.html" => (200, "text/html; charset=utf-8", DEMO_PAGE.as_bytes().into()),
        "/ringws.js" => (
            200,
            "application/javascript; charset=utf-8",
            CLIENT_LIBRARY.as_bytes().into(),
        ),
        _ => (404, "text/plain; charset=utf-8", b"not found\n"[..].into()),
    };
    if head {
        // Same headers, no body: write the full response and cut the body off.
        let start = out.len();
        write_http_response(out, status, content_type, &close, &body);
        out.truncate(start + (out.len() - start - body.len()));
    } else {
        write_http_response(out, status, content_type, &close, &body);
    }
    status
}

/// The answer to a connection refused for capacity.
pub fn write_503(out: &mut Vec<u8>) {
    write_http_response(
        out,
        503,
        "text/plain; charset=utf-8",
        &[("Connection", "close"), ("Retry-After", "1")],
        b"server at capacity\n",
    );
}

/// The answer to a request refused because the worker holds its budget of memory for requests not yet
/// complete (`--max-pending-request-memory`). `Retry-After: 1`: that memory is given back as soon as the
/// requests holding it complete, and at the latest at their handshake timeout.
pub fn write_503_request_memory(out: &mut Vec<u8>) {
    write_http_response(
        out,
        503,
        "text/plain; charset=utf-8",
        &[("Connection", "close"), ("Retry-After", "1")],
        b"server busy: too many requests in progress\n",
    );
}

/// The answer to an upgrade refused for its bearer token (`--auth-jwt-*`, RFC 6750 section 3): 401 with
/// `WWW-Authenticate: Bearer` (and `error="invalid_token"` when a token was given) and the reason as a
/// one-line body.
pub fn write_401(out: &mut Vec<u8>, failure: super::metrics::AuthFailure) {
    let challenge = match failure {
        super::metrics::AuthFailure::Missing => "Bearer",
        _ => "Bearer error=\"invalid_token\"",
    };
    let mut body = [0u8; 128];
    let reason = failure.reason().as_bytes();
    let len = reason.len().min(body.len() - 1);
    body[..len].copy_from_slice(&reason[..len]);
    body[len] = b'\n';
    write_http_response(
        out,
        401,
        "text/plain; charset=utf-8",
        &[("WWW-Authenticate", challenge), ("Connection", "close")],
        &body[..=len],
    );
}

/// The interim answer to `Expect: 100-continue`: the head passed every check, send the body.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The answer to an expectation other than `100-continue` (417, RFC 9110 section 10.1.1).
pub fn write_expectation_failed(out: &mut Vec<u8>) {
    write_http_response(
        out,
        417,
        "text/plain; charset=utf-8",
        &[("Connection", "close")],
        b"only the 100-continue expectation is supported\n",
    );
}

/// What a request's `Expect` header lines ask of the server (RFC 9110 section 10.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expectation {
    /// No expectation (no `Expect`, only empty members, or `100-continue` in an HTTP/1.0 request, which a
    /// server must ignore).
    None,
    /// `100-continue` (case-insensitive), alone.
    Continue,
    /// Any other member: the server cannot meet it (417).
    Unsupported,
}

/// Reads every `Expect` header line of `request` as a comma-separated list of members.
pub fn expectation(request: &Request<'_>) -> Expectation {
    let mut found = Expectation::None;
    for value in request.headers_named("expect") {
        for member in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if member.is_empty() {
                continue;
            }
            if !member.eq_ignore_ascii_case(b"100-continue") {
                return Expectation::Unsupported;
            }
            if request.version() >= 1 {
                found = Expectation::Continue;
            }
        }
    }
    found
}

/// The first value of query parameter `name` in `path` (`/x?a=1&topic=t`), undecoded.
pub fn query_param<'p>(path: &'p str, name: &'p str) -> Option<&'p str> {
    query_params(path, name).next()
}

/// Every value of query parameter `name` in `path`, undecoded.
pub fn query_params<'p>(path: &'p str, name: &'p str) -> impl Iterator<Item = &'p str> + 'p {
    let query = path.split_once('?').map_or("", |(_, q)| q);
    query.split('&').filter_map(move |pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_path_is_404_whatever_the_method_a_known_one_405() {
        let cases: &[(&[u8], u16)] = &[
            (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200),
            (b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", 200),
            (b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", 404),
            (b"POST /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", 404),
            (
                b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx",
                404,
            ),
            (b"DELETE /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 405),
            (b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        ];
        for (raw, status) in cases {
            let (request, _) = crate::protocol::handshake::parse_request(raw, 8192)
                .unwrap()
                .unwrap();
            let mut out = Vec::new();
            assert_eq!(
                route(&request, &[], &mut out),
                *status,
                "{}",
                String::from_utf8_lossy(raw)
            );
            assert!(out.starts_with(format!("HTTP/1.1 {status} ").as_bytes()));
        }
    }

    #[test]
    fn the_client_library_is_served_as_javascript() {
        let raw = b"GET /ringws.js HTTP/1.1\r\nHost: x\r\n\r\n";
        let (request, _) = crate::protocol::handshake::parse_request(raw, 8192)
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        assert_eq!(route(&request, &[], &mut out), 200);
        let response = String::from_utf8(out).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/javascript"),
            "{head}"
        );
        assert_eq!(body, CLIENT_LIBRARY);
        assert!(body.contains("export class RingwsClient"));
        let raw = b"POST /ringws.js HTTP/1.1\r\nHost: x\r\n\r\n";
        let (request, _) = crate::protocol::handshake::parse_request(raw, 8192)
            .unwrap()
            .unwrap();
        assert_eq!(route(&request, &[], &mut Vec::new()), 405);
    }

    #[test]
    fn metrics_is_404_saying_why_when_it_has_its_own_listener() {
        let raw = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        let (request, _) = crate::protocol::handshake::parse_request(raw, 8192)
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        assert_eq!(route_with_metrics(&request, &[], false, &mut out), 404);
        assert!(out.ends_with(METRICS_ELSEWHERE));
        let raw = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        let (request, _) = crate::protocol::handshake::parse_request(raw, 8192)
            .unwrap()
            .unwrap();
        assert_eq!(
            route_with_metrics(&request, &[], false, &mut Vec::new()),
            200
        );
    }

    #[test]
    fn expectations_are_read_from_every_expect_line() {
        let expect = |lines: &str| {
            let raw = format!("POST /x HTTP/1.1\r\nHost: x\r\n{lines}\r\n");
            let (request, _) = crate::protocol::handshake::parse_request(raw.as_bytes(), 8192)
                .unwrap()
                .unwrap();
            expectation(&request)
        };
        assert_eq!(expect(""), Expectation::None);
        assert_eq!(expect("Expect: \r\n"), Expectation::None);
        assert_eq!(expect("Expect: 100-continue\r\n"), Expectation::Continue);
        assert_eq!(
            expect("Expect: 100-continue\r\nexpect: 100-continue\r\n"),
            Expectation::Continue
        );
        for unsupported in [
            "Expect: 200-ok\r\n",
            "Expect: 100-continue, 200-ok\r\n",
            "Expect: 100-continue\r\nExpect: x\r\n",
            "Expect: 100-continuex\r\n",
            "Expect: 100\r\n",
        ] {
            assert_eq!(
                expect(unsupported),
                Expectation::Unsupported,
                "{unsupported:?}"
            );
        }
    }

    #[test]
    fn query_parameters() {
        assert_eq!(query_param("/ws?topic=a&x=1&topic=b", "topic"), Some("a"));
        assert_eq!(
            query_params("/ws?topic=a&x=1&topic=b", "topic").collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(query_param("/ws", "topic"), None);
    }
}
