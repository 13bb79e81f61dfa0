//! The JSON text of the pub/sub protocol's answers and events (docs/PROTOCOL.md): replies to commands,
//! errors with their codes, publication envelopes for `ringws.v1` clients, presence events and lists.
//!
//! Only formatting: every string is escaped by `serde_json`, every binary payload goes as base64. No I/O,
//! no state.

use std::fmt::Write;

use base64::Engine;

use crate::channels::{Member, Position};
use crate::protocol::MessageKind;

/// The structured protocol's subprotocol name: clients that offer it get publications in envelopes
/// (topic, offset, epoch, data), request ids echoed and positions in replies.
pub const V1: &str = "ringws.v1";

/// A JSON string.
pub fn json_str(out: &mut String, text: &str) {
    // Writing a `str` to a `String` cannot fail.
    let _ = serde_json::to_writer(string_writer(out), text);
}

/// `serde_json` writes bytes; a `String` takes only UTF-8. An escaped string is written as runs of the
/// input cut at the characters it escapes (all ASCII), so every write is whole UTF-8; one that were not
/// would fail the write rather than corrupt the text.
fn string_writer(out: &mut String) -> impl std::io::Write + '_ {
    struct W<'a>(&'a mut String);
    impl std::io::Write for W<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let text = std::str::from_utf8(buf)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            self.0.push_str(text);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    W(out)
}

/// `"data":"<text>"` for a text payload, `"b64":"<base64>"` for a binary one.
pub fn data_field(out: &mut String, kind: MessageKind, payload: &[u8]) {
    match kind {
        MessageKind::Text => {
            out.push_str("\"data\":");
            json_str(out, std::str::from_utf8(payload).unwrap_or(""));
        }
        MessageKind::Binary => {
            out.push_str("\"b64\":\"");
            base64::engine::general_purpose::STANDARD.encode_string(payload, out);
            out.push('"');
        }
    }
}

/// `,"offset":O,"epoch":"E"` (nothing without a position).
pub fn position_fields(out: &mut String, position: Option<Position>) {
    if let Some(position) = position {
        let _ = write!(
            out,
            ",\"offset\":{},\"epoch\":\"{}\"",
            position.offset, position.epoch
        );
    }
}

/// A publication as a `ringws.v1` client gets it:
/// `{"pub":{"topic":T,"offset":O,"epoch":E,"data":D}}` (offset and epoch with history; `b64` for binary).
pub fn envelope(
    out: &mut String,
    topic: &str,
    position: Option<Position>,
    kind: MessageKind,
    payload: &[u8],
) {
    out.clear();
    out.push_str("{\"pub\":{\"topic\":");
    json_str(out, topic);
    position_fields(out, position);
    out.push(',');
    data_field(out, kind, payload);
    out.push_str("}}");
}

/// A member as presence lists and events show it: `{"client":C,"user":U,"info":I}` (`info` only when
/// the token had one).
pub fn member(out: &mut String, member: &Member) {
    out.push_str("{\"client\":");
    json_str(out, &member.client);
    out.push_str(",\"user\":");
    json_str(out, &member.user);
    if let Some(info) = &member.info {
        out.push_str(",\"info\":");
        out.push_str(info);
    }
    out.push('}');
}

/// A join or leave event: `{"join":{"topic":T,"client":C,"user":U,"info":I}}`.
pub fn presence_event(out: &mut String, join: bool, topic: &str, who: &Member) {
    out.clear();
    out.push_str(if join {
        "{\"join\":{\"topic\":"
    } else {
        "{\"leave\":{\"topic\":"
    });
    json_str(out, topic);
    out.push(',');
    let start = out.len();
    member(out, who);
    // `member` wrote `{...}`: splice its fields into this object.
    out.remove(start);
    out.push('}');
}

/// The start of a reply: `{"id":N,` (when the command had an id) `"ok":"op","topic":T`.
pub fn ok_start(out: &mut String, id: Option<u64>, op: &str, topic: &str) {
    out.clear();
    out.push('{');
    if let Some(id) = id {
        let _ = write!(out, "\"id\":{id},");
    }
    out.push_str("\"ok\":");
    json_str(out, op);
    out.push_str(",\"topic\":");
    json_str(out, topic);
}

/// An error reply: `{"id":N,"error":E,"code":C,"op":O,"topic":T}`; `id` and `code` for `ringws.v1`
/// clients (a raw client gets the version 1 form, `{"error":E,"op":O,"topic":T}`), `op` and `topic` when
/// known.
pub fn error(
    out: &mut String,
    v1: bool,
    id: Option<u64>,
    message: &str,
    op: Option<&str>,
    topic: Option<&str>,
) {
    out.clear();
    out.push('{');
    if let (true, Some(id)) = (v1, id) {
        let _ = write!(out, "\"id\":{id},");
    }
    out.push_str("\"error\":");
    json_str(out, message);
    if v1 {
        let _ = write!(out, ",\"code\":{}", error_code(message));
    }
    if let Some(op) = op {
        out.push_str(",\"op\":");
        json_str(out, op);
    }
    if let Some(topic) = topic {
        out.push_str(",\"topic\":");
        json_str(out, topic);
    }
    out.push('}');
}

/// The numeric code of each error text (docs/PROTOCOL.md, "Errors").
pub fn error_code(message: &str) -> u16 {
    match message {
        crate::app::pubsub::NOT_ALLOWED | crate::app::pubsub::PUBLISH_NEEDS_TOKEN => 403,
        crate::topics::INVALID_TOPIC => 422,
        "subscription limit reached" => 429,
        crate::app::pubsub::HISTORY_OFF | crate::app::pubsub::PRESENCE_OFF => 501,
        crate::app::pubsub::HISTORY_UNREACHABLE | crate::app::pubsub::PRESENCE_UNREACHABLE => 503,
        _ => 400,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::Epoch;
    use std::sync::Arc;

    fn parse(text: &str) -> serde_json::Value {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn envelopes_carry_topic_position_and_data() {
        let mut out = String::new();
        let position = Position {
            offset: 7,
            epoch: Epoch::parse("0a1b2c3d").unwrap(),
        };
        envelope(
            &mut out,
            "room.1",
            Some(position),
            MessageKind::Text,
            "h\"i\n".as_bytes(),
        );
        assert_eq!(
            parse(&out),
            serde_json::json!({"pub":{"topic":"room.1","offset":7,"epoch":"0a1b2c3d","data":"h\"i\n"}})
        );
        envelope(&mut out, "t", None, MessageKind::Binary, &[0, 255, 1]);
        assert_eq!(
            parse(&out),
            serde_json::json!({"pub":{"topic":"t","b64":"AP8B"}})
        );
    }

    #[test]
    fn presence_events_and_errors_are_json() {
        let mut out = String::new();
        let who = Member {
            client: Arc::from("0.1.2"),
            user: Arc::from("al\"ice"),
            info: Some(Arc::from("{\"name\":\"Alice\"}")),
        };
        presence_event(&mut out, true, "room", &who);
        assert_eq!(
            parse(&out),
            serde_json::json!({"join":{"topic":"room","client":"0.1.2","user":"al\"ice","info":{"name":"Alice"}}})
        );
        error(
            &mut out,
            true,
            Some(4),
            "not allowed",
            Some("sub"),
            Some("x"),
        );
        assert_eq!(
            parse(&out),
            serde_json::json!({"id":4,"error":"not allowed","code":403,"op":"sub","topic":"x"})
        );
        error(
            &mut out,
            false,
            Some(4),
            "not allowed",
            Some("sub"),
            Some("x"),
        );
        assert_eq!(out, r#"{"error":"not allowed","op":"sub","topic":"x"}"#);
    }
}
