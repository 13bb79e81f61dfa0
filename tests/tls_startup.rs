//! `ringws serve --tls-cert --tls-key` at startup: every key format it accepts (PKCS#8, PKCS#1 RSA,
//! SEC1 EC) serves wss://, and every bad input (missing, empty, garbage, mismatched files, one flag
//! without the other) exits with code 2 and a message naming the file, without a panic.

mod common;

use common::tls::{TestCert, TlsServer};
use common::{ringws_binary, ServerProcess};
use tungstenite::Message;

/// A fixed 2048-bit RSA test key (made for these tests only), as PKCS#1 and as PKCS#8.
const RSA_PKCS1: &str = r"-----BEGIN RSA PRIVATE KEY-----
MIIEowIBAAKCAQEAj8W7bZI1RxzsuWNTjvjE9978yMmci5qxTpgK0CaZLOoqr6A0
h4ckbFVKturNl1kuPZA6LTdk3QjSwGyUlWQlrZechZBW2+gWABpzN+Jhv3VcXieo
jrnOax4PAWdHIYEILVU1+oD9H+40eixpZaa1Yq+N4LLyeE60f+hUhhaWV9WChFHI
wv01IE4b36BS8pnMetixncBMJip1RUfzopbYcMOBCAQcDgOMleiwGUwovxk4g+VR
4KCai903lnJtliMHrWbEPIDLJ7RqkxNcxr2jCZi9KPk0P6UKabTbRaneoBPQNz6U
Zt2cYR+VNOtRCzj1zdPlfHvBinO3eqXuqwSsSQIDAQABAoIBAA+AAFRwSlkn16em
+zezPzz/593Xyo5Md6gjAStutd3fQwnbKj6gRb9+NIdi6hZSkYcmmPcN/UxNKrd/
HUe728oKyd+mb47WxyRstZZFTEeBZhtqiCQXCReITpLWqRcGG7UTdjXTGTcLjdHM
HvLMFcsVZSTf9f8dcR1HFXG9VqkSXNcZFVrP72TUmg0iYs30Q/DVEygIrAkxjFz+
vtFJNXaTytnJWbzalPHzcwlGm2VbrFQOgcsYYnRo+lrwaF6/nYDDqzGAkSxxH/Cc
fhHrVG9OhoJbnatJbHzE9/qMLX2FlWwa5TlnM1HmIHlw2TDq/6KdqnrKnj8Re5/F
OqIslQECgYEAw/Y3xd5r4UH+AW2cgK13oM3ccmO9pgxI6JnakpIvPcXs+wNF3N4H
ue0h1eHOY/e8nQREkz/unm7uXbEE/a5PvfrwEo+zgPVZ3/qUZAqks+yPHmtytjJM
OlthupAC6+3sLaRFD0V31YBR4cz1RPS2Po9XoSziRWYSf0SCNisIdIkCgYEAu9Iq
u/jBugQae8+21Gne32vNfU6PcgWbITiMa0MqU38dRRZTodKejMQLo9wpjvBNRjxC
fdKGxp+SRIycw3hNdFQy555tJAss9x8MJQORxj0DnLcuHt+HFvSsfGnGnSA55fEB
He4F001gNgogKaA0eFKHdY1j7pySiwLuLDYsCcECgYEAiZqn52YcUv1IJDCYKTOm
QWDNX/XyAlu2Br+i4DGOws3tbwYJVOMEgeamT85UY5Ze99M7ZDsMkGxNLbVUT97L
WBiR5DbMUc334nPPJ8DhjwaaKT5COvZu2Lu6kIr3wjw8EIC9jc+2KlIFLY4C3P0J
zDxTyHYAHcNjUcMFvIvTUCECgYBBjRtfGXW7j10S4y7jOcQQZBaG6llEKVK4KH1R
nlJya8Xya9VqgBDX/kA1w0w52AKQRc3LDiP9xImPJSg9TIpz1EMj9XYQA1qBMTPS
40kIUBknpAMTwV3rlB9zGJO6GRo79341TPJ5ieLPWX9aJ9DIQb2HOH6tM7YtkCtC
APIjwQKBgDfjGvbFGtPEI+RsMQltSWGVQel/6qmbasMYDKuLJDdouUZ3DSNBEk4i
CZnWyjnZbLMjM6IzbOW5v5uSu7c9T6w3CSgawu4XC7x/1zWoFWu1U+TT5nPgtygJ
ofFYmk5NRgivNRSdvX8ovFvctuqsYQhkqtJstArIUw4VsiYaztgh
-----END RSA PRIVATE KEY-----";
const RSA_PKCS8: &str = r"-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCPxbttkjVHHOy5
Y1OO+MT33vzIyZyLmrFOmArQJpks6iqvoDSHhyRsVUq26s2XWS49kDotN2TdCNLA
bJSVZCWtl5yFkFbb6BYAGnM34mG/dVxeJ6iOuc5rHg8BZ0chgQgtVTX6gP0f7jR6
LGllprVir43gsvJ4TrR/6FSGFpZX1YKEUcjC/TUgThvfoFLymcx62LGdwEwmKnVF
R/Oilthww4EIBBwOA4yV6LAZTCi/GTiD5VHgoJqL3TeWcm2WIwetZsQ8gMsntGqT
E1zGvaMJmL0o+TQ/pQpptNtFqd6gE9A3PpRm3ZxhH5U061ELOPXN0+V8e8GKc7d6
pe6rBKxJAgMBAAECggEAD4AAVHBKWSfXp6b7N7M/PP/n3dfKjkx3qCMBK2613d9D
CdsqPqBFv340h2LqFlKRhyaY9w39TE0qt38dR7vbygrJ36ZvjtbHJGy1lkVMR4Fm
G2qIJBcJF4hOktapFwYbtRN2NdMZNwuN0cwe8swVyxVlJN/1/x1xHUcVcb1WqRJc
1xkVWs/vZNSaDSJizfRD8NUTKAisCTGMXP6+0Uk1dpPK2clZvNqU8fNzCUabZVus
VA6ByxhidGj6WvBoXr+dgMOrMYCRLHEf8Jx+EetUb06Ggludq0lsfMT3+owtfYWV
bBrlOWczUeYgeXDZMOr/op2qesqePxF7n8U6oiyVAQKBgQDD9jfF3mvhQf4BbZyA
rXegzdxyY72mDEjomdqSki89xez7A0Xc3ge57SHV4c5j97ydBESTP+6ebu5dsQT9
rk+9+vASj7OA9Vnf+pRkCqSz7I8ea3K2Mkw6W2G6kALr7ewtpEUPRXfVgFHhzPVE
9LY+j1ehLOJFZhJ/RII2Kwh0iQKBgQC70iq7+MG6BBp7z7bUad7fa819To9yBZsh
OIxrQypTfx1FFlOh0p6MxAuj3CmO8E1GPEJ90obGn5JEjJzDeE10VDLnnm0kCyz3
HwwlA5HGPQOcty4e34cW9Kx8acadIDnl8QEd7gXTTWA2CiApoDR4Uod1jWPunJKL
Au4sNiwJwQKBgQCJmqfnZhxS/UgkMJgpM6ZBYM1f9fICW7YGv6LgMY7Cze1vBglU
4wSB5qZPzlRjll730ztkOwyQbE0ttVRP3stYGJHkNsxRzffic88nwOGPBpopPkI6
9m7Yu7qQivfCPDwQgL2Nz7YqUgUtjgLc/QnMPFPIdgAdw2NRwwW8i9NQIQKBgEGN
G18ZdbuPXRLjLuM5xBBkFobqWUQpUrgofVGeUnJrxfJr1WqAENf+QDXDTDnYApBF
zcsOI/3EiY8lKD1MinPUQyP1dhADWoExM9LjSQhQGSekAxPBXeuUH3MYk7oZGjv3
fjVM8nmJ4s9Zf1on0MhBvYc4fq0zti2QK0IA8iPBAoGAN+Ma9sUa08Qj5GwxCW1J
YZVB6X/qqZtqwxgMq4skN2i5RncNI0ESTiIJmdbKOdlssyMzojNs5bm/m5K7tz1P
rDcJKBrC7hcLvH/XNagVa7VT5NPmc+C3KAmh8ViaTk1GCK81FJ29fyi8W9y26qxh
CGSq0my0CshTDhWyJhrO2CE=
-----END PRIVATE KEY-----";

fn echo_once(server: &TlsServer) {
    let mut ws = server.ws("/");
    ws.send(Message::text("key formats")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("key formats"));
}

fn start_with(cert: TestCert) -> TlsServer {
    TlsServer::start_with(ringws_binary(), cert, &[])
}

#[test]
fn pkcs8_pkcs1_and_sec1_keys_are_accepted() {
    // PKCS#8 (ECDSA P-256).
    echo_once(&TlsServer::start(ringws_binary(), &[]));

    // PKCS#1 (RSA): the certificate is signed with the PKCS#8 form of the same key.
    let key = rcgen::KeyPair::from_pem(RSA_PKCS8).expect("RSA test key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    echo_once(&start_with(TestCert::write(
        cert.pem(),
        RSA_PKCS1.to_string() + "\n",
        cert.der().clone(),
    )));

    // SEC1 (EC PRIVATE KEY): rebuilt from the P-256 key's scalar and public point.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let pkcs8 = key.serialize_der();
    let marker = [0x02, 0x01, 0x01, 0x04, 0x20];
    let at = pkcs8
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("EC private key in PKCS#8")
        + marker.len();
    let scalar = &pkcs8[at..at + 32];
    let public = key.public_key_raw();
    assert_eq!(public.len(), 65);
    let mut sec1 = vec![0x30, 0x77, 0x02, 0x01, 0x01, 0x04, 0x20];
    sec1.extend_from_slice(scalar);
    sec1.extend_from_slice(&[
        0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
    ]);
    sec1.extend_from_slice(&[0xa1, 0x44, 0x03, 0x42, 0x00]);
    sec1.extend_from_slice(public);
    assert_eq!(sec1.len(), 2 + 0x77);
    let pem = pem_encode("EC PRIVATE KEY", &sec1);
    echo_once(&start_with(TestCert::write(
        cert.pem(),
        pem,
        cert.der().clone(),
    )));
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn expect_startup_error(args: &[&str], must_mention: &[&str]) {
    let (code, stderr) = ServerProcess::start_expect_failure(ringws_binary(), args);
    assert_eq!(code, Some(2), "exit code for {args:?}; stderr: {stderr}");
    for text in must_mention {
        assert!(
            stderr.contains(text),
            "stderr for {args:?} should mention {text:?}: {stderr}"
        );
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_certificate_or_key_files_exit_2_naming_the_file() {
    let good = TestCert::new();
    let cert = good.cert_path.clone();
    let key = good.key_path.clone();
    let dir = good.dir.clone();
    let missing = dir.join("missing.pem").display().to_string();
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let empty = empty.display().to_string();
    let garbage = dir.join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let garbage = garbage.display().to_string();
    let other = TestCert::new();
    let other_key = other.key_path.clone();

    // Missing files.
    expect_startup_error(&["--tls-cert", &missing, "--tls-key", &key], &[&missing]);
    expect_startup_error(&["--tls-cert", &cert, "--tls-key", &missing], &[&missing]);
    // Empty files: no certificate / no key in them.
    expect_startup_error(
        &["--tls-cert", &empty, "--tls-key", &key],
        &[&empty, "no PEM certificate"],
    );
    expect_startup_error(
        &["--tls-cert", &cert, "--tls-key", &empty],
        &[&empty, "no PEM private key"],
    );
    // A certificate where the key should be, and the other way round.
    expect_startup_error(&["--tls-cert", &cert, "--tls-key", &cert], &[&cert]);
    expect_startup_error(&["--tls-cert", &key, "--tls-key", &key], &[&key]);
    // Corrupt PEM.
    expect_startup_error(&["--tls-cert", &garbage, "--tls-key", &key], &[&garbage]);
    // A key that does not match the certificate.
    expect_startup_error(
        &["--tls-cert", &cert, "--tls-key", &other_key],
        &[&other_key, &cert, "does not match"],
    );
}

#[test]
fn both_flags_or_neither() {
    let good = TestCert::new();
    let cert = good.cert_path.clone();
    let key = good.key_path.clone();
    for args in [["--tls-cert", cert.as_str()], ["--tls-key", key.as_str()]] {
        let (code, stderr) = ServerProcess::start_expect_failure(ringws_binary(), &args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("required"), "{args:?}: {stderr}");
    }
}
