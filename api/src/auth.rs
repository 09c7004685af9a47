//! Authorisation as an axum extractor: a handler names the roles it admits in its
//! signature (`_: Caller<Marketers>`), and a request without a known key is 401, with
//! a key of another role 403, before the handler runs.

use crate::AppState;
use crate::error::ApiError;
use crate::options::Role;
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use std::marker::PhantomData;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// A configured API key.
#[derive(Clone)]
pub struct ApiKey {
    key: String,
    pub role: Role,
    /// How ledger entries name the key: `key:<role>:<first 12 hex digits of the key's
    /// SHA-256>` (the key itself is never written anywhere).
    pub id: String,
}

impl ApiKey {
    pub fn new(key: String, role: Role) -> ApiKey {
        use sha2::Digest;
        let digest = hex::encode(sha2::Sha256::digest(key.as_bytes()));
        let id = format!("key:{}:{}", role.name(), &digest[..12]);
        ApiKey { key, role, id }
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey").field("id", &self.id).finish()
    }
}

/// The roles a route admits.
pub trait Roles: Send + Sync + 'static {
    const ALLOWED: &'static [Role];
}

macro_rules! roles {
    ($($(#[$m:meta])* $name:ident = [$($r:ident),+];)*) => {$(
        $(#[$m])*
        pub struct $name;
        impl Roles for $name {
            const ALLOWED: &'static [Role] = &[$(Role::$r),+];
        }
    )*};
}

roles! {
    /// Event ingest (`/v1/events/{table}`).
    Ingesters = [Ingest, Admin];
    /// Admin routes.
    Admins = [Admin];
    /// Minting tracked links.
    LinkMinters = [Ingest, Marketer, Admin];
    /// Metrics, experiments, the calculators, the suppression list.
    Readers = [Analyst, Marketer, Admin];
    /// `POST /v1/sql`.
    Analysts = [Analyst, Admin];
    /// Sends, consent, suppression refresh.
    Marketers = [Marketer, Admin];
}

/// The authenticated caller of a route that admits the roles `R`.
pub struct Caller<R> {
    pub role: Role,
    /// The key's id ([`ApiKey::id`]).
    pub key_id: String,
    _roles: PhantomData<R>,
}

/// Checks a bearer key (constant-time comparison against every key) and its role.
pub fn check(keys: &[ApiKey], bearer: Option<&str>, allowed: &[Role]) -> Result<ApiKey, ApiError> {
    let key = bearer
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(ApiError::unauthorized)?;
    let mut found = None;
    for k in keys {
        if bool::from(k.key.as_bytes().ct_eq(key.as_bytes())) {
            found = Some(k);
        }
    }
    let k = found.ok_or_else(ApiError::unauthorized)?;
    if allowed.contains(&k.role) {
        Ok(k.clone())
    } else {
        let names: Vec<&str> = allowed.iter().map(|r| r.name()).collect();
        Err(ApiError::forbidden(&names.join(" or ")))
    }
}

impl<R: Roles> FromRequestParts<Arc<AppState>> for Caller<R> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let k = check(&state.keys, bearer, R::ALLOWED)?;
        Ok(Caller {
            role: k.role,
            key_id: k.id,
            _roles: PhantomData,
        })
    }
}
