//! Topics: the rules for a topic's name and, per worker, the table of who subscribes to what.
//!
//! A leaf like `protocol`: no I/O, no clock, no server types. Every layer that speaks of topics (today
//! the pub/sub handler and `POST /publish`) takes the rules and the table from here, so "what is a valid
//! topic" and "who subscribes to it" each have one answer.

mod name;
mod table;

pub use name::{valid_topic, INVALID_TOPIC, MAX_TOPIC_LEN};
pub use table::{SubscribeError, Subscribed, Subscribers, TopicTable, Unsubscribed};
