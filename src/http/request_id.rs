//! Request ids for requests that carry no `X-Request-Id`: generated without a system
//! call per request, unique across requests, restarts and replicas.
//!
//! An id is UUID-shaped (RFC 9562 version 8, the free-form layout: 36 characters,
//! `xxxxxxxx-xxxx-8xxx-yxxx-xxxxxxxxxxxx`), so logs and tools that expect a UUID keep
//! working. Its first 64 bits (less the version nibble) are a random prefix drawn
//! once when the process starts; its last 64 bits (less the two variant bits) count
//! the requests of this process. Two processes share a prefix with a chance of about
//! 2^-60; within one process the counter never repeats (2^62 ids).

use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderValue;

/// Hands out request ids: one per service.
#[derive(Debug)]
pub struct RequestIds {
    /// The text of the upper 64 bits of every id (the version nibble set) and the
    /// dash after them: `xxxxxxxx-xxxx-8xxx-`, written once.
    prefix: [u8; 19],
    next: AtomicU64,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl RequestIds {
    /// A generator with a fresh random prefix. Should the system's randomness be
    /// unavailable, the prefix comes from the clock and the process id instead.
    pub fn new() -> Self {
        let mut bytes = [0u8; 8];
        let random = match getrandom::getrandom(&mut bytes) {
            Ok(()) => u64::from_le_bytes(bytes),
            Err(_) => fallback_prefix(),
        };
        Self::with_prefix(random)
    }

    /// A generator with the given prefix (its version nibble is overwritten).
    pub fn with_prefix(random: u64) -> Self {
        let mut prefix = *b"00000000-0000-0000-";
        write_hex(&mut prefix, (random & !0xF000) | 0x8000);
        Self {
            prefix,
            next: AtomicU64::new(0),
        }
    }

    /// The next id, as a header value.
    pub fn next_id(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let low = (n & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000;
        // The prefix's text, then the low half as `yxxx-xxxxxxxxxxxx`.
        let mut text = *b"00000000-0000-0000-0000-000000000000";
        let (head, tail) = text.split_at_mut(19);
        head.copy_from_slice(&self.prefix);
        write_hex(tail, low);
        // 36 lowercase hex digits and dashes: always a valid header value.
        HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

/// Writes the 16 hex digits of `value`, most significant first, over the slots of
/// `out` that are not dashes (a UUID half: `xxxxxxxx-xxxx-xxxx-` or
/// `xxxx-xxxxxxxxxxxx`).
fn write_hex(out: &mut [u8], value: u64) {
    let mut shift = 64u32;
    for slot in out.iter_mut().filter(|b| **b != b'-') {
        shift = shift.saturating_sub(4);
        let nibble = ((value >> shift) & 0xF) as usize;
        *slot = HEX.get(nibble).copied().unwrap_or(b'0');
    }
}

/// A prefix for when the system's randomness cannot be read: the clock's nanoseconds
/// mixed with the process id, so restarts still differ.
fn fallback_prefix() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mixed = nanos ^ (u64::from(std::process::id()) << 32);
    // SplitMix64's finaliser, so close inputs give unrelated prefixes.
    let z = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_version_8_uuids_and_count_up() {
        let ids = RequestIds::with_prefix(0x0123_4567_89ab_cdef);
        let first = ids.next_id();
        let second = ids.next_id();
        assert_eq!(
            first.to_str().ok(),
            Some("01234567-89ab-8def-8000-000000000000")
        );
        assert_eq!(
            second.to_str().ok(),
            Some("01234567-89ab-8def-8000-000000000001")
        );
        ids.next.store(0xc123_4567_89ab_cdef, Ordering::Relaxed);
        assert_eq!(
            ids.next_id().to_str().ok(),
            Some("01234567-89ab-8def-8123-456789abcdef"),
            "the counter's two top bits give way to the variant"
        );
    }

    #[test]
    fn two_generators_draw_different_prefixes() {
        let a = RequestIds::new().next_id();
        let b = RequestIds::new().next_id();
        assert_ne!(
            a, b,
            "a restart must not repeat the ids of the process before"
        );
    }
}
