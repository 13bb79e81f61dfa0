//! The topic name rules: what a topic may be called, and the text of the error when it is not.
//!
//! Pure checks on a `&str`; never allocates.

/// Longest topic name, in bytes.
pub const MAX_TOPIC_LEN: usize = 64;

/// The error text for a name that [`valid_topic`] refuses.
pub const INVALID_TOPIC: &str = "invalid topic (1-64 of A-Z a-z 0-9 . _ - : /)";

/// Topic names: 1 to 64 bytes of ASCII letters, digits and `.`, `_`, `-`, `:`, `/`.
pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= MAX_TOPIC_LEN
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rules() {
        assert!(valid_topic("news/eu.sport-1:live_2"));
        assert!(!valid_topic(""));
        assert!(!valid_topic("a b"));
        assert!(!valid_topic(&"x".repeat(65)));
    }

    #[test]
    fn length_is_counted_in_bytes_up_to_the_limit() {
        assert!(valid_topic("x"));
        assert!(valid_topic(&"x".repeat(MAX_TOPIC_LEN)));
        assert!(!valid_topic(&"x".repeat(MAX_TOPIC_LEN + 1)));
    }

    #[test]
    fn every_allowed_byte_and_nothing_else() {
        for byte in 0u8..=127 {
            let allowed = byte.is_ascii_alphanumeric() || b"._-:/".contains(&byte);
            let name = format!("a{}b", byte as char);
            assert_eq!(valid_topic(&name), allowed, "byte {byte:#04x}");
        }
        assert!(!valid_topic("caf\u{e9}"), "non-ASCII letters are refused");
        assert!(!valid_topic("a%20b"), "names are not percent-decoded");
    }

    #[test]
    fn the_error_text_states_the_rules() {
        assert_eq!(
            INVALID_TOPIC,
            "invalid topic (1-64 of A-Z a-z 0-9 . _ - : /)"
        );
        assert!(INVALID_TOPIC.contains(&MAX_TOPIC_LEN.to_string()));
    }
}
