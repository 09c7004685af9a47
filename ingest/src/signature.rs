//! Webhook signatures, checked in constant time over the raw body.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

fn mac(secret: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut m =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    m.update(body);
    m
}

/// Meta's `X-Hub-Signature-256: sha256=<hex>`.
pub fn verify_whatsapp(app_secret: &str, body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let mut sig = [0u8; 32];
    if hex::decode_to_slice(hex_sig, &mut sig).is_err() {
        return false;
    }
    mac(app_secret, body).verify_slice(&sig).is_ok()
}

/// Shopify's `X-Shopify-Hmac-Sha256: <base64>`.
pub fn verify_shopify(secret: &str, body: &[u8], header: Option<&str>) -> bool {
    let Some(sig) = header.and_then(|h| {
        base64::engine::general_purpose::STANDARD
            .decode(h.trim())
            .ok()
    }) else {
        return false;
    };
    mac(secret, body).verify_slice(&sig).is_ok()
}

/// Signs like Meta does (for tests, benchmarks and the Cloud API stand-in).
pub fn sign_whatsapp(app_secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac(app_secret, body).finalize().into_bytes())
    )
}

/// Signs like Shopify does.
pub fn sign_shopify(secret: &str, body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(mac(secret, body).finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_tampering() {
        let body = br#"{"a":"\u00e9"}"#;
        let s = sign_whatsapp("secret", body);
        assert!(verify_whatsapp("secret", body, Some(&s)));
        assert!(!verify_whatsapp("other", body, Some(&s)));
        assert!(!verify_whatsapp("secret", b"{\"a\":\"e\"}", Some(&s)));
        assert!(!verify_whatsapp("secret", body, Some("sha256=zz")));
        assert!(!verify_whatsapp("secret", body, Some(&s[..s.len() - 2])));
        assert!(!verify_whatsapp("secret", body, Some(&format!("{s}00"))));
        assert!(!verify_whatsapp("secret", body, None));
        let s = sign_shopify("k", body);
        assert!(verify_shopify("k", body, Some(&s)));
        assert!(!verify_shopify("k", b"x", Some(&s)));
        assert!(!verify_shopify("k", body, Some("not base64!")));
    }
}
