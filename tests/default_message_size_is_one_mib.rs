//! With default flags the largest message is 1 MiB: a message of exactly 1 MiB (whole or fragmented) is
//! echoed, one byte more fails with 1009, and a frame header announcing more is refused before its payload.

mod common;

use common::*;
use std::io::Write;
use std::time::Duration;

const MIB: usize = 1 << 20;

#[test]
fn one_mib_is_echoed_and_one_byte_more_is_refused_with_1009() {
    let server = ServerProcess::start(ringws_binary(), &[]);

    let mut stream = raw_websocket(server.addr);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let payload = vec![0x42; MIB];
    stream
        .write_all(&client_frame(true, 0, 0x2, &payload, true))
        .unwrap();
    let (fin, opcode, echoed) = read_server_frame(&mut stream).expect("the echo");
    assert!(fin && opcode == 0x2 && echoed == payload);
    stream
        .write_all(&client_frame(false, 0, 0x2, &payload[..MIB / 2], true))
        .unwrap();
    stream
        .write_all(&client_frame(true, 0, 0x0, &payload[MIB / 2..], true))
        .unwrap();
    let (_, _, echoed) = read_server_frame(&mut stream).expect("the echo");
    assert_eq!(echoed.len(), MIB);
    // Fragments adding up to one byte over.
    stream
        .write_all(&client_frame(false, 0, 0x2, &payload, true))
        .unwrap();
    let _ = stream.write_all(&client_frame(true, 0, 0x0, b"!", true));
    assert_eq!(expect_close(&mut stream), Some(1009));

    // A header announcing 1 MiB + 1: refused at once, before any payload.
    let mut stream = raw_websocket(server.addr);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(MIB as u64 + 1).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    stream.write_all(&header).unwrap();
    assert_eq!(expect_close(&mut stream), Some(1009));
}
