//! Kernel command line: whitespace-separated `key` or `key=value` words.
//!
//! Parsed once at boot into a fixed table; any subsystem asks for its key.
//! Unknown keys are kept (and listed at boot) rather than rejected, so one
//! command line works across kernel versions, as on Linux.
use spin::Once;

const MAX_WORDS: usize = 64;

pub struct Cmdline {
    words: [(&'static str, Option<&'static str>); MAX_WORDS],
    n: usize,
    raw: &'static str,
}

static CMDLINE: Once<Cmdline> = Once::new();

/// Parse `raw`.  Words beyond `MAX_WORDS` are ignored with a warning.
pub fn init(raw: &'static str) {
    CMDLINE.call_once(|| {
        let mut c = Cmdline {
            words: [("", None); MAX_WORDS],
            n: 0,
            raw,
        };
        for w in raw.split_ascii_whitespace() {
            if c.n == MAX_WORDS {
                crate::warn!("cmdline: more than {} words, ignoring '{}'", MAX_WORDS, w);
                continue;
            }
            c.words[c.n] = match w.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (w, None),
            };
            c.n += 1;
        }
        c
    });
}

fn get() -> Option<&'static Cmdline> {
    CMDLINE.get()
}

/// The raw command line.
pub fn raw() -> &'static str {
    get().map(|c| c.raw).unwrap_or("")
}

/// True if `key` appears, with or without a value.
pub fn has(key: &str) -> bool {
    get().is_some_and(|c| c.words[..c.n].iter().any(|(k, _)| *k == key))
}

/// The value of the last `key=value` word (later words override earlier ones).
pub fn value(key: &str) -> Option<&'static str> {
    get()
        .and_then(|c| {
            c.words[..c.n]
                .iter()
                .rev()
                .find(|(k, v)| *k == key && v.is_some())
        })
        .and_then(|(_, v)| *v)
}
