//! Local addresses for the failure cases: a port nothing listens on.
//!
//! Owns no socket past the call: the port is free when returned (another process could take it, which
//! on loopback within one test is unlikely and would only make the connect succeed, never hang).

use std::net::TcpListener;

/// A `ws://` URL on a local port nothing listens on (a listener bound, then dropped): connects are refused.
pub fn closed_port_url() -> String {
    format!("ws://127.0.0.1:{}/", free_port())
}

/// A loopback port nothing listens on (a listener bound, then dropped), for a service a test starts.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_listens_on_the_closed_port() {
        let url = closed_port_url();
        let addr = url
            .strip_prefix("ws://")
            .and_then(|rest| rest.strip_suffix('/'))
            .expect("ws://IP:PORT/");
        let refused = std::net::TcpStream::connect(addr).expect_err("refused");
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    }
}
