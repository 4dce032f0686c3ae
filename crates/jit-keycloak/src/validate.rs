//! Access-token validation for the API (RFC 9068 style, Keycloak flavour).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::RwLock;

use jit_core::Principal;

/// Why a bearer token was refused. The text is safe to show the caller: it
/// never contains the token.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token signed with an unknown key")]
    UnknownKey,
    #[error("bad token signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience: the token is not meant for this API")]
    WrongAudience,
    #[error("not an access token (typ {0})")]
    WrongType(String),
    #[error("cannot fetch the realm's signing keys: {0}")]
    JwksUnavailable(String),
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    preferred_username: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    realm_access: Option<RealmAccess>,
    #[serde(default)]
    groups: Vec<String>,
    exp: i64,
    #[serde(default)]
    azp: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RealmAccess {
    #[serde(default)]
    roles: Vec<String>,
}

/// A token that passed every check.
#[derive(Debug, Clone)]
pub struct ValidatedToken {
    /// Subject, roles and groups (group names without a leading `/`).
    pub principal: Principal,
    /// Expiry, seconds since the Unix epoch (UTC).
    pub exp: i64,
    /// The client the token was issued to (`azp`).
    pub client: Option<String>,
}

struct Keys {
    by_kid: HashMap<String, (DecodingKey, Algorithm)>,
    fetched: Option<Instant>,
}

/// Validates Keycloak access tokens: RS256/ES256/PS256 signature against the
/// realm's JWKS (cached; refetched when an unknown `kid` appears, at most
/// every 10 s), `iss` equal to the pinned issuer, `aud` containing the API's
/// audience, `exp`/`nbf` with 5 s leeway, and `typ` = `Bearer` so ID and
/// refresh tokens are refused.
#[derive(Clone)]
pub struct TokenValidator {
    issuer: String,
    audience: String,
    jwks_uri: String,
    http: reqwest::Client,
    keys: Arc<RwLock<Keys>>,
}

impl TokenValidator {
    /// `issuer` is `{keycloak}/realms/{realm}`; the JWKS is read from
    /// `{issuer}/protocol/openid-connect/certs`.
    pub fn new(issuer: &str, audience: &str, http: reqwest::Client) -> TokenValidator {
        TokenValidator {
            issuer: issuer.trim_end_matches('/').to_string(),
            audience: audience.to_string(),
            jwks_uri: format!(
                "{}/protocol/openid-connect/certs",
                issuer.trim_end_matches('/')
            ),
            http,
            keys: Arc::new(RwLock::new(Keys {
                by_kid: HashMap::new(),
                fetched: None,
            })),
        }
    }

    /// The issuer this validator accepts.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    async fn refresh_keys(&self, force: bool) -> Result<(), AuthError> {
        let mut keys = self.keys.write().await;
        if let Some(t) = keys.fetched {
            if !force || t.elapsed() < Duration::from_secs(10) {
                return Ok(());
            }
        }
        let set: JwkSet = self
            .http
            .get(&self.jwks_uri)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| AuthError::JwksUnavailable(e.without_url().to_string()))?
            .json()
            .await
            .map_err(|e| AuthError::JwksUnavailable(e.to_string()))?;
        let mut by_kid = HashMap::new();
        for jwk in &set.keys {
            let (Some(kid), Ok(key)) = (jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk))
            else {
                continue;
            };
            // Keycloak publishes encryption keys too ("use": "enc"); skip them.
            if matches!(
                jwk.common.public_key_use,
                Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
            ) {
                continue;
            }
            let alg = match jwk.common.key_algorithm {
                Some(jsonwebtoken::jwk::KeyAlgorithm::ES256) => Algorithm::ES256,
                Some(jsonwebtoken::jwk::KeyAlgorithm::PS256) => Algorithm::PS256,
                Some(jsonwebtoken::jwk::KeyAlgorithm::RS256) | None => Algorithm::RS256,
                Some(_) => continue,
            };
            by_kid.insert(kid, (key, alg));
        }
        keys.by_kid = by_kid;
        keys.fetched = Some(Instant::now());
        Ok(())
    }

    async fn key_for(&self, kid: &str) -> Result<(DecodingKey, Algorithm), AuthError> {
        self.refresh_keys(false).await?;
        if let Some(k) = self.keys.read().await.by_kid.get(kid) {
            return Ok(k.clone());
        }
        self.refresh_keys(true).await?;
        self.keys
            .read()
            .await
            .by_kid
            .get(kid)
            .cloned()
            .ok_or(AuthError::UnknownKey)
    }

    /// Validates `token` (the bearer value, without `Bearer `).
    ///
    /// Errors: an [`AuthError`] saying which check failed.
    pub async fn validate(&self, token: &str) -> Result<ValidatedToken, AuthError> {
        let header = decode_header(token).map_err(|e| AuthError::Malformed(e.to_string()))?;
        let kid = header
            .kid
            .ok_or_else(|| AuthError::Malformed("no kid".into()))?;
        let (key, alg) = self.key_for(&kid).await?;
        if header.alg != alg {
            return Err(AuthError::BadSignature);
        }
        let mut v = Validation::new(alg);
        v.leeway = 5;
        v.validate_nbf = true;
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = decode::<Claims>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::ExpiredSignature => AuthError::Expired,
                K::ImmatureSignature => AuthError::NotYetValid,
                K::InvalidIssuer => AuthError::WrongIssuer,
                K::InvalidAudience => AuthError::WrongAudience,
                K::InvalidSignature => AuthError::BadSignature,
                K::MissingRequiredClaim(c) if c == "aud" => AuthError::WrongAudience,
                other => AuthError::Malformed(format!("{other:?}")),
            }
        })?;
        let c = data.claims;
        match c.typ.as_deref() {
            Some("Bearer") => {}
            other => return Err(AuthError::WrongType(other.unwrap_or("none").to_string())),
        }
        let roles: BTreeSet<String> = c
            .realm_access
            .map(|r| r.roles)
            .unwrap_or_default()
            .into_iter()
            .collect();
        let groups = c
            .groups
            .into_iter()
            .map(|g| g.trim_start_matches('/').to_string())
            .collect();
        Ok(ValidatedToken {
            principal: Principal {
                username: c.preferred_username.unwrap_or_else(|| c.sub.clone()),
                id: c.sub,
                roles,
                groups,
            },
            exp: c.exp,
            client: c.azp,
        })
    }
}
