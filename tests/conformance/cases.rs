//! The case type and the registry of every family.
//!
//! A case is an id (`family.group.n`), a one-line description and a builder that writes its script.
//! Cases are built lazily, when they run, so the large payloads of the limits family exist one at a time.

use crate::suite::families;
use crate::suite::script::Script;

pub type Builder = Box<dyn Fn(&mut Script) + Send + Sync>;

pub struct Case {
    pub id: String,
    pub family: u32,
    pub description: String,
    /// Timed cases (the limits family) run one at a time after the others, and their duration is printed.
    pub timed: bool,
    pub build: Builder,
}

/// Collects cases of one family and numbers them `family.group.n`.
pub struct Family {
    pub family: u32,
    group: u32,
    index: u32,
    timed: bool,
    pub cases: Vec<Case>,
}

impl Family {
    pub fn new(family: u32) -> Family {
        Family {
            family,
            group: 0,
            index: 0,
            timed: false,
            cases: Vec::new(),
        }
    }

    pub fn timed(mut self) -> Family {
        self.timed = true;
        self
    }

    /// Starts the next group (`family.group`).
    pub fn group(&mut self) {
        self.group += 1;
        self.index = 0;
    }

    pub fn case(
        &mut self,
        description: impl Into<String>,
        build: impl Fn(&mut Script) + Send + Sync + 'static,
    ) {
        self.index += 1;
        self.cases.push(Case {
            id: format!("{}.{}.{}", self.family, self.group, self.index),
            family: self.family,
            description: description.into(),
            timed: self.timed,
            build: Box::new(build),
        });
    }
}

pub fn all_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for family in [
        families::framing::cases(),
        families::ping_pong::cases(),
        families::reserved_bits::cases(),
        families::reserved_opcodes::cases(),
        families::fragmentation::cases(),
        families::utf8::cases(),
        families::close::cases(),
        families::limits::cases(),
        families::auto_fragmentation::cases(),
    ] {
        cases.extend(family.cases);
    }
    for family in families::deflate::cases() {
        cases.extend(family.cases);
    }
    cases
}
