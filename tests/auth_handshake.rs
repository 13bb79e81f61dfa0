//! JWT authentication at the upgrade (`--auth-jwt-secret-file`, `--auth-jwt-public-key`): each failure is a
//! 401 with its one-line reason, `WWW-Authenticate: Bearer` and its `ringws_auth_failures_total` reason,
//! and no connection opens; a valid token opens the connection from the query or the header (the header
//! wins); ES256 and RS256 with a public key; auth outside pubsub refuses to start.

mod common;

use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use std::io::Read;
use std::path::PathBuf;

const SECRET: &str = "test-secret-of-some-length";

fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringws-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn secret_server() -> ServerProcess {
    let secret = temp_file("secret", format!("{SECRET}\n").as_bytes());
    ServerProcess::start(
        ringws_binary(),
        &[
            "--mode",
            "pubsub",
            "--workers",
            "1",
            "--auth-jwt-secret-file",
            secret.to_str().unwrap(),
        ],
    )
}

/// Sends an upgrade for `path` with `extra` header lines; returns the status, the head and the body.
fn upgrade(server: &ServerProcess, path: &str, extra: &str) -> (u16, String, String) {
    let mut stream = connect(server.addr);
    let request = match extra {
        "" => upgrade_request(path),
        _ => upgrade_request(path).replacen("\r\n\r\n", &format!("\r\n{extra}\r\n\r\n"), 1),
    };
    let (status, head) = http_exchange(&mut stream, &request);
    let mut body = String::new();
    if status != 101 {
        let _ = stream.read_to_string(&mut body);
    }
    (status, head, body)
}

fn auth_failures(server: &ServerProcess, reason: &str) -> u64 {
    let series = format!("ringws_auth_failures_total{{worker=\"0\",reason=\"{reason}\"}} ");
    metrics_text(server.addr)
        .lines()
        .find_map(|line| line.strip_prefix(&series)?.parse().ok())
        .expect("the series")
}

#[test]
fn each_failure_is_a_401_with_its_reason_header_and_metric() {
    let server = secret_server();
    let good = json!({"sub": "alice", "exp": unix_now() + 60});
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "missing",
            String::new(),
            "missing token: send Authorization: Bearer <jwt> or ?token=<jwt>",
        ),
        ("malformed", "not-a-jwt".into(), "malformed token"),
        (
            "bad_signature",
            hs256_token(&good.clone(), "another-secret"),
            "bad token signature",
        ),
        (
            "wrong_algorithm",
            encode(
                &Header::new(Algorithm::HS512),
                &good,
                &EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .unwrap(),
            "token algorithm not accepted",
        ),
        (
            "expired",
            hs256_token(&json!({"sub": "alice", "exp": unix_now() - 5}), SECRET),
            "token expired",
        ),
        (
            "not_yet_valid",
            hs256_token(
                &json!({"sub": "alice", "exp": unix_now() + 60, "nbf": unix_now() + 30}),
                SECRET,
            ),
            "token not yet valid (nbf)",
        ),
        (
            "claims",
            hs256_token(&json!({"exp": unix_now() + 60}), SECRET),
            "token claims invalid: needs sub (string), exp (number), channels patterns",
        ),
    ];
    for (reason, token, body) in &cases {
        let path = match token.is_empty() {
            true => "/ws?topic=a".to_string(),
            false => format!("/ws?token={token}"),
        };
        let (status, head, got) = upgrade(&server, &path, "");
        assert_eq!(status, 401, "{reason}: {head}");
        assert_eq!(got, format!("{body}\n"), "{reason}");
        let challenge = match *reason {
            "missing" => "WWW-Authenticate: Bearer\r\n",
            _ => "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n",
        };
        assert!(head.contains(challenge), "{reason}: {head}");
        assert_eq!(auth_failures(&server, reason), 1, "{reason}");
    }
    // Through the header too.
    let (status, _, got) = upgrade(&server, "/ws", "Authorization: Bearer not-a-jwt");
    assert_eq!((status, got.as_str()), (401, "malformed token\n"));
    let (status, _, _) = upgrade(&server, "/ws", "Authorization: Basic YTpi");
    assert_eq!(status, 401);
    assert_eq!(auth_failures(&server, "malformed"), 3);
    // No refused upgrade opened a connection.
    assert_eq!(metric_sum(server.addr, "ringws_websockets_total"), 0);
}

#[test]
fn a_valid_token_opens_the_connection_from_the_query_or_the_header_which_wins() {
    let server = secret_server();
    let good = hs256_token(&json!({"sub": "alice", "exp": unix_now() + 60}), SECRET);
    let bad = hs256_token(
        &json!({"sub": "alice", "exp": unix_now() + 60}),
        "another-secret",
    );
    let (status, head, _) = upgrade(&server, &format!("/ws?topic=a&token={good}"), "");
    assert_eq!(status, 101, "{head}");
    let (status, head, _) = upgrade(&server, "/ws", &format!("Authorization: Bearer {good}"));
    assert_eq!(status, 101, "{head}");
    // Both given: the header is the token.
    let (status, _, _) = upgrade(
        &server,
        &format!("/ws?token={bad}"),
        &format!("authorization: bearer {good}"),
    );
    assert_eq!(status, 101);
    let (status, _, body) = upgrade(
        &server,
        &format!("/ws?token={good}"),
        &format!("Authorization: Bearer {bad}"),
    );
    assert_eq!((status, body.as_str()), (401, "bad token signature\n"));
    assert_eq!(metric_sum(server.addr, "ringws_websockets_total"), 3);
}

#[test]
fn es256_tokens_verify_with_the_public_key_and_hs256_ones_are_refused() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let public = temp_file("es256.pem", key.public_key_pem().as_bytes());
    let server = ServerProcess::start(
        ringws_binary(),
        &[
            "--mode",
            "pubsub",
            "--workers",
            "1",
            "--auth-jwt-public-key",
            public.to_str().unwrap(),
        ],
    );
    let claims = json!({"sub": "bob", "exp": unix_now() + 60});
    let es = encode(
        &Header::new(Algorithm::ES256),
        &claims,
        &EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let (status, head, _) = upgrade(&server, &format!("/?token={es}"), "");
    assert_eq!(status, 101, "{head}");
    // Signed by another key pair.
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let forged = encode(
        &Header::new(Algorithm::ES256),
        &claims,
        &EncodingKey::from_ec_pem(other.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let (status, _, body) = upgrade(&server, &format!("/?token={forged}"), "");
    assert_eq!((status, body.as_str()), (401, "bad token signature\n"));
    // HS256 signed with the public key's text as the secret: no secret is configured, refused.
    let confused = hs256_token(&claims, &key.public_key_pem());
    let (status, _, body) = upgrade(&server, &format!("/?token={confused}"), "");
    assert_eq!(
        (status, body.as_str()),
        (401, "token algorithm not accepted\n")
    );
    assert_eq!(auth_failures(&server, "wrong_algorithm"), 1);
}

#[test]
fn auth_flags_need_pubsub_mode_and_a_readable_secret() {
    let secret = temp_file("secret-echo", SECRET.as_bytes());
    let empty = temp_file("secret-empty", b" \n");
    let not_a_key = temp_file("not-a-key.pem", b"hello");
    let cases = [
        (
            "echo",
            "--auth-jwt-secret-file",
            &secret,
            "need --mode pubsub",
        ),
        (
            "pubsub",
            "--auth-jwt-secret-file",
            &empty,
            "the JWT secret is empty",
        ),
        (
            "pubsub",
            "--auth-jwt-public-key",
            &not_a_key,
            "not a PEM RSA or EC P-256 public key",
        ),
    ];
    for (mode, flag, file, expected) in cases {
        let (code, stderr) = ServerProcess::start_expect_failure(
            ringws_binary(),
            &["--mode", mode, flag, file.to_str().unwrap()],
        );
        assert_eq!(code, Some(2), "{flag}: {stderr}");
        assert!(stderr.contains(expected), "{flag}: {stderr}");
    }
}

#[test]
fn without_auth_flags_clients_are_anonymous_as_before() {
    let server = ServerProcess::start(ringws_binary(), &["--mode", "pubsub", "--workers", "1"]);
    let mut sub = ws_at(server.addr, "/ws?topic=room.1");
    let mut publisher = ws_at(server.addr, "/ws?token=ignored");
    wait_open(
        || metrics_text(server.addr),
        2,
        std::time::Duration::from_secs(5),
    );
    send_text(
        &mut publisher,
        r#"{"op":"pub","topic":"room.1","data":"hi"}"#,
    );
    assert_eq!(read_text(&mut sub), "hi");
    assert_eq!(metric_sum(server.addr, "ringws_auth_failures_total"), 0);
}

/// RS256 with an RSA public key (a fixed 2048-bit test key pair in `tests/data/`, made with `openssl
/// genrsa`: ring, which signs these tokens in tests, cannot generate RSA keys). Given with an HS256 secret
/// too: each token's `alg` picks its key.
#[test]
fn rs256_tokens_verify_with_an_rsa_public_key_beside_the_hs256_secret() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let private = std::fs::read(data.join("rs256_test_key.pem")).unwrap();
    let secret = temp_file("rs256-secret", b"rs256-side-secret");
    let server = ServerProcess::start(
        ringws_binary(),
        &[
            "--mode",
            "pubsub",
            "--workers",
            "1",
            "--auth-jwt-public-key",
            data.join("rs256_test_key.pub.pem").to_str().unwrap(),
            "--auth-jwt-secret-file",
            secret.to_str().unwrap(),
        ],
    );
    let claims = json!({"sub": "carol", "exp": unix_now() + 60});
    let rs = encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(&private).unwrap(),
    )
    .unwrap();
    let (status, head, _) = upgrade(&server, &format!("/?token={rs}"), "");
    assert_eq!(status, 101, "{head}");
    let hs = hs256_token(&claims, "rs256-side-secret");
    let (status, head, _) = upgrade(&server, "/", &format!("Authorization: Bearer {hs}"));
    assert_eq!(status, 101, "{head}");
    // The RS256 token with other claims under its signature.
    let other = encode(
        &Header::new(Algorithm::RS256),
        &json!({"sub": "mallory", "exp": unix_now() + 60}),
        &EncodingKey::from_rsa_pem(&private).unwrap(),
    )
    .unwrap();
    let parts: Vec<&str> = rs.split('.').collect();
    let other_claims = other.split('.').nth(1).unwrap();
    let tampered = format!("{}.{other_claims}.{}", parts[0], parts[2]);
    let (status, _, body) = upgrade(&server, &format!("/?token={tampered}"), "");
    assert_eq!((status, body.as_str()), (401, "bad token signature\n"));
    // RS384 is not an algorithm the key is configured for.
    let rs384 = encode(
        &Header::new(Algorithm::RS384),
        &claims,
        &EncodingKey::from_rsa_pem(&private).unwrap(),
    )
    .unwrap();
    let (status, _, body) = upgrade(&server, &format!("/?token={rs384}"), "");
    assert_eq!(
        (status, body.as_str()),
        (401, "token algorithm not accepted\n")
    );
}
