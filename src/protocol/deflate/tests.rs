use super::*;

const DEFAULT_ANSWER: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

fn agree(headers: &[&str], config: &DeflateConfig) -> Option<Agreed> {
    negotiate(headers.iter().map(|h| h.as_bytes()), config)
}

/// The response value for `headers`, or `None` when the extension is declined.
fn answer_with(headers: &[&str], config: &DeflateConfig) -> Option<String> {
    agree(headers, config).map(|agreed| {
        let mut out = Vec::new();
        agreed.write_value(&mut out);
        String::from_utf8(out).unwrap()
    })
}

fn answer(headers: &[&str]) -> Option<String> {
    answer_with(headers, &DeflateConfig::default())
}

fn context() -> DeflateConfig {
    DeflateConfig {
        mode: DeflateMode::Context,
        ..DeflateConfig::default()
    }
}

fn params(element: &str) -> Result<DeflateParams, Decline> {
    let mut found = offers([element.as_bytes()]);
    let extension = found.next().unwrap().unwrap();
    assert!(found.next().is_none());
    DeflateParams::from_extension(&extension)
}

#[test]
fn chrome_offer_gets_the_default_answer() {
    let agreed = agree(
        &["permessage-deflate; client_max_window_bits"],
        &DeflateConfig::default(),
    )
    .unwrap();
    assert!(!agreed.server_context_takeover());
    assert!(!agreed.client_context_takeover());
    assert_eq!(agreed.compress_window_bits(), 15);
    assert_eq!(agreed.inflate_window_bits(), 15);
    // Answering client_max_window_bits is optional; the default mode never needs to bound the client.
    assert_eq!(
        answer(&["permessage-deflate; client_max_window_bits"]).as_deref(),
        Some(DEFAULT_ANSWER)
    );
}

#[test]
fn firefox_bare_offer_gets_the_default_answer() {
    assert_eq!(
        answer(&["permessage-deflate"]).as_deref(),
        Some(DEFAULT_ANSWER)
    );
}

#[test]
fn python_websockets_and_node_ws_offers_are_accepted() {
    // Python websockets (client default) and Node ws (perMessageDeflate: true) send the same offer; ws with
    // every option set sends all four parameters.
    assert_eq!(
        answer(&["permessage-deflate; client_max_window_bits"]).as_deref(),
        Some(DEFAULT_ANSWER)
    );
    assert_eq!(
        answer(&[
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10; client_max_window_bits=11"
        ])
        .as_deref(),
        Some(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10"
        )
    );
}

#[test]
fn other_extensions_are_ignored() {
    assert_eq!(answer(&["x-webkit-deflate-frame"]), None);
    assert_eq!(
        answer(&["x-webkit-deflate-frame; no_context_takeover, permessage-deflate"]).as_deref(),
        Some(DEFAULT_ANSWER)
    );
    assert_eq!(answer(&[]), None);
}

#[test]
fn offers_spread_over_several_headers_are_read_in_order() {
    let headers = [
        "foo",
        "permessage-deflate; server_max_window_bits=12",
        "permessage-deflate",
    ];
    assert_eq!(
        answer(&headers).as_deref(),
        Some(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=12"
        )
    );
}

#[test]
fn a_declined_first_offer_falls_back_to_the_next() {
    // Autobahn 13.* style: several offers at once, the first one unacceptable.
    for first in [
        "permessage-deflate; server_max_window_bits=8",
        "permessage-deflate; foo",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_max_window_bits=16",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; client_no_context_takeover=1",
    ] {
        assert_eq!(
            answer(&[&format!(
                "{first}, permessage-deflate; client_max_window_bits"
            )])
            .as_deref(),
            Some(DEFAULT_ANSWER),
            "{first}"
        );
        assert_eq!(answer(&[first]), None, "{first} alone");
    }
}

#[test]
fn the_first_acceptable_offer_wins() {
    let agreed = agree(
        &["permessage-deflate; server_max_window_bits=9, permessage-deflate"],
        &DeflateConfig::default(),
    )
    .unwrap();
    assert_eq!(agreed.compress_window_bits(), 9);
    assert_eq!(agreed.response().server_max_window_bits, Some(9));
}

#[test]
fn server_window_of_8_bits_is_declined_not_widened() {
    assert_eq!(
        params("permessage-deflate; server_max_window_bits=8")
            .and_then(|p| DeflateConfig::default().accept(&p)),
        Err(Decline::ServerWindowTooSmall)
    );
    assert_eq!(
        answer_with(
            &["permessage-deflate; server_max_window_bits=8"],
            &context()
        ),
        None
    );
    // 9 is the smallest accepted, and is answered as offered.
    assert_eq!(
        answer(&["permessage-deflate; server_max_window_bits=9"]).as_deref(),
        Some(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=9"
        )
    );
}

#[test]
fn client_window_of_8_bits_is_accepted() {
    // The client compresses with at most 256 bytes; the 15-bit inflater reads that, so the answer need not
    // bound it.
    for config in [DeflateConfig::default(), context()] {
        let agreed = agree(&["permessage-deflate; client_max_window_bits=8"], &config).unwrap();
        assert_eq!(
            agreed.response().client_max_window_bits,
            ClientMaxWindowBits::Absent
        );
        assert_eq!(agreed.inflate_window_bits(), 15);
    }
}

#[test]
fn window_values_must_be_8_to_15_without_leading_zeros() {
    for good in ["8", "9", "10", "15", "\"12\"", "\"1\\2\""] {
        assert_eq!(
            params(&format!(
                "permessage-deflate; client_max_window_bits={good}"
            )),
            Ok(DeflateParams {
                client_max_window_bits: ClientMaxWindowBits::Bits(match good {
                    "\"12\"" | "\"1\\2\"" => 12,
                    n => n.parse().unwrap(),
                }),
                ..DeflateParams::default()
            }),
            "{good}"
        );
    }
    for bad in [
        "7", "16", "0", "08", "015", "1", "100", "a", "\"\"", "\"1 2\"", "-9", "9.0",
    ] {
        assert_eq!(
            params(&format!("permessage-deflate; server_max_window_bits={bad}")),
            Err(Decline::InvalidValue),
            "{bad}"
        );
    }
}

#[test]
fn quoted_values_are_unquoted() {
    assert_eq!(
        answer(&["permessage-deflate; server_max_window_bits=\"10\""]).as_deref(),
        Some(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10"
        )
    );
    // A quoted value in another extension, with a comma and a semicolon inside, is read past.
    assert_eq!(
        answer(&["foo; bar=\"a, b; c\", permessage-deflate"]).as_deref(),
        Some(DEFAULT_ANSWER)
    );
}

#[test]
fn whitespace_and_case_are_tolerated() {
    assert_eq!(
        answer(&[
            " \tPermessage-Deflate \t;\tSERVER_MAX_WINDOW_BITS = 11 ; client_max_window_bits ,"
        ])
        .as_deref(),
        Some(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=11"
        )
    );
    assert_eq!(
        answer(&[", ,permessage-deflate,,"]).as_deref(),
        Some(DEFAULT_ANSWER)
    );
}

#[test]
fn duplicated_parameters_decline_the_offer() {
    for offer in [
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
        "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
        "permessage-deflate; client_max_window_bits=9; client_max_window_bits=9",
    ] {
        assert_eq!(params(offer), Err(Decline::DuplicateParameter), "{offer}");
        assert_eq!(answer(&[offer]), None, "{offer}");
    }
}

#[test]
fn unknown_parameters_and_values_on_flags_decline_the_offer() {
    assert_eq!(
        params("permessage-deflate; mem_level=8"),
        Err(Decline::UnknownParameter)
    );
    assert_eq!(
        params("permessage-deflate; server_no_context_takeover=\"\""),
        Err(Decline::InvalidValue)
    );
}

#[test]
fn malformed_headers_decline_the_extension_and_never_fail() {
    for headers in [
        &["permessage-deflate; server_max_window_bits=\"10"][..],
        &["permessage-deflate; =10"],
        &["permessage-deflate;"],
        &["permessage-deflate; a b"],
        &["permessage deflate"],
        &["permessage-deflate, ;x"],
        &["permessage-deflate; x=\"\x01\""],
        &["permessage-deflate; x=\"a\\"],
        &["permessage-deflate", "permessage-deflate; x=="],
        &["permessage-deflate\u{e9}"],
    ] {
        assert_eq!(answer(headers), None, "{headers:?}");
        assert_eq!(answer_with(headers, &context()), None, "{headers:?}");
    }
}

#[test]
fn off_declines_every_offer() {
    let off = DeflateConfig {
        mode: DeflateMode::Off,
        ..DeflateConfig::default()
    };
    assert_eq!(answer_with(&["permessage-deflate"], &off), None);
}

#[test]
fn context_mode_always_answers_client_no_context_takeover() {
    // Only the server keeps its context: the client is always told not to, so inflating stays per worker,
    // whatever it offered about its own window.
    for offer in [
        "permessage-deflate",
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; client_max_window_bits=10",
    ] {
        assert_eq!(
            answer_with(&[offer], &context()).as_deref(),
            Some("permessage-deflate; client_no_context_takeover"),
            "{offer}"
        );
        let agreed = agree(&[offer], &context()).unwrap();
        assert!(agreed.server_context_takeover());
        assert!(!agreed.client_context_takeover());
        assert_eq!(agreed.inflate_window_bits(), 15);
    }
}

#[test]
fn context_mode_bounds_the_server_window_and_honours_no_context_requests() {
    let agreed = agree(&["permessage-deflate; client_max_window_bits"], &context()).unwrap();
    assert!(agreed.server_context_takeover());
    assert!(!agreed.client_context_takeover());
    assert_eq!(agreed.compress_window_bits(), 11);

    // The client asks for no server context: the server's compressor becomes the per-worker one.
    let agreed = agree(
        &["permessage-deflate; server_no_context_takeover; server_max_window_bits=13"],
        &context(),
    )
    .unwrap();
    assert!(!agreed.server_context_takeover());
    assert_eq!(agreed.compress_window_bits(), 13);
    let mut out = Vec::new();
    agreed.write_value(&mut out);
    assert_eq!(
        out,
        b"permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
          server_max_window_bits=13"
    );

    // A server window offered above the configured bound is answered with the bound.
    let agreed = agree(
        &["permessage-deflate; server_max_window_bits=14"],
        &context(),
    )
    .unwrap();
    assert_eq!(agreed.response().server_max_window_bits, Some(11));
    // A client that will not keep its context needs no per-connection inflater.
    let agreed = agree(
        &["permessage-deflate; client_no_context_takeover; client_max_window_bits"],
        &context(),
    )
    .unwrap();
    assert!(!agreed.client_context_takeover());
    assert_eq!(
        agreed.response().client_max_window_bits,
        ClientMaxWindowBits::Absent
    );
}

#[test]
fn configured_window_caps_the_default_mode() {
    let config = DeflateConfig {
        max_window_bits: 10,
        ..DeflateConfig::default()
    };
    let agreed = agree(&["permessage-deflate"], &config).unwrap();
    assert_eq!(agreed.compress_window_bits(), 10);
    // Not offered, so not answered: a smaller window needs no consent.
    assert_eq!(agreed.response().server_max_window_bits, None);
    let agreed = agree(&["permessage-deflate; server_max_window_bits=12"], &config).unwrap();
    assert_eq!(agreed.response().server_max_window_bits, Some(10));
}

#[test]
fn config_check_reports_out_of_range_fields() {
    assert_eq!(DeflateConfig::default().check(), Ok(()));
    let bad_level = DeflateConfig {
        level: 10,
        ..DeflateConfig::default()
    };
    assert_eq!(bad_level.check(), Err(ConfigError::Level(10)));
    let bad_window = DeflateConfig {
        context_window_bits: 8,
        ..DeflateConfig::default()
    };
    assert_eq!(bad_window.check(), Err(ConfigError::WindowBits(8)));
    // Out-of-range settings are clamped, never trusted.
    let agreed = agree(
        &["permessage-deflate"],
        &DeflateConfig {
            max_window_bits: 30,
            ..DeflateConfig::default()
        },
    )
    .unwrap();
    assert_eq!(agreed.compress_window_bits(), 15);
}

#[test]
fn every_answer_reparses_to_its_parameters() {
    for config in [DeflateConfig::default(), context()] {
        for offer in [
            "permessage-deflate",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; client_max_window_bits=9; server_max_window_bits=9",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        ] {
            let agreed = agree(&[offer], &config).unwrap();
            let mut out = Vec::new();
            agreed.write_value(&mut out);
            let value = String::from_utf8(out).unwrap();
            assert_eq!(params(&value), Ok(*agreed.response()), "{value}");
        }
    }
}

#[test]
fn parser_yields_names_and_raw_values() {
    let all: Vec<_> = offers([&b"a; b=1; c=\"x\\\"y\", d"[..], b"e"]).collect();
    assert_eq!(all.len(), 3);
    let a = all[0].unwrap();
    assert_eq!(a.name(), b"a");
    let got: Vec<(Vec<u8>, Option<Vec<u8>>)> = a
        .params()
        .map(|p| (p.name().to_vec(), p.value().map(|v| v.collect())))
        .collect();
    assert_eq!(
        got,
        vec![
            (b"b".to_vec(), Some(b"1".to_vec())),
            (b"c".to_vec(), Some(b"x\"y".to_vec())),
        ]
    );
    assert_eq!(all[1].unwrap().name(), b"d");
    assert_eq!(all[2].unwrap().name(), b"e");
    // After a malformed element the iterator stops.
    let all: Vec<_> = offers([&b"a;, b"[..], b"c"]).collect();
    assert_eq!(all, vec![Err(Malformed)]);
}
