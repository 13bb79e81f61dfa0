//! The `--broker` address: `redis://[user:pass@]HOST:PORT[/db]`, checked when the configuration is, and
//! the password `--broker-password-file` gives every URL without one of its own.
//!
//! Only this narrow form is accepted (no TLS, no Unix socket, no query options), so that a typo is an
//! error at startup naming the flag rather than a link that never comes up. Never touches the network,
//! and never prints a password: not in `Debug`, not in an error.

use std::fmt;

/// A parsed `--broker` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// `HOST:PORT` as given (the name of the link in logs, metrics and `/healthz`).
    pub addr: String,
    /// `AUTH` credentials: (user, password); the user is `None` for `redis://:pass@...` (`AUTH pass`).
    pub auth: Option<(Option<String>, String)>,
    /// The database for `SELECT` (publishing connection only; pub/sub ignores databases).
    pub db: u32,
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the password.
        f.debug_struct("RedisUrl")
            .field("addr", &self.addr)
            .field("auth", &self.auth.as_ref().map(|(user, _)| user))
            .field("db", &self.db)
            .finish()
    }
}

/// A Redis password from `--broker-password-file`: `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerPassword(String);

impl BrokerPassword {
    /// The password read from a file: surrounding whitespace (the file's final newline) trimmed. `None`
    /// when nothing is left or when it spans several lines (a file holds one password).
    pub fn from_file_text(text: &str) -> Option<BrokerPassword> {
        let password = text.trim();
        (!password.is_empty() && !password.contains(['\n', '\r']))
            .then(|| BrokerPassword(password.to_string()))
    }
}

impl fmt::Debug for BrokerPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BrokerPassword(<redacted>)")
    }
}

/// Why a `--broker` URL was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisUrlError {
    /// Not `redis://...`.
    Scheme,
    /// No host, or no `:PORT`, or a port that is not 1-65535.
    HostPort,
    /// The part after `/` is not a database number.
    Database,
    /// `user:pass@` without a password.
    Password,
}

impl fmt::Display for RedisUrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RedisUrlError::Scheme => "expected redis://[user:pass@]HOST:PORT[/db]",
            RedisUrlError::HostPort => "expected HOST:PORT with a port of 1-65535",
            RedisUrlError::Database => "the database after / must be a number",
            RedisUrlError::Password => {
                "credentials must be user:pass@ or :pass@ (or user@ with --broker-password-file)"
            }
        })
    }
}

impl std::error::Error for RedisUrlError {}

impl RedisUrl {
    /// `url` on its own: credentials only as given in it.
    pub fn parse(url: &str) -> Result<RedisUrl, RedisUrlError> {
        RedisUrl::parse_with(url, None)
    }

    /// `url`, with `password` (`--broker-password-file`) for a URL without one of its own:
    /// `redis://HOST:PORT` authenticates with `AUTH password`, `redis://user@HOST:PORT` with
    /// `AUTH user password`; a password in the URL wins.
    pub fn parse_with(
        url: &str,
        password: Option<&BrokerPassword>,
    ) -> Result<RedisUrl, RedisUrlError> {
        let given = password.map(|p| p.0.clone());
        let rest = url.strip_prefix("redis://").ok_or(RedisUrlError::Scheme)?;
        let (authority, db) = match rest.split_once('/') {
            Some((authority, "")) => (authority, 0),
            Some((authority, db)) => (
                authority,
                db.parse::<u32>().map_err(|_| RedisUrlError::Database)?,
            ),
            None => (rest, 0),
        };
        let (auth, host_port) = match authority.rsplit_once('@') {
            Some((credentials, host_port)) => {
                let (user, password) = match credentials.split_once(':') {
                    Some((user, password)) if !password.is_empty() => (user, password.to_string()),
                    Some(_) => return Err(RedisUrlError::Password),
                    None => (credentials, given.ok_or(RedisUrlError::Password)?),
                };
                if credentials.is_empty() {
                    return Err(RedisUrlError::Password);
                }
                let user = (!user.is_empty()).then(|| user.to_string());
                (Some((user, password)), host_port)
            }
            None => (given.map(|password| (None, password)), authority),
        };
        let (host, port) = host_port.rsplit_once(':').ok_or(RedisUrlError::HostPort)?;
        let port_ok = port.parse::<u16>().is_ok_and(|port| port != 0);
        if host.is_empty() || !port_ok || host.contains(['/', '?', '#', ' ']) {
            return Err(RedisUrlError::HostPort);
        }
        Ok(RedisUrl {
            addr: host_port.to_string(),
            auth,
            db,
        })
    }
}

/// `url` with its password (if any) replaced by `REDACTED`, for printing a configuration
/// (`ringws check-config`): a URL that does not parse is returned as it is.
pub fn redacted(url: &str) -> String {
    match RedisUrl::parse(url) {
        Ok(RedisUrl {
            auth: Some((user, _)),
            addr,
            ..
        }) => {
            let db = url
                .strip_prefix("redis://")
                .and_then(|rest| rest.split_once('/'));
            let db = db.map_or(String::new(), |(_, db)| format!("/{db}"));
            format!("redis://{}:REDACTED@{addr}{db}", user.unwrap_or_default())
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accepted_forms() {
        let url = RedisUrl::parse("redis://127.0.0.1:6379").unwrap();
        assert_eq!(
            (url.addr.as_str(), url.auth, url.db),
            ("127.0.0.1:6379", None, 0)
        );
        let url = RedisUrl::parse("redis://u:p@redis.local:7000/3").unwrap();
        assert_eq!(url.addr, "redis.local:7000");
        assert_eq!(url.auth, Some((Some("u".into()), "p".into())));
        assert_eq!(url.db, 3);
        let url = RedisUrl::parse("redis://:secret@[::1]:6379/").unwrap();
        assert_eq!(url.addr, "[::1]:6379");
        assert_eq!(url.auth, Some((None, "secret".into())));
        assert!(!format!("{url:?}").contains("secret"));
    }

    #[test]
    fn a_printed_url_hides_its_password() {
        assert_eq!(redacted("redis://u:p@h:1/3"), "redis://u:REDACTED@h:1/3");
        assert_eq!(redacted("redis://:p@h:1"), "redis://:REDACTED@h:1");
        assert_eq!(redacted("redis://h:1/2"), "redis://h:1/2");
    }

    #[test]
    fn a_password_file_serves_every_url_without_a_password() {
        let password = BrokerPassword::from_file_text("  s3cret\n").unwrap();
        let parse = |url| RedisUrl::parse_with(url, Some(&password)).unwrap().auth;
        assert_eq!(parse("redis://h:1"), Some((None, "s3cret".into())));
        assert_eq!(parse("redis://h:1/2"), Some((None, "s3cret".into())));
        assert_eq!(
            parse("redis://app@h:1"),
            Some((Some("app".into()), "s3cret".into()))
        );
        // A URL's own password wins.
        assert_eq!(
            parse("redis://app:own@h:1"),
            Some((Some("app".into()), "own".into()))
        );
        assert_eq!(parse("redis://:own@h:1"), Some((None, "own".into())));
        // Still refused: an empty password in the URL, empty credentials.
        for url in ["redis://app:@h:1", "redis://@h:1"] {
            assert_eq!(
                RedisUrl::parse_with(url, Some(&password)),
                Err(RedisUrlError::Password),
                "{url}"
            );
        }
        // Without the file, `user@` has no password.
        assert_eq!(
            RedisUrl::parse("redis://app@h:1"),
            Err(RedisUrlError::Password)
        );
        let url = RedisUrl::parse_with("redis://app@h:1", Some(&password)).unwrap();
        assert!(!format!("{url:?} {password:?}").contains("s3cret"));
    }

    #[test]
    fn a_password_file_holds_one_line() {
        assert_eq!(
            BrokerPassword::from_file_text("pw\r\n"),
            Some(BrokerPassword("pw".into()))
        );
        assert_eq!(
            BrokerPassword::from_file_text("with inner space\n"),
            Some(BrokerPassword("with inner space".into()))
        );
        for text in ["", " \n", "one\ntwo\n"] {
            assert_eq!(BrokerPassword::from_file_text(text), None, "{text:?}");
        }
    }

    #[test]
    fn the_refused_forms_say_why() {
        for (url, error) in [
            ("http://h:1", RedisUrlError::Scheme),
            ("h:6379", RedisUrlError::Scheme),
            ("redis://h", RedisUrlError::HostPort),
            ("redis://:6379", RedisUrlError::HostPort),
            ("redis://h:0", RedisUrlError::HostPort),
            ("redis://h:99999", RedisUrlError::HostPort),
            ("redis://h:x", RedisUrlError::HostPort),
            ("redis://h:1/x", RedisUrlError::Database),
            ("redis://user@h:1", RedisUrlError::Password),
            ("redis://user:@h:1", RedisUrlError::Password),
        ] {
            assert_eq!(RedisUrl::parse(url), Err(error), "{url}");
        }
    }
}
