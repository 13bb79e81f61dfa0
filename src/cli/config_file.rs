//! The configuration file of `ringws serve --config FILE` and `ringws check-config --config FILE`: TOML,
//! one top-level key per `serve` flag, named as the flag without its `--` and in snake_case
//! (`--max-message-size 1MiB` is `max_message_size = "1MiB"`), read with serde into [`FileConfig`] and laid
//! under the command line by [`FileConfig::apply`].
//!
//! Values: sizes and durations as on the command line (`"64KiB"`, `"500ms"`; a bare integer is bytes or
//! seconds), list flags as arrays (`allowed_origins = ["https://a.example"]`), switches as booleans
//! (`no_pin = true`), choices as their names (`mode = "pubsub"`). A relative path (`tls_cert`, `tls_key`,
//! `publish_token_file`, `broker_password_file`, `auth_jwt_secret_file`, `auth_jwt_public_key`,
//! `control_socket`, `takeover`) is relative to the file's directory.
//!
//! Precedence, highest first: a flag on the command line, then the environment (the publish token,
//! `RINGWS_PUBLISH_TOKEN`, the only secret a value holds; `RUST_LOG` for `log_level`), then the file,
//! then the default (`ServerConfig::default()`). An unknown key, a section (`[tls]`) or a value of the wrong type is an
//! error naming the file, the line and the key.
//!
//! Owns reading the file and the merge only: never reads the environment (the caller says whether it gives
//! the token) and never loads what a value names (certificates, token files): `serve` does, for both
//! sources alike.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::{
    ByteSize, Compression, HumanDuration, LogFormat, Mode, SenderBudget, ServeArgs, SlowConsumer,
};
use crate::server::config::ConfigError;

/// Every key a configuration file may hold, each a `serve` flag (its clap id). `None`: not in the file.
/// [`FileConfig::effective`] fills it from a whole configuration, which `check-config` prints; the printed
/// text reads back as a configuration file.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub mode: Option<Mode>,
    pub bind: Option<IpAddr>,
    pub port: Option<u16>,
    pub workers: Option<usize>,
    pub no_pin: Option<bool>,
    pub max_message_size: Option<ByteSize>,
    pub max_frame_size: Option<ByteSize>,
    pub max_assembly_memory: Option<ByteSize>,
    pub message_timeout: Option<HumanDuration>,
    pub max_connections: Option<usize>,
    pub max_connections_per_worker: Option<usize>,
    pub listen_backlog: Option<u32>,
    pub max_header_bytes: Option<ByteSize>,
    pub max_pending_request_memory: Option<ByteSize>,
    pub allowed_origins: Option<Vec<String>>,
    pub broker: Option<Vec<String>>,
    pub broker_password_file: Option<PathBuf>,
    pub subprotocols: Option<Vec<String>>,
    pub handshake_timeout: Option<HumanDuration>,
    pub idle_timeout: Option<HumanDuration>,
    pub ping_timeout: Option<HumanDuration>,
    pub close_timeout: Option<HumanDuration>,
    pub shutdown_timeout: Option<HumanDuration>,
    pub drain_window: Option<HumanDuration>,
    pub control_socket: Option<PathBuf>,
    pub takeover: Option<PathBuf>,
    pub max_backpressure: Option<ByteSize>,
    pub slow_consumer: Option<SlowConsumer>,
    pub inbox_capacity: Option<u32>,
    pub broadcast_include_sender: Option<bool>,
    pub sender_budget: Option<SenderBudget>,
    pub publish_token: Option<String>,
    pub publish_token_file: Option<PathBuf>,
    pub max_publish_body: Option<ByteSize>,
    pub publish_in_echo: Option<bool>,
    pub max_subscriptions: Option<usize>,
    pub history_size: Option<usize>,
    pub history_ttl: Option<HumanDuration>,
    pub history_max_bytes: Option<ByteSize>,
    pub presence: Option<bool>,
    pub presence_ttl: Option<HumanDuration>,
    pub auth_jwt_secret: Option<String>,
    pub auth_jwt_secret_file: Option<PathBuf>,
    pub auth_jwt_public_key: Option<PathBuf>,
    pub metrics_listen: Option<SocketAddr>,
    pub recv_buffer_size: Option<ByteSize>,
    pub recv_buffers: Option<u16>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub compression: Option<Compression>,
    pub compression_threshold: Option<ByteSize>,
    pub compression_level: Option<u8>,
    pub compression_window_bits: Option<u8>,
    pub compression_mem_level: Option<u8>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
}

/// A configuration file read and checked: its values and the line of each key.
#[derive(Debug)]
pub struct LoadedFile {
    pub path: PathBuf,
    pub values: FileConfig,
    /// The line (from 1) of each key present.
    lines: BTreeMap<String, usize>,
}

impl LoadedFile {
    /// Reads and parses `path`. The error (one line) names the file and, for a bad key or value, the line
    /// and the key: `ringws.toml:3: max_message_size: invalid size: 1XB`.
    pub fn load(path: &Path, known_keys: &[String]) -> Result<LoadedFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--config {}: cannot read: {e}", path.display()))?;
        LoadedFile::parse(path, &text, known_keys)
    }

    /// [`LoadedFile::load`] on `text`, the contents of `path`.
    pub fn parse(path: &Path, text: &str, known_keys: &[String]) -> Result<LoadedFile, String> {
        let shown = path.display();
        let table = toml::de::DeTable::parse(text)
            .map_err(|e| located(path, text, e.span(), e.message()))?;
        let mut lines = BTreeMap::new();
        for (key, value) in table.get_ref().iter() {
            let name: &str = key.get_ref();
            let line = line_at(text, key.span().start);
            if let toml::de::DeValue::Table(_) = value.get_ref() {
                return Err(format!(
                    "{shown}:{line}: {name}: sections are not used: every key is a `ringws serve` flag \
                     at the top level (e.g. tls_cert = \"cert.pem\")"
                ));
            }
            let known = |key: &str| known_keys.iter().any(|k| k == key);
            if !known(name) {
                let hint = if known(&name.replace('-', "_")) {
                    format!(
                        " (keys are written in snake_case: {})",
                        name.replace('-', "_")
                    )
                } else if name == "config" {
                    " (a configuration file cannot name another)".to_string()
                } else {
                    " (keys are the `ringws serve` flags without `--`, in snake_case: see `ringws \
                     serve --help`)"
                        .to_string()
                };
                return Err(format!("{shown}:{line}: unknown key `{name}`{hint}"));
            }
            lines.insert(name.to_string(), line);
        }
        let mut values: FileConfig =
            toml::from_str(text).map_err(|e| located(path, text, e.span(), e.message()))?;
        // Paths in the file are relative to the file's directory, wherever the server is started.
        let base = path.parent().unwrap_or(Path::new(""));
        let paths = [
            &mut values.tls_cert,
            &mut values.tls_key,
            &mut values.publish_token_file,
            &mut values.broker_password_file,
            &mut values.auth_jwt_secret_file,
            &mut values.auth_jwt_public_key,
            &mut values.control_socket,
            &mut values.takeover,
        ];
        for named in paths.into_iter().flatten() {
            if named.is_relative() {
                *named = base.join(&*named);
            }
        }
        Ok(LoadedFile {
            path: path.to_path_buf(),
            values,
            lines,
        })
    }

    /// Where `key` is set in the file: `ringws.toml:3`.
    pub fn location(&self, key: &str) -> Option<String> {
        self.lines
            .get(key)
            .map(|line| format!("{}:{line}", self.path.display()))
    }

    /// `error` (which names a flag) with, when the value came from this file, where: `--max-frame-size:
    /// ... (max_frame_size in ringws.toml:4)`.
    pub fn explain(&self, error: &ConfigError, on_command_line: impl Fn(&str) -> bool) -> String {
        let key = error.flag.trim_start_matches("--").replace('-', "_");
        match self.location(&key) {
            Some(location) if !on_command_line(&key) => format!("{error} ({key} in {location})"),
            _ => error.to_string(),
        }
    }
}

/// The line (from 1) of byte offset `at` in `text`.
fn line_at(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// A parse error as one line: `FILE:LINE: KEY: MESSAGE`, the key read from the line the error is on
/// (left out when that line holds no `key =`).
fn located(path: &Path, text: &str, span: Option<std::ops::Range<usize>>, message: &str) -> String {
    let message = message.trim().replace('\n', " ");
    let Some(span) = span else {
        return format!("{}: {message}", path.display());
    };
    let line = line_at(text, span.start);
    let key = text
        .lines()
        .nth(line - 1)
        .and_then(|source| source.split_once('='))
        .map(|(key, _)| key.trim())
        .filter(|key| {
            !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
    // serde quotes a value of the wrong type in its message: never one that may hold a secret (a
    // password in a `broker` URL, the publish token), nor one on a line without its key (the inside of a
    // list spread over several lines).
    let message = match key {
        Some(key) if !SECRET_KEYS.contains(&key) => message,
        _ => without_quoted_value(&message),
    };
    match key {
        Some(key) => format!("{}:{line}: {key}: {message}", path.display()),
        None => format!("{}:{line}: {message}", path.display()),
    }
}

/// Keys whose values may hold a secret, never repeated in an error.
const SECRET_KEYS: &[&str] = &["broker", "publish_token"];

/// `message` with what it quotes (from its first `"` to its last) replaced by `"<redacted>"`.
fn without_quoted_value(message: &str) -> String {
    match (message.find('"'), message.rfind('"')) {
        (Some(first), Some(last)) if first < last => {
            format!(
                "{}\"<redacted>\"{}",
                &message[..first],
                &message[last + 1..]
            )
        }
        _ => message.to_string(),
    }
}

impl FileConfig {
    /// Lays these values under `args`: each value the file has replaces the flag's value unless that
    /// flag was given on the command line (`on_command_line(key)`). The file's publish token
    /// (`publish_token` or `publish_token_file`) is used only when neither the command line nor the
    /// environment (`env_gives_token`) gives one.
    pub fn apply(
        &self,
        args: &mut ServeArgs,
        on_command_line: impl Fn(&str) -> bool,
        env_gives_token: bool,
    ) {
        macro_rules! lay_under {
            ($($key:ident),* $(,)?) => {
                $(
                    if let Some(value) = &self.$key {
                        if !on_command_line(stringify!($key)) {
                            args.$key = value.clone().into();
                        }
                    }
                )*
            };
        }
        lay_under!(
            mode,
            bind,
            port,
            workers,
            no_pin,
            max_message_size,
            max_frame_size,
            max_assembly_memory,
            message_timeout,
            max_connections,
            max_connections_per_worker,
            listen_backlog,
            max_header_bytes,
            max_pending_request_memory,
            allowed_origins,
            broker,
            broker_password_file,
            subprotocols,
            handshake_timeout,
            idle_timeout,
            ping_timeout,
            close_timeout,
            shutdown_timeout,
            drain_window,
            control_socket,
            takeover,
            max_backpressure,
            slow_consumer,
            inbox_capacity,
            broadcast_include_sender,
            sender_budget,
            max_publish_body,
            publish_in_echo,
            max_subscriptions,
            history_size,
            history_ttl,
            history_max_bytes,
            presence,
            presence_ttl,
            metrics_listen,
            recv_buffer_size,
            recv_buffers,
            tls_cert,
            tls_key,
            compression,
            compression_threshold,
            compression_level,
            compression_window_bits,
            compression_mem_level,
            log_format,
            log_level,
        );
        let token_elsewhere = on_command_line("publish_token")
            || on_command_line("publish_token_file")
            || env_gives_token;
        if !token_elsewhere {
            lay_under!(publish_token, publish_token_file);
        }
        // The JWT secret, like the publish token: from the file only when neither the command line nor
        // the environment gives one. The public key is a plain path.
        let secret_elsewhere = on_command_line("auth_jwt_secret")
            || on_command_line("auth_jwt_secret_file")
            || std::env::var_os(super::AUTH_JWT_SECRET_ENV).is_some();
        if !secret_elsewhere {
            lay_under!(auth_jwt_secret, auth_jwt_secret_file);
        }
        lay_under!(auth_jwt_public_key);
    }

    /// The file form of a whole configuration: `args` after the file was applied (`log_level`: the
    /// directives in effect, `RUST_LOG` included), `config` the
    /// [`crate::server::ServerConfig`] built from them (values computed at startup filled in: workers,
    /// the per-worker limit, the frame limit, the publish body limit). The publish token itself is
    /// never included; its file's path is.
    pub fn effective(args: &ServeArgs, config: &crate::server::ServerConfig) -> FileConfig {
        FileConfig {
            mode: Some(args.mode),
            bind: Some(config.bind),
            port: Some(config.port),
            workers: Some(config.workers),
            no_pin: Some(!config.pin_workers),
            max_message_size: Some(ByteSize(config.max_message_size)),
            max_frame_size: Some(ByteSize(config.max_frame_size as usize)),
            max_assembly_memory: Some(ByteSize(config.max_assembly_memory)),
            message_timeout: Some(HumanDuration(config.message_timeout)),
            max_connections: Some(config.max_connections),
            max_connections_per_worker: Some(config.effective_connections_per_worker()),
            listen_backlog: Some(config.listen_backlog),
            max_header_bytes: Some(ByteSize(config.max_header_bytes)),
            max_pending_request_memory: Some(ByteSize(config.max_pending_request_memory)),
            allowed_origins: Some(config.allowed_origins.clone()),
            // Never a Redis password (as never the publish token).
            broker: Some(
                config
                    .broker
                    .iter()
                    .map(|url| crate::broker::redacted(url))
                    .collect(),
            ),
            broker_password_file: args.broker_password_file.clone(),
            subprotocols: Some(config.subprotocols.clone()),
            handshake_timeout: Some(HumanDuration(config.handshake_timeout)),
            idle_timeout: Some(HumanDuration(config.idle_timeout)),
            ping_timeout: Some(HumanDuration(config.ping_timeout)),
            close_timeout: Some(HumanDuration(config.close_timeout)),
            shutdown_timeout: Some(HumanDuration(config.shutdown_timeout)),
            drain_window: Some(HumanDuration(config.drain_window)),
            control_socket: args.control_socket.clone(),
            takeover: args.takeover.clone(),
            max_backpressure: Some(ByteSize(config.max_backpressure)),
            slow_consumer: Some(config.slow_consumer.into()),
            inbox_capacity: Some(config.inbox_capacity as u32),
            broadcast_include_sender: Some(config.broadcast_include_sender),
            sender_budget: Some(config.sender_budget.into()),
            publish_token: None,
            publish_token_file: args.publish_token_file.clone(),
            max_publish_body: config.publish.as_ref().map(|p| ByteSize(p.max_body)),
            publish_in_echo: Some(args.publish_in_echo),
            max_subscriptions: Some(config.max_subscriptions),
            history_size: Some(config.history.map_or(0, |h| h.size)),
            history_ttl: Some(HumanDuration(
                config.history.map_or(args.history_ttl.0, |h| h.ttl),
            )),
            history_max_bytes: Some(ByteSize(
                config
                    .history
                    .map_or(args.history_max_bytes.0, |h| h.max_bytes),
            )),
            presence: Some(config.presence),
            presence_ttl: Some(HumanDuration(config.presence_ttl)),
            auth_jwt_secret: None,
            auth_jwt_secret_file: args.auth_jwt_secret_file.clone(),
            auth_jwt_public_key: args.auth_jwt_public_key.clone(),
            metrics_listen: config.metrics_listen,
            recv_buffer_size: Some(ByteSize(config.recv_buffer_size)),
            recv_buffers: Some(config.recv_buffers),
            tls_cert: args.tls_cert.clone(),
            tls_key: args.tls_key.clone(),
            compression: Some(args.compression),
            compression_threshold: Some(ByteSize(config.compression.threshold)),
            compression_level: Some(config.compression.level),
            compression_window_bits: Some(config.compression.max_window_bits),
            compression_mem_level: Some(config.compression.context_mem_level),
            log_format: Some(args.log_format),
            log_level: args.log_level.clone(),
        }
    }

    /// This configuration as TOML text (keys without a value are left out).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a configuration always serializes")
    }
}

/// Reads a value written as text (`"64KiB"`) or as a bare integer, both with `parse` (an integer is read
/// as its digits: bytes, seconds).
struct TextOrInteger<T> {
    parse: fn(&str) -> Result<T, String>,
    expecting: &'static str,
    _value: PhantomData<T>,
}

impl<T> Visitor<'_> for TextOrInteger<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        (self.parse)(text).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<T, E> {
        self.visit_str(&value.to_string())
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<T, E> {
        self.visit_str(&value.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextOrInteger {
            parse: |text| text.parse::<ByteSize>(),
            expecting: "a size such as \"64KiB\" or a number of bytes",
            _value: PhantomData,
        })
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextOrInteger {
            parse: |text| text.parse::<HumanDuration>(),
            expecting: "a duration such as \"10s\" or \"500ms\", or a number of seconds",
            _value: PhantomData,
        })
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<LoadedFile, String> {
        LoadedFile::parse(Path::new("ringws.toml"), text, &super::super::config_keys())
    }

    #[test]
    fn a_misread_secret_is_not_shown() {
        for text in [
            "broker = \"redis://:hunter2@h:1\"\n",
            "broker = [\"redis://:hunter2@h:1\", 5]\n",
            "broker = [\"redis://:hunter2@h:1\"]\nbroker_password_file = 5\n",
            "publish_token = [\"hunter2\"]\n",
            "publish_token = \"hunter2\"\nmode = \"x\"\n",
        ] {
            let error = parse(text).unwrap_err();
            assert!(!error.contains("hunter2"), "{text}: {error}");
            assert!(error.starts_with("ringws.toml:"), "{error}");
        }
    }

    #[test]
    fn values_are_read_in_their_command_line_forms() {
        let file = parse(
            "mode = \"pubsub\"\nmax_message_size = \"64KiB\"\nmax_frame_size = 4096\n\
             handshake_timeout = \"500ms\"\nidle_timeout = 7\nallowed_origins = [\"https://a.example\"]\n\
             no_pin = true\nslow_consumer = \"drop\"\nbind = \"127.0.0.1\"\n",
        )
        .unwrap();
        let values = file.values;
        assert_eq!(values.mode, Some(Mode::Pubsub));
        assert_eq!(values.max_message_size, Some(ByteSize(64 << 10)));
        assert_eq!(values.max_frame_size, Some(ByteSize(4096)));
        assert_eq!(
            values.handshake_timeout,
            Some(HumanDuration(std::time::Duration::from_millis(500)))
        );
        assert_eq!(
            values.idle_timeout,
            Some(HumanDuration(std::time::Duration::from_secs(7)))
        );
        assert_eq!(
            values.allowed_origins,
            Some(vec!["https://a.example".to_string()])
        );
        assert_eq!(values.no_pin, Some(true));
        assert_eq!(values.slow_consumer, Some(SlowConsumer::Drop));
        assert_eq!(values.bind, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(file.lines["idle_timeout"], 5);
    }

    #[test]
    fn relative_paths_are_relative_to_the_file() {
        let text = "tls_cert = \"cert.pem\"\ntls_key = \"/etc/ringws/key.pem\"\n\
                    publish_token_file = \"secrets/token\"\n";
        let keys = super::super::config_keys();
        let file = LoadedFile::parse(Path::new("/etc/ringws/ringws.toml"), text, &keys).unwrap();
        assert_eq!(
            file.values.tls_cert.as_deref(),
            Some(Path::new("/etc/ringws/cert.pem"))
        );
        assert_eq!(
            file.values.tls_key.as_deref(),
            Some(Path::new("/etc/ringws/key.pem"))
        );
        assert_eq!(
            file.values.publish_token_file.as_deref(),
            Some(Path::new("/etc/ringws/secrets/token"))
        );
        let here = LoadedFile::parse(Path::new("ringws.toml"), text, &keys).unwrap();
        assert_eq!(here.values.tls_cert.as_deref(), Some(Path::new("cert.pem")));
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_key() {
        let error = parse("port = 1\nmax_mesage_size = \"1MiB\"\n").unwrap_err();
        assert!(
            error.starts_with("ringws.toml:2: unknown key `max_mesage_size`"),
            "{error}"
        );
        let error = parse("max-message-size = \"1MiB\"\n").unwrap_err();
        assert!(error.contains("snake_case: max_message_size"), "{error}");
        let error = parse("\n\nmax_message_size = \"1XB\"\n").unwrap_err();
        assert!(
            error.starts_with("ringws.toml:3: max_message_size: invalid size unit"),
            "{error}"
        );
        let error = parse("port = \"high\"\n").unwrap_err();
        assert!(error.starts_with("ringws.toml:1: port: "), "{error}");
        let error = parse("mode = \"relay\"\n").unwrap_err();
        assert!(error.starts_with("ringws.toml:1: mode: "), "{error}");
        let error = parse("[tls]\ncert = \"c.pem\"\n").unwrap_err();
        assert!(error.starts_with("ringws.toml:1: tls: sections"), "{error}");
        let error = parse("config = \"other.toml\"\n").unwrap_err();
        assert!(error.contains("cannot name another"), "{error}");
        let error = parse("port = \n").unwrap_err();
        assert!(error.starts_with("ringws.toml:1: "), "{error}");
    }
}
