//! E.164 normalisation and the keyed phone hash of docs/metrics.md ("Identities and time").
//!
//! `phone_hash` = lowercase hex of HMAC-SHA256(key as UTF-8 bytes, E.164 text with its
//! leading `+`). A recipient known only by a WhatsApp business-scoped user id (BSUID,
//! `user_id` with an empty `wa_id`) hashes `bsuid:<user_id>` under the same key: an
//! E.164 input always starts with `+`, so the two kinds of identity never collide.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

/// Why a phone number was refused. The number itself is never echoed (it is personal
/// data and error messages end up in logs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("is empty")]
    Empty,
    #[error("contains characters other than digits, '+', spaces and - ( ) . /")]
    BadCharacter,
    #[error("must have 7 to 15 digits including the country code (E.164)")]
    BadLength,
    #[error("a country code cannot start with 0")]
    LeadingZero,
}

/// Normalises a phone number to E.164 (`+` and 7–15 digits).
///
/// Accepts `+5511987654321`, `00 55 11 98765-4321`, `(555) 625-1199` style formatting and
/// WhatsApp's `wa_id` (digits without `+`, which already carry the country code). A
/// number without `+` or `00` is taken to start with its country code, as `wa_id` does.
pub fn normalize_e164(raw: &str) -> Result<String, PhoneError> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(PhoneError::Empty);
    }
    let mut digits = String::with_capacity(16);
    let mut plus_seen = false;
    for (i, c) in s.chars().enumerate() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 => plus_seen = true,
            ' ' | '-' | '(' | ')' | '.' | '/' | '\u{a0}' => {}
            _ => return Err(PhoneError::BadCharacter),
        }
    }
    let digits = if !plus_seen {
        digits
            .strip_prefix("00")
            .map(str::to_owned)
            .unwrap_or(digits)
    } else {
        digits
    };
    if !(7..=15).contains(&digits.len()) {
        return Err(PhoneError::BadLength);
    }
    if digits.starts_with('0') {
        return Err(PhoneError::LeadingZero);
    }
    Ok(format!("+{digits}"))
}

/// Computes `phone_hash` values under the configured key.
#[derive(Clone)]
pub struct PhoneHasher {
    mac: Hmac<Sha256>,
}

impl fmt::Debug for PhoneHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PhoneHasher { key: <redacted> }")
    }
}

impl PhoneHasher {
    /// A hasher for `key` (its UTF-8 bytes are the HMAC key).
    pub fn new(key: &str) -> PhoneHasher {
        // HMAC accepts keys of any length; this cannot fail.
        let mac =
            Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
        PhoneHasher { mac }
    }

    fn hex_mac(&self, input: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(input);
        // `hex::encode` builds the string one `char` at a time; this runs per event.
        let mut buf = [0u8; 64];
        hex::encode_to_slice(mac.finalize().into_bytes(), &mut buf)
            .expect("64 hex digits for 32 bytes");
        std::str::from_utf8(&buf)
            .expect("hex digits are ASCII")
            .to_owned()
    }

    /// Hash of an already normalised E.164 number (`+` and digits).
    pub fn hash_e164(&self, e164: &str) -> String {
        self.hex_mac(e164.as_bytes())
    }

    /// Normalises then hashes.
    pub fn hash_phone(&self, raw: &str) -> Result<String, PhoneError> {
        normalize_e164(raw).map(|e| self.hash_e164(&e))
    }

    /// Hash of a WhatsApp business-scoped user id (`user_id`), prefixed `bsuid:`.
    pub fn hash_bsuid(&self, user_id: &str) -> String {
        let mut input = Vec::with_capacity(user_id.len() + 6);
        input.extend_from_slice(b"bsuid:");
        input.extend_from_slice(user_id.as_bytes());
        self.hex_mac(&input)
    }

    /// A keyed MAC over arbitrary bytes, for tokens derived from the same secret
    /// (e.g. click-link signing keys), domain-separated by `context`.
    pub fn derive_key(&self, context: &str) -> Vec<u8> {
        let mut mac = self.mac.clone();
        mac.update(b"chatlake-derive:");
        mac.update(context.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_common_forms() {
        assert_eq!(
            normalize_e164("+55 11 98765-4321").as_deref(),
            Ok("+5511987654321")
        );
        assert_eq!(
            normalize_e164("5511987654321").as_deref(),
            Ok("+5511987654321")
        );
        assert_eq!(
            normalize_e164("0044 20 7946 0958").as_deref(),
            Ok("+442079460958")
        );
        assert_eq!(
            normalize_e164("(555) 625-1199").as_deref(),
            Ok("+5556251199")
        );
    }

    #[test]
    fn refuses_bad_numbers() {
        assert_eq!(normalize_e164(""), Err(PhoneError::Empty));
        assert_eq!(
            normalize_e164("555-555-BILL"),
            Err(PhoneError::BadCharacter)
        );
        assert_eq!(normalize_e164("1+2345678"), Err(PhoneError::BadCharacter));
        assert_eq!(normalize_e164("+12345"), Err(PhoneError::BadLength));
        assert_eq!(
            normalize_e164("+1234567890123456"),
            Err(PhoneError::BadLength)
        );
        assert_eq!(normalize_e164("+0123456789"), Err(PhoneError::LeadingZero));
        assert_eq!(
            normalize_e164("<USER_PHONE_NUMBER>"),
            Err(PhoneError::BadCharacter)
        );
    }

    #[test]
    fn hash_is_hmac_sha256_of_e164_with_plus() {
        // Reference value: python3 -c "import hmac,hashlib;
        //   print(hmac.new(b'test-key', b'+5511987654321', hashlib.sha256).hexdigest())"
        let h = PhoneHasher::new("test-key");
        let expected = "295dd877d4b8832f21a27ed893f2cf1db9110868a5a0326d3435e356df455b5f";
        assert_eq!(h.hash_phone("55 11 98765 4321").as_deref(), Ok(expected));
        assert_eq!(h.hash_e164("+5511987654321"), expected);
    }

    #[test]
    fn bsuid_never_collides_with_a_phone() {
        let h = PhoneHasher::new("k");
        assert_ne!(h.hash_bsuid("US.123"), h.hash_e164("US.123"));
        assert_eq!(h.hash_bsuid("US.123"), h.hash_bsuid("US.123"));
    }
}
