//! Tracked links: `GET /c/{token}` redirects to the token's target and records a click.
//!
//! A token is `base64url(claims JSON) "." base64url(HMAC-SHA256(key, first part))`, with
//! a key derived from the phone-hash secret. A forged or altered token fails the MAC, so
//! it can neither create a click nor redirect anywhere; targets are http(s) only, fixed
//! when the link is minted.

use crate::error::Error;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// What a link token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkClaims {
    /// The message (`wamid`) the link was sent in.
    #[serde(rename = "m")]
    pub message_id: String,
    /// Where it goes.
    #[serde(rename = "u")]
    pub url: String,
    /// The recipient's phone hash.
    #[serde(rename = "h")]
    pub phone_hash: String,
}

/// Mints and checks link tokens.
#[derive(Clone)]
pub struct LinkSigner {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkSigner { key: <redacted> }")
    }
}

/// Checks that a link target is an absolute http(s) URL.
pub fn valid_target(url: &str) -> bool {
    match url::Url::parse(url) {
        Ok(u) => matches!(u.scheme(), "http" | "https") && u.host().is_some(),
        Err(_) => false,
    }
}

impl LinkSigner {
    /// A signer with `key` (derive it from the hash secret).
    pub fn new(key: &[u8]) -> LinkSigner {
        LinkSigner {
            mac: Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length"),
        }
    }

    fn sign(&self, payload: &str) -> String {
        let mut m = self.mac.clone();
        m.update(payload.as_bytes());
        URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
    }

    /// A token for `claims`. The URL must be absolute http(s).
    pub fn mint(&self, claims: &LinkClaims) -> Result<String, Error> {
        if !valid_target(&claims.url) {
            return Err(Error::InvalidRecord {
                index: 0,
                field: "url".into(),
                message: "must be an absolute http(s) URL".into(),
            });
        }
        let json = serde_json::to_vec(claims).map_err(|e| Error::InvalidBody {
            message: e.to_string(),
        })?;
        let payload = URL_SAFE_NO_PAD.encode(json);
        let sig = self.sign(&payload);
        Ok(format!("{payload}.{sig}"))
    }

    /// The claims of a genuine token.
    pub fn verify(&self, token: &str) -> Result<LinkClaims, Error> {
        let (payload, sig) = token.split_once('.').ok_or(Error::BadLinkToken)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| Error::BadLinkToken)?;
        let mut m = self.mac.clone();
        m.update(payload.as_bytes());
        m.verify_slice(&sig).map_err(|_| Error::BadLinkToken)?;
        let json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| Error::BadLinkToken)?;
        let claims: LinkClaims = serde_json::from_slice(&json).map_err(|_| Error::BadLinkToken)?;
        if !valid_target(&claims.url) {
            return Err(Error::BadLinkToken);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(url: &str) -> LinkClaims {
        LinkClaims {
            message_id: "wamid.1".into(),
            url: url.into(),
            phone_hash: "ab".into(),
        }
    }

    #[test]
    fn genuine_tokens_verify_and_forgeries_do_not() {
        let s = LinkSigner::new(b"key");
        let t = s.mint(&claims("https://shop.example/p?x=1")).expect("mint");
        assert_eq!(
            s.verify(&t).expect("verify"),
            claims("https://shop.example/p?x=1")
        );
        // Same payload, other key.
        assert!(LinkSigner::new(b"other").verify(&t).is_err());
        // A payload pointing elsewhere with the old signature.
        let (_, sig) = t.split_once('.').expect("dot");
        let evil = URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&claims("https://evil.example")).expect("json"));
        assert!(s.verify(&format!("{evil}.{sig}")).is_err());
        assert!(s.verify("garbage").is_err());
        assert!(s.verify("").is_err());
    }

    #[test]
    fn only_http_targets() {
        let s = LinkSigner::new(b"key");
        assert!(s.mint(&claims("javascript:alert(1)")).is_err());
        assert!(s.mint(&claims("//evil.example")).is_err());
        assert!(s.mint(&claims("ftp://x.example")).is_err());
    }
}
