//! Negotiating permessage-deflate: the `Sec-WebSocket-Extensions` grammar (RFC 6455 section 9.1, with the
//! list and quoted-string rules of RFC 9110 section 5.6), the extension's four parameters (RFC 7692 section
//! 7.1), and the server's choice among the client's offers.
//!
//! It accepts only what the server can honour exactly: an offer with an unknown, duplicated or invalid
//! parameter is declined and the next offer tried; `server_max_window_bits=8` is declined (zlib's raw deflate
//! cannot compress with a 256-byte window, and using 512 bytes would break the client's inflater); and
//! `client_max_window_bits` is answered only when the offer has it (RFC 7692 section 7.1.2.2). A header that
//! does not follow the grammar declines the extension as a whole, never the handshake. Nothing here panics on
//! any input or allocates: the parser borrows the header values, and only `write_value` appends to a `Vec`.

use std::fmt;

/// The extension's registered name (RFC 7692 section 7).
pub const EXTENSION_NAME: &str = "permessage-deflate";

/// Smallest window (in bits) zlib's raw deflate compresses with; an offer limiting the server to less is
/// declined.
const MIN_COMPRESS_WINDOW_BITS: u8 = 9;
/// RFC 7692 section 7.1.2: window sizes are 2^8 to 2^15 bytes.
const MIN_WINDOW_BITS: u8 = 8;
const MAX_WINDOW_BITS: u8 = 15;
/// zlib's compression levels.
const MAX_LEVEL: u8 = 9;

/// Which permessage-deflate the server offers to agree to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeflateMode {
    /// Decline every offer.
    Off,
    /// The default: no context takeover in either direction (`server_no_context_takeover;
    /// client_no_context_takeover`). Each worker keeps one compressor and one inflater, reset per message, so
    /// an idle connection owns nothing.
    #[default]
    NoContext,
    /// Server-to-client context takeover (better ratios for similar messages) with a window bounded by
    /// `DeflateConfig::context_window_bits`, paid per connection (a compressor made at its first compressed
    /// send): the server keeps its context unless the client asked for `server_no_context_takeover`. The
    /// answer always adds `client_no_context_takeover` (RFC 7692 section 7.1.1.2 lets a server add it), so
    /// inflating stays per worker as in `NoContext`.
    Context,
}

/// The server's compression settings. Defaults: `NoContext`, threshold 128 bytes, level 6, windows of 15
/// bits (per worker) and 11 bits (per connection, `Context` mode only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateConfig {
    /// Which agreement to reach, if any.
    pub mode: DeflateMode,
    /// Messages shorter than this many bytes are sent uncompressed (the codec's rule, recorded here).
    pub threshold: usize,
    /// zlib compression level, 0 (store) to 9 (best).
    pub level: u8,
    /// Largest window (9..=15 bits) of a compressor without context takeover (one per worker).
    pub max_window_bits: u8,
    /// `Context` mode: the window (9..=15 bits) of each connection's compressor.
    pub context_window_bits: u8,
    /// `Context` mode: zlib's memory level (1..=9) of each connection's compressor (its hash table and
    /// block buffer: 1 keeps a compressor at 15.4 KB with an 11-bit window).
    pub context_mem_level: u8,
}

impl DeflateConfig {
    pub const DEFAULT_THRESHOLD: usize = 128;
    pub const DEFAULT_LEVEL: u8 = 6;
    pub const DEFAULT_MAX_WINDOW_BITS: u8 = 15;
    pub const DEFAULT_CONTEXT_WINDOW_BITS: u8 = 11;
    pub const DEFAULT_CONTEXT_MEM_LEVEL: u8 = 1;

    /// Checks every field's range.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.level > MAX_LEVEL {
            return Err(ConfigError::Level(self.level));
        }
        if !(1..=9).contains(&self.context_mem_level) {
            return Err(ConfigError::MemLevel(self.context_mem_level));
        }
        for bits in [self.max_window_bits, self.context_window_bits] {
            if !(MIN_COMPRESS_WINDOW_BITS..=MAX_WINDOW_BITS).contains(&bits) {
                return Err(ConfigError::WindowBits(bits));
            }
        }
        Ok(())
    }

    /// The answer to one parsed offer: the agreement, or why it is declined. Out-of-range settings are
    /// clamped (`check` reports them).
    pub fn accept(&self, offer: &DeflateParams) -> Result<Agreed, Decline> {
        let clamp = |bits: u8| bits.clamp(MIN_COMPRESS_WINDOW_BITS, MAX_WINDOW_BITS);
        if offer.server_max_window_bits == Some(MIN_WINDOW_BITS) {
            return Err(Decline::ServerWindowTooSmall);
        }
        let offered_server_bits = offer.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS);
        let (server_no_context_takeover, client_max_window_bits) = match self.mode {
            DeflateMode::Off => return Err(Decline::Off),
            DeflateMode::NoContext => (true, None),
            DeflateMode::Context => (offer.server_no_context_takeover, None),
        };
        let own_bits = if server_no_context_takeover {
            clamp(self.max_window_bits)
        } else {
            clamp(self.context_window_bits)
        };
        let compress_window_bits = own_bits.min(offered_server_bits);
        let response = DeflateParams {
            server_no_context_takeover,
            client_no_context_takeover: client_max_window_bits.is_none(),
            server_max_window_bits: offer.server_max_window_bits.map(|_| compress_window_bits),
            client_max_window_bits: client_max_window_bits
                .map_or(ClientMaxWindowBits::Absent, ClientMaxWindowBits::Bits),
        };
        Ok(Agreed {
            offer: *offer,
            response,
            compress_window_bits,
            inflate_window_bits: client_max_window_bits
                .map_or(MAX_WINDOW_BITS, |bits| bits.max(MIN_COMPRESS_WINDOW_BITS)),
        })
    }
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            mode: DeflateMode::default(),
            threshold: Self::DEFAULT_THRESHOLD,
            level: Self::DEFAULT_LEVEL,
            max_window_bits: Self::DEFAULT_MAX_WINDOW_BITS,
            context_window_bits: Self::DEFAULT_CONTEXT_WINDOW_BITS,
            context_mem_level: Self::DEFAULT_CONTEXT_MEM_LEVEL,
        }
    }
}

/// A `DeflateConfig` field out of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigError {
    /// The level is above 9.
    Level(u8),
    /// A window is outside 9..=15 bits.
    WindowBits(u8),
    /// The memory level is outside 1..=9.
    MemLevel(u8),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Level(level) => write!(f, "deflate level {level} is not in 0..=9"),
            ConfigError::WindowBits(bits) => {
                write!(f, "deflate window of {bits} bits is not in 9..=15")
            }
            ConfigError::MemLevel(level) => {
                write!(f, "deflate memory level {level} is not in 1..=9")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Why one permessage-deflate offer is declined (the next one is tried).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decline {
    /// The server has compression off.
    Off,
    /// A parameter RFC 7692 does not define.
    UnknownParameter,
    /// A parameter given twice (RFC 7692 section 7: the offer must be declined).
    DuplicateParameter,
    /// A value where none is allowed, none where one is required, or not a window size of 8 to 15 bits
    /// written without leading zeros.
    InvalidValue,
    /// `server_max_window_bits=8`: zlib cannot compress with a window below 9 bits.
    ServerWindowTooSmall,
}

/// `client_max_window_bits` in an offer: absent, present without a value (the client can limit its window),
/// or with one (the client will use at most that many bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientMaxWindowBits {
    #[default]
    Absent,
    NoValue,
    Bits(u8),
}

/// The permessage-deflate parameters of one offer or answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeflateParams {
    pub server_no_context_takeover: bool,
    pub client_no_context_takeover: bool,
    pub server_max_window_bits: Option<u8>,
    pub client_max_window_bits: ClientMaxWindowBits,
}

impl DeflateParams {
    /// Reads the parameters of one permessage-deflate element (the caller checked its name).
    pub fn from_extension(extension: &Extension<'_>) -> Result<DeflateParams, Decline> {
        let mut params = DeflateParams::default();
        let (mut server_ncc, mut client_ncc, mut server_bits) = (false, false, false);
        for param in extension.params() {
            let name = param.name();
            let seen = if name.eq_ignore_ascii_case(b"server_no_context_takeover") {
                params.server_no_context_takeover = no_value(&param)?;
                std::mem::replace(&mut server_ncc, true)
            } else if name.eq_ignore_ascii_case(b"client_no_context_takeover") {
                params.client_no_context_takeover = no_value(&param)?;
                std::mem::replace(&mut client_ncc, true)
            } else if name.eq_ignore_ascii_case(b"server_max_window_bits") {
                params.server_max_window_bits =
                    Some(window_bits(&param).ok_or(Decline::InvalidValue)?);
                std::mem::replace(&mut server_bits, true)
            } else if name.eq_ignore_ascii_case(b"client_max_window_bits") {
                let seen = params.client_max_window_bits != ClientMaxWindowBits::Absent;
                params.client_max_window_bits = if param.value().is_none() {
                    ClientMaxWindowBits::NoValue
                } else {
                    ClientMaxWindowBits::Bits(window_bits(&param).ok_or(Decline::InvalidValue)?)
                };
                seen
            } else {
                return Err(Decline::UnknownParameter);
            };
            if seen {
                return Err(Decline::DuplicateParameter);
            }
        }
        Ok(params)
    }

    /// Appends the element `permessage-deflate[; param[=value]]...`, parameters in a fixed order.
    pub fn write_value(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(EXTENSION_NAME.as_bytes());
        if self.server_no_context_takeover {
            out.extend_from_slice(b"; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            out.extend_from_slice(b"; client_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            out.extend_from_slice(b"; server_max_window_bits=");
            write_decimal(out, bits);
        }
        match self.client_max_window_bits {
            ClientMaxWindowBits::Absent => {}
            ClientMaxWindowBits::NoValue => out.extend_from_slice(b"; client_max_window_bits"),
            ClientMaxWindowBits::Bits(bits) => {
                out.extend_from_slice(b"; client_max_window_bits=");
                write_decimal(out, bits);
            }
        }
    }
}

fn no_value(param: &Param<'_>) -> Result<bool, Decline> {
    match param.value() {
        None => Ok(true),
        Some(_) => Err(Decline::InvalidValue),
    }
}

/// A window size: 8 to 15 in decimal, no leading zero (RFC 7692 section 7.1.2), quoted or not.
fn window_bits(param: &Param<'_>) -> Option<u8> {
    let mut digits = param.value()?;
    let first = digits.next()?;
    let value = match (first, digits.next(), digits.next()) {
        (b'8'..=b'9', None, _) => first - b'0',
        (b'1', Some(second @ b'0'..=b'5'), None) => 10 + second - b'0',
        _ => return None,
    };
    Some(value)
}

fn write_decimal(out: &mut Vec<u8>, value: u8) {
    if value >= 10 {
        out.push(b'0' + value / 10);
    }
    out.push(b'0' + value % 10);
}

/// What the server agreed to: the parameters both sides use, and the answer to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    offer: DeflateParams,
    response: DeflateParams,
    compress_window_bits: u8,
    inflate_window_bits: u8,
}

impl Agreed {
    /// The parameters of the offer that was accepted.
    pub fn offer(&self) -> &DeflateParams {
        &self.offer
    }

    /// The parameters of the answer (what `write_value` writes).
    pub fn response(&self) -> &DeflateParams {
        &self.response
    }

    /// Whether the server's compressor keeps its context between messages (it resets per message if not).
    pub fn server_context_takeover(&self) -> bool {
        !self.response.server_no_context_takeover
    }

    /// Whether the client may keep its context, so the server's inflater must keep its window between
    /// messages (it resets per message if not).
    pub fn client_context_takeover(&self) -> bool {
        !self.response.client_no_context_takeover
    }

    /// The window (bits) of the server's compressor: never above what the client allowed.
    pub fn compress_window_bits(&self) -> u8 {
        self.compress_window_bits
    }

    /// The window (bits) the server's inflater is created with: at least the client's, never below 9.
    pub fn inflate_window_bits(&self) -> u8 {
        self.inflate_window_bits
    }

    /// Appends the `Sec-WebSocket-Extensions` response value.
    pub fn write_value(&self, out: &mut Vec<u8>) {
        self.response.write_value(out);
    }
}

/// Chooses the first permessage-deflate offer in `values` (the `Sec-WebSocket-Extensions` header values, in
/// order) that `config` can honour, or `None` to decline the extension: compression off, no acceptable offer,
/// or a header anywhere in `values` that does not follow the grammar. Other extensions are ignored.
pub fn negotiate<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
    config: &DeflateConfig,
) -> Option<Agreed> {
    if config.mode == DeflateMode::Off {
        return None;
    }
    let mut chosen = None;
    for element in offers(values) {
        // Every header is read to its end: a malformed one declines the extension.
        let extension = element.ok()?;
        if chosen.is_some() || !extension.is(EXTENSION_NAME) {
            continue;
        }
        if let Ok(params) = DeflateParams::from_extension(&extension) {
            chosen = config.accept(&params).ok();
        }
    }
    chosen
}

/// A `Sec-WebSocket-Extensions` header that does not follow RFC 6455 section 9.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// One element of an extension list: a name and its parameters, borrowed from the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extension<'a> {
    name: &'a [u8],
    /// `*( OWS ";" OWS param )`, already checked.
    params: &'a [u8],
}

impl<'a> Extension<'a> {
    pub fn name(&self) -> &'a [u8] {
        self.name
    }

    /// ASCII case-insensitive name comparison.
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }

    pub fn params(&self) -> impl Iterator<Item = Param<'a>> {
        let mut cursor = Cursor::new(self.params);
        std::iter::from_fn(move || {
            cursor.skip_ows();
            if !cursor.eat(b';') {
                return None;
            }
            cursor.skip_ows();
            cursor.param().ok()
        })
    }
}

/// One `name[=value]` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param<'a> {
    name: &'a [u8],
    /// The value as written: a token, or the inside of a quoted-string (escapes kept).
    value: Option<(&'a [u8], bool)>,
}

impl<'a> Param<'a> {
    pub fn name(&self) -> &'a [u8] {
        self.name
    }

    /// The value's bytes, with a quoted-string's quotes and escapes removed; `None` without a value.
    pub fn value(&self) -> Option<impl Iterator<Item = u8> + 'a> {
        let (raw, quoted) = self.value?;
        let mut bytes = raw.iter().copied();
        Some(std::iter::from_fn(move || match bytes.next()? {
            b'\\' if quoted => bytes.next(),
            byte => Some(byte),
        }))
    }
}

/// Every element of every header value, in order; after the first `Err` the iterator ends.
pub fn offers<'a, I: IntoIterator<Item = &'a [u8]>>(values: I) -> Offers<'a, I::IntoIter> {
    Offers {
        values: values.into_iter(),
        cursor: Cursor::new(b""),
        failed: false,
    }
}

/// The iterator of `offers`.
#[derive(Debug)]
pub struct Offers<'a, I> {
    values: I,
    cursor: Cursor<'a>,
    failed: bool,
}

impl<'a, I: Iterator<Item = &'a [u8]>> Iterator for Offers<'a, I> {
    type Item = Result<Extension<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            self.cursor.skip_ows();
            match self.cursor.peek() {
                // List elements may be empty (RFC 9110 section 5.6.1).
                Some(b',') => self.cursor.pos += 1,
                Some(_) => break,
                None => self.cursor = Cursor::new(self.values.next()?),
            }
        }
        let element = self.cursor.element();
        self.failed = element.is_err();
        Some(element)
    }
}

/// A position in one header value.
#[derive(Debug)]
struct Cursor<'a> {
    text: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a [u8]) -> Self {
        Cursor { text, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        self.pos += usize::from(found);
        found
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn token(&mut self) -> Result<&'a [u8], Malformed> {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        match &self.text[start..self.pos] {
            [] => Err(Malformed),
            token => Ok(token),
        }
    }

    /// After the opening quote: the inside of a quoted-string, escapes kept.
    fn quoted(&mut self) -> Result<&'a [u8], Malformed> {
        let start = self.pos;
        loop {
            match self.peek().ok_or(Malformed)? {
                b'"' => break,
                b'\\' => match self.text.get(self.pos + 1) {
                    Some(&escaped) if escaped == b'\t' || escaped >= b' ' && escaped != 0x7f => {
                        self.pos += 2
                    }
                    _ => return Err(Malformed),
                },
                byte if is_qdtext(byte) => self.pos += 1,
                _ => return Err(Malformed),
            }
        }
        let inside = &self.text[start..self.pos];
        self.pos += 1;
        Ok(inside)
    }

    /// `token [ OWS "=" OWS ( token / quoted-string ) ]`
    fn param(&mut self) -> Result<Param<'a>, Malformed> {
        let name = self.token()?;
        let after_name = self.pos;
        self.skip_ows();
        if !self.eat(b'=') {
            self.pos = after_name;
            return Ok(Param { name, value: None });
        }
        self.skip_ows();
        let value = if self.eat(b'"') {
            (self.quoted()?, true)
        } else {
            (self.token()?, false)
        };
        Ok(Param {
            name,
            value: Some(value),
        })
    }

    /// `token *( OWS ";" OWS param )`, ending before a `,` or at the end of the value.
    fn element(&mut self) -> Result<Extension<'a>, Malformed> {
        let name = self.token()?;
        let params_start = self.pos;
        loop {
            self.skip_ows();
            match self.peek() {
                None | Some(b',') => break,
                Some(b';') => {
                    self.pos += 1;
                    self.skip_ows();
                    self.param()?;
                }
                Some(_) => return Err(Malformed),
            }
        }
        Ok(Extension {
            name,
            params: &self.text[params_start..self.pos],
        })
    }
}

/// RFC 9110 section 5.6.2.
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// RFC 9110 section 5.6.4: HTAB, SP, visible ASCII but `"` and `\`, obs-text.
fn is_qdtext(byte: u8) -> bool {
    byte == b'\t'
        || byte == b' '
        || (0x21..=0x7e).contains(&byte) && byte != b'"' && byte != b'\\'
        || byte >= 0x80
}
