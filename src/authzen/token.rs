//! Sealed page tokens. A search's `next_token` says where the next call resumes; a
//! caller who could write one could make a call fetch any number of candidates at
//! once, so every token carries an HMAC-SHA256 tag under the service's key and is
//! opened only when the tag verifies (compared in constant time). What the token says
//! is bounded again by the search after it opens (see `search::start`).
//!
//! The key comes from `--page-token-key-file`, so that every replica of a fleet and a
//! restarted process accept each other's tokens; without one each process draws a
//! random key, and its tokens die with it.

use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of the tag, and the shortest key accepted (RFC 2104 asks for a key at least
/// as long as the hash output).
const TAG_BYTES: usize = 32;
const MIN_KEY_BYTES: usize = 32;

/// Separates this use of the key from any other the operator might give it.
const DOMAIN: &[u8] = b"portcullis authzen page token v1\n";

/// Why the page token key cannot be set up; the service does not start.
#[derive(Debug, thiserror::Error)]
pub enum PageTokenKeyError {
    #[error("`--page-token-key-file` `{path}`: {message}")]
    Unreadable { path: String, message: String },
    #[error("`--page-token-key-file` `{path}`: the key must be at least {MIN_KEY_BYTES} bytes, found {found}")]
    TooShort { path: String, found: usize },
    #[error("no random page token key could be drawn: {0}")]
    NoRandomness(String),
}

/// Where the key came from, for the start-up line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    File,
    /// Drawn at start: tokens do not survive a restart and one replica refuses
    /// another's.
    Random,
}

/// The key page tokens are sealed and opened with.
#[derive(Clone)]
pub struct PageTokenKey {
    /// Keyed once; each seal or open works on a clone.
    mac: HmacSha256,
    pub origin: KeyOrigin,
}

impl std::fmt::Debug for PageTokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        f.debug_struct("PageTokenKey")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl PageTokenKey {
    /// The key in a file; surrounding whitespace (a trailing newline) is not part of it.
    pub fn from_file(path: &Path) -> Result<Self, PageTokenKeyError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| PageTokenKeyError::Unreadable {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        let key = bytes.trim_ascii();
        if key.len() < MIN_KEY_BYTES {
            return Err(PageTokenKeyError::TooShort {
                path: shown,
                found: key.len(),
            });
        }
        Self::new(key, KeyOrigin::File).map_err(|message| PageTokenKeyError::Unreadable {
            path: shown,
            message,
        })
    }

    /// A key drawn from the operating system's random source for this process alone.
    pub fn random() -> Result<Self, PageTokenKeyError> {
        let mut key = [0u8; MIN_KEY_BYTES];
        getrandom::getrandom(&mut key)
            .map_err(|e| PageTokenKeyError::NoRandomness(e.to_string()))?;
        Self::new(&key, KeyOrigin::Random).map_err(PageTokenKeyError::NoRandomness)
    }

    fn new(key: &[u8], origin: KeyOrigin) -> Result<Self, String> {
        let mac = HmacSha256::new_from_slice(key).map_err(|e| e.to_string())?;
        Ok(Self { mac, origin })
    }

    fn tag(&self, payload: &[u8]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(DOMAIN);
        mac.update(payload);
        mac
    }

    /// `payload` and its tag, as `<hex payload>.<hex tag>`.
    pub fn seal(&self, payload: &[u8]) -> String {
        let tag = self.tag(payload).finalize().into_bytes();
        format!("{}.{}", hex(payload), hex(&tag))
    }

    /// The payload of a token this key sealed; `None` for anything else: a token that
    /// is malformed, truncated, altered or sealed under another key.
    pub fn open(&self, token: &str) -> Option<Vec<u8>> {
        let (payload, tag) = token.split_once('.')?;
        let tag = unhex(tag)?;
        if tag.len() != TAG_BYTES {
            return None;
        }
        let payload = unhex(payload)?;
        // `verify_slice` compares in constant time.
        self.tag(&payload).verify_slice(&tag).ok()?;
        Some(payload)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks_exact(2)
        .map(|pair| {
            let digits = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(digits, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> PageTokenKey {
        PageTokenKey::new(&[byte; 32], KeyOrigin::File).unwrap()
    }

    #[test]
    fn only_an_unaltered_token_of_the_same_key_opens() {
        let sealed = key(1).seal(br#"{"s":3}"#);
        assert_eq!(key(1).open(&sealed), Some(br#"{"s":3}"#.to_vec()));
        assert_eq!(key(2).open(&sealed), None, "another key");
        assert_eq!(key(1).open(&sealed[..sealed.len() - 2]), None, "truncated");
        let (payload, tag) = sealed.split_once('.').unwrap();
        let altered = format!("{}.{tag}", hex(br#"{"s":4}"#));
        assert_eq!(key(1).open(&altered), None, "altered payload");
        assert_eq!(key(1).open(payload), None, "no tag");
        assert_eq!(key(1).open("zz.zz"), None, "not hex");
        assert_eq!(key(1).open(""), None);
    }

    #[test]
    fn a_key_file_must_hold_a_long_enough_key() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "0123456789\n").unwrap();
        let e = PageTokenKey::from_file(&short).unwrap_err().to_string();
        assert!(e.contains("at least 32 bytes, found 10"), "{e}");
        let good = dir.path().join("good");
        std::fs::write(&good, format!("{}\n", "k".repeat(32))).unwrap();
        let from_file = PageTokenKey::from_file(&good).unwrap();
        // The trailing newline is not part of the key.
        let same = PageTokenKey::new("k".repeat(32).as_bytes(), KeyOrigin::File).unwrap();
        assert!(same.open(&from_file.seal(b"x")).is_some());
        let missing = PageTokenKey::from_file(&dir.path().join("absent"));
        assert!(missing.unwrap_err().to_string().contains("absent"));
    }

    #[test]
    fn random_keys_differ() {
        let a = PageTokenKey::random().unwrap();
        let b = PageTokenKey::random().unwrap();
        assert_eq!(a.origin, KeyOrigin::Random);
        assert!(b.open(&a.seal(b"x")).is_none());
    }
}
