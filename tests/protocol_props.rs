//! Property tests of the sans-I/O protocol layer: frame round trips, chunking independence of the reader,
//! SIMD masking against the scalar reference, and incremental UTF-8 against `std::str::from_utf8`.

use proptest::collection::vec;
use proptest::prelude::*;
use ringws::protocol::frame::{decode_header, encode_frame, OpCode};
use ringws::protocol::fuzz_support::{run_reader, OwnedEvent};
use ringws::protocol::mask::{apply_mask, apply_mask_scalar, available_kernels};
use ringws::protocol::{MessageKind, ReaderLimits, Role, Utf8Validator};

fn opcode() -> impl Strategy<Value = OpCode> {
    prop_oneof![
        Just(OpCode::Continuation),
        Just(OpCode::Text),
        Just(OpCode::Binary),
        Just(OpCode::Close),
        Just(OpCode::Ping),
        Just(OpCode::Pong),
    ]
}

/// Payload sizes around every length-encoding boundary, plus random ones.
fn payload_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        0usize..=130,
        Just(125usize),
        Just(126usize),
        Just(127usize),
        Just(65535usize),
        Just(65536usize),
        0usize..70_000,
    ]
}

proptest! {
    #[test]
    fn decode_of_encode_is_identity(
        op in opcode(),
        fin in any::<bool>(),
        len in payload_len(),
        mask in any::<Option<[u8; 4]>>(),
        fill in any::<u8>(),
    ) {
        let len = if op.is_control() { len % 126 } else { len };
        let fin = fin || op.is_control();
        let payload: Vec<u8> = (0..len).map(|i| fill.wrapping_add(i as u8)).collect();
        let mut wire = Vec::new();
        encode_frame(&mut wire, fin, op, &payload, mask);
        let (header, header_len) = decode_header(&wire).unwrap().unwrap();
        prop_assert_eq!((header.fin, header.rsv, header.opcode, header.mask), (fin, 0, op, mask));
        prop_assert_eq!(header.payload_len, len as u64);
        prop_assert_eq!(wire.len(), header_len + len);
        let body = &mut wire[header_len..];
        if let Some(key) = mask {
            apply_mask(body, key, 0);
        }
        prop_assert_eq!(&body[..], &payload[..]);
        // Every strict prefix of the header asks for more bytes.
        for cut in 0..header_len {
            prop_assert_eq!(decode_header(&wire[..cut]), Ok(None));
        }
    }

    #[test]
    fn reader_round_trips_whole_messages(
        binary in any::<bool>(),
        payload in vec(any::<u8>(), 0..3000),
        key in any::<[u8; 4]>(),
        text in ".{0,200}",
    ) {
        let (op, kind, payload) = if binary {
            (OpCode::Binary, MessageKind::Binary, payload)
        } else {
            (OpCode::Text, MessageKind::Text, text.into_bytes())
        };
        let limits = ReaderLimits::default();
        let mut masked = Vec::new();
        encode_frame(&mut masked, true, op, &payload, Some(key));
        let (events, result) = run_reader(Role::Server, &limits, &masked, &[]);
        prop_assert_eq!(result, Ok(()));
        prop_assert_eq!(events, vec![OwnedEvent::Message(kind, payload.clone())]);
        let mut plain = Vec::new();
        encode_frame(&mut plain, true, op, &payload, None);
        let (events, result) = run_reader(Role::Client, &limits, &plain, &[]);
        prop_assert_eq!(result, Ok(()));
        prop_assert_eq!(events, vec![OwnedEvent::Message(kind, payload)]);
    }
}

/// One frame of a generated (mostly valid) client stream.
#[derive(Debug, Clone)]
struct GenFrame {
    fin: bool,
    op: OpCode,
    payload: Vec<u8>,
    key: [u8; 4],
}

fn gen_frame() -> impl Strategy<Value = GenFrame> {
    (
        any::<bool>(),
        opcode(),
        vec(any::<u8>(), 0..300),
        any::<[u8; 4]>(),
        ".{0,40}",
    )
        .prop_map(|(fin, op, bytes, key, text)| {
            let payload = match op {
                OpCode::Text | OpCode::Continuation if !bytes.is_empty() && bytes[0] % 2 == 0 => {
                    text.into_bytes()
                }
                OpCode::Close => {
                    let mut p = vec![0x03, 0xe8];
                    p.extend_from_slice(text.as_bytes().get(..40.min(text.len())).unwrap_or(b""));
                    p.truncate(125);
                    p
                }
                op if op.is_control() => bytes[..bytes.len().min(125)].to_vec(),
                _ => bytes,
            };
            GenFrame {
                fin: fin || op.is_control(),
                op,
                payload,
                key,
            }
        })
}

proptest! {
    #[test]
    fn chunked_decode_equals_whole_decode(
        frames in vec(gen_frame(), 1..12),
        cuts in vec(any::<prop::sample::Index>(), 0..16),
        small_limits in any::<bool>(),
    ) {
        let mut stream = Vec::new();
        for f in &frames {
            encode_frame(&mut stream, f.fin, f.op, &f.payload, Some(f.key));
        }
        let limits = if small_limits {
            ReaderLimits { max_frame_size: 200, max_message_size: 400 }
        } else {
            ReaderLimits::default()
        };
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        cuts.sort_unstable();
        let whole = run_reader(Role::Server, &limits, &stream, &[]);
        let chunked = run_reader(Role::Server, &limits, &stream, &cuts);
        prop_assert_eq!(&whole, &chunked);
        let bytewise: Vec<usize> = (1..stream.len()).collect();
        prop_assert_eq!(&whole, &run_reader(Role::Server, &limits, &stream, &bytewise));
    }

    #[test]
    fn chunked_decode_equals_whole_decode_on_garbage(
        stream in vec(any::<u8>(), 0..400),
        cuts in vec(any::<prop::sample::Index>(), 0..16),
        client in any::<bool>(),
    ) {
        let role = if client { Role::Client } else { Role::Server };
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        cuts.sort_unstable();
        let limits = ReaderLimits::default();
        prop_assert_eq!(run_reader(role, &limits, &stream, &[]), run_reader(role, &limits, &stream, &cuts));
    }
}

/// SIMD unmask == scalar for every length 0..=4096, at every start offset within a 32-byte line and every
/// mask phase, for every SIMD kernel this CPU runs; the word loop and the dispatching `apply_mask` likewise
/// at every offset within a word.
#[test]
fn every_kernel_equals_scalar_for_every_length_offset_and_phase() {
    const MAX_LEN: usize = 4096;
    const OFFSETS: usize = 32;
    let key = [0x9d, 0x2e, 0x71, 0x05];
    let source: Vec<u8> = (0..MAX_LEN + OFFSETS + 8)
        .map(|i| (i * 131 + 17) as u8)
        .collect();
    let mut kernels = available_kernels();
    kernels.push(("apply_mask", apply_mask));
    for offset in 0..OFFSETS {
        for phase in 0..4 {
            let mut expected = source.clone();
            apply_mask_scalar(&mut expected[offset..offset + MAX_LEN], key, phase);
            for (name, kernel) in &kernels {
                // The SIMD kernels (whose loads depend on alignment) see all 32 start offsets; the portable
                // word loop and the dispatcher (the same code) the 8 offsets of a word.
                let simd = !matches!(*name, "word" | "apply_mask");
                if !simd && offset >= 8 {
                    continue;
                }
                let mut work = source.clone();
                for len in 0..=MAX_LEN {
                    let region = offset..offset + len;
                    kernel(&mut work[region.clone()], key, phase);
                    assert!(
                        work[region.clone()] == expected[region.clone()],
                        "{name}: len {len} offset {offset} phase {phase}"
                    );
                    assert!(
                        work[offset + len] == source[offset + len],
                        "{name} wrote past the end"
                    );
                    assert!(
                        offset == 0 || work[offset - 1] == source[offset - 1],
                        "{name} wrote before"
                    );
                    // Restore, so the next length starts from the source again.
                    work[region.clone()].copy_from_slice(&source[region]);
                }
            }
        }
    }
}

fn utf8_splits() -> impl Strategy<Value = (Vec<u8>, Vec<usize>)> {
    let text = prop_oneof![
        vec(any::<u8>(), 0..64),
        ".{0,40}".prop_map(String::into_bytes),
        // Valid text with one byte replaced: adversarial near-misses.
        (".{1,40}", any::<prop::sample::Index>(), any::<u8>()).prop_map(|(s, i, b)| {
            let mut v = s.into_bytes();
            let at = i.index(v.len());
            v[at] = b;
            v
        }),
        // Truncated multibyte characters and surrogates.
        vec(
            prop_oneof![
                Just(&b"\xe2\x82\xac"[..]),
                Just(&b"\xf0\x9f\x98\x80"[..]),
                Just(&b"\xed\xa0\x80"[..]),
                Just(&b"\xc0\xaf"[..]),
                Just(&b"\xf4\x90\x80\x80"[..]),
                Just(&b"\xe0\x80"[..]),
                Just(&b"a"[..]),
                Just(&b"\xce\xba"[..]),
                Just(&b"\xf0\x9f"[..]),
            ],
            0..12
        )
        .prop_map(|parts| parts.concat()),
    ];
    text.prop_flat_map(|t| {
        let len = t.len();
        (Just(t), vec(0..=len, 0..8))
    })
}

proptest! {
    #[test]
    fn incremental_utf8_equals_std((text, mut splits) in utf8_splits()) {
        splits.sort_unstable();
        let mut validator = Utf8Validator::new();
        let mut start = 0;
        let mut failed_at = None;
        for &end in splits.iter().chain(std::iter::once(&text.len())) {
            if validator.feed(&text[start..end]).is_err() {
                failed_at = Some(end);
                break;
            }
            // Fail fast: if the prefix fed so far can no longer become valid, feed must have failed.
            let prefix_dead = matches!(std::str::from_utf8(&text[..end]), Err(e) if e.error_len().is_some());
            prop_assert!(!prefix_dead, "prefix {:?} is certainly invalid but was accepted", &text[..end]);
            start = end;
        }
        let std_ok = std::str::from_utf8(&text).is_ok();
        match failed_at {
            Some(end) => {
                prop_assert!(!std_ok);
                // Only fail when the prefix is certainly invalid.
                let dead = matches!(std::str::from_utf8(&text[..end]), Err(e) if e.error_len().is_some());
                prop_assert!(dead, "failed on a prefix that could still become valid");
            }
            None => prop_assert_eq!(validator.finish().is_ok(), std_ok),
        }
    }
}

#[test]
fn incremental_utf8_at_every_two_way_split_of_adversarial_text() {
    let samples: [&[u8]; 6] = [
        "aé€𝄞z".as_bytes(),
        b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
        b"\xf0\x90\x80\x80\xf4\x8f\xbf\xbf",
        b"\xf8\x88\x80\x80\x80",
        b"\xef\xbf\xbf\xc2\x80\xdf\xbf",
        b"\xe0\xa0\x80\xe0\x9f\xbf",
    ];
    for text in samples {
        for i in 0..=text.len() {
            for j in i..=text.len() {
                let mut v = Utf8Validator::new();
                let ok = v.feed(&text[..i]).is_ok()
                    && v.feed(&text[i..j]).is_ok()
                    && v.feed(&text[j..]).is_ok()
                    && v.finish().is_ok();
                assert_eq!(
                    ok,
                    std::str::from_utf8(text).is_ok(),
                    "{text:?} split {i} {j}"
                );
            }
        }
    }
}
