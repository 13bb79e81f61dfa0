//! Topics: the rules for a topic's name and, per worker, the table of who subscribes to what.
//!
//! A leaf like `protocol`: no I/O, no clock, no server types. Every layer that speaks of topics (the
//! pub/sub handler, `POST /publish`, later a broker, channels, SSE) takes its rules from here, so "what is
//! a valid topic" has one answer.

mod name;

pub use name::{valid_topic, INVALID_TOPIC, MAX_TOPIC_LEN};
