//! Access-token validation for the API (RFC 9068 style, Keycloak flavour).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::Mutex;

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
    /// `iss` is not the pinned issuer. `got` is the token's `iss` (cut to
    /// 200 characters); nothing else of the token is ever shown.
    #[error("wrong issuer: this API accepts tokens issued by {expected}{}", got.as_ref().map(|g| format!(", not by {g}")).unwrap_or_default())]
    WrongIssuer {
        expected: String,
        got: Option<String>,
    },
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
    /// Keycloak's service-account marker (user-session note of
    /// client-credentials sessions; `clientId` before Keycloak 25).
    #[serde(default, alias = "clientId")]
    client_id: Option<String>,
}

/// The client whose service account a token belongs to, or `None` for a
/// person. Keycloak gives client-credentials tokens two marks: the
/// `client_id` claim (a note Keycloak sets only on service-account
/// sessions, mapped by its default `service_account` client scope) and the
/// service account's username, `service-account-<client id>` (lowercase).
/// Either counts, and only when `azp` names that same client — a user
/// logging in through some client carries neither.
pub fn service_account_client(
    azp: Option<&str>,
    client_id_claim: Option<&str>,
    username: Option<&str>,
) -> Option<String> {
    let azp = azp.filter(|a| !a.is_empty())?;
    let by_claim = client_id_claim == Some(azp);
    let by_name = username == Some(format!("service-account-{}", azp.to_lowercase()).as_str());
    (by_claim || by_name).then(|| azp.to_string())
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
}

struct Keys {
    by_kid: HashMap<String, (DecodingKey, Algorithm)>,
    fetched: Option<Instant>,
}

/// State of the one JWKS fetch that may run at a time.
struct Refetch {
    /// When the last fetch started (success or not).
    last: Option<Instant>,
    /// Outcome of the last fetch, handed to everyone who waited for it.
    last_error: Option<AuthError>,
}

/// Least time between two JWKS fetches: an unknown `kid` triggers a fetch
/// at once unless one started less than this long ago; then it waits for
/// the next slot and shares that fetch with every other waiter, so random
/// `kid`s cannot make jitd fetch more than once a second.
pub const JWKS_MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Keys older than this are refetched in the background (a key removed from
/// the realm stops being accepted within this time).
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(300);

/// Validates Keycloak access tokens: RS256/ES256/PS256 signature against the
/// realm's JWKS, `iss` equal to the pinned issuer, `aud` containing the
/// API's audience, `exp`/`nbf` with 5 s leeway, and `typ` = `Bearer` so ID
/// and refresh tokens are refused.
///
/// The JWKS is cached. A token with an unknown `kid` (a key rotation) makes
/// the validator fetch the JWKS again at once — at most one fetch per
/// [`JWKS_MIN_INTERVAL`], shared by all concurrent callers — and keys older
/// than [`JWKS_MAX_AGE`] are refreshed in the background.
#[derive(Clone)]
pub struct TokenValidator {
    issuer: String,
    audience: String,
    jwks_uri: String,
    http: reqwest::Client,
    keys: Arc<std::sync::RwLock<Keys>>,
    refetch: Arc<Mutex<Refetch>>,
    /// Fetches started so far (bumped when one finishes).
    attempts: Arc<AtomicU64>,
    /// A background refresh of old keys is under way.
    refreshing: Arc<AtomicBool>,
    /// Told about every JWKS fetch (metrics).
    observer: crate::observe::Observer,
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
            keys: Arc::new(std::sync::RwLock::new(Keys {
                by_kid: HashMap::new(),
                fetched: None,
            })),
            refetch: Arc::new(Mutex::new(Refetch {
                last: None,
                last_error: None,
            })),
            attempts: Arc::new(AtomicU64::new(0)),
            refreshing: Arc::new(AtomicBool::new(false)),
            observer: None,
        }
    }

    /// Reports every JWKS fetch to `observer` (metrics).
    pub fn with_observer(mut self, observer: Arc<dyn crate::CallObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The issuer this validator accepts.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// How many times the JWKS has been fetched (or tried) so far.
    pub fn jwks_fetches(&self) -> u64 {
        self.attempts.load(Ordering::SeqCst)
    }

    fn lookup(&self, kid: &str) -> (Option<(DecodingKey, Algorithm)>, Option<Instant>) {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        (keys.by_kid.get(kid).cloned(), keys.fetched)
    }

    async fn fetch_jwks(&self) -> Result<HashMap<String, (DecodingKey, Algorithm)>, AuthError> {
        let started = Instant::now();
        let fetched = self.http.get(&self.jwks_uri).send().await;
        if let Some(o) = &self.observer {
            o.observe(&crate::KeycloakCall {
                operation: "jwks".into(),
                elapsed: started.elapsed(),
                error_kind: match &fetched {
                    Err(_) => Some("unreachable"),
                    Ok(r) if !r.status().is_success() => {
                        Some(crate::observe::status_kind(r.status().as_u16()))
                    }
                    Ok(_) => None,
                },
            });
        }
        let set: JwkSet = fetched
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
        Ok(by_kid)
    }

    /// Makes sure a JWKS fetch has *started* after the caller read
    /// `attempts == seen`: joins the one that ran meanwhile, or runs one —
    /// waiting first until [`JWKS_MIN_INTERVAL`] has passed since the last.
    async fn refetch_since(&self, seen: u64) -> Result<(), AuthError> {
        let mut r = self.refetch.lock().await;
        if self.attempts.load(Ordering::SeqCst) != seen {
            // Someone fetched after we looked: share their outcome.
            return match &r.last_error {
                Some(e) => Err(e.clone()),
                None => Ok(()),
            };
        }
        if let Some(last) = r.last {
            let wait = JWKS_MIN_INTERVAL.saturating_sub(last.elapsed());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        r.last = Some(Instant::now());
        let result = self.fetch_jwks().await;
        r.last_error = result.as_ref().err().cloned();
        if let Ok(by_kid) = result {
            let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
            keys.by_kid = by_kid;
            keys.fetched = Some(Instant::now());
        }
        self.attempts.fetch_add(1, Ordering::SeqCst);
        match &r.last_error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    async fn key_for(&self, kid: &str) -> Result<(DecodingKey, Algorithm), AuthError> {
        let seen = self.attempts.load(Ordering::SeqCst);
        let (found, fetched) = self.lookup(kid);
        if let Some(k) = found {
            if fetched.is_some_and(|t| t.elapsed() > JWKS_MAX_AGE)
                && !self.refreshing.swap(true, Ordering::SeqCst)
            {
                // Old keys: refresh in the background; this token goes on.
                let me = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = me.refetch_since(seen).await {
                        tracing::warn!(error = %e, "background JWKS refresh failed; keeping the cached keys");
                    }
                    me.refreshing.store(false, Ordering::SeqCst);
                });
            }
            return Ok(k);
        }
        // Unknown kid (or no keys yet): a rotation, or a forged token.
        self.refetch_since(seen).await?;
        self.lookup(kid).0.ok_or(AuthError::UnknownKey)
    }

    /// The `iss` claim of a token whose signature is not checked yet, to
    /// refuse another issuer's token before looking for its key.
    fn unverified_issuer(token: &str) -> Result<Option<String>, AuthError> {
        #[derive(Deserialize)]
        struct Iss {
            iss: Option<String>,
        }
        let mut v = Validation::new(Algorithm::RS256);
        v.insecure_disable_signature_validation();
        v.validate_exp = false;
        v.validate_aud = false;
        v.required_spec_claims.clear();
        decode::<Iss>(token, &DecodingKey::from_secret(&[]), &v)
            .map(|d| d.claims.iss)
            .map_err(|_| AuthError::Malformed("the payload is not a JWT claims set".into()))
    }

    fn wrong_issuer(&self, got: Option<&str>) -> AuthError {
        // Only `iss` of the token is echoed, cut and without control characters.
        let got = got.map(|s| {
            s.chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect::<String>()
        });
        AuthError::WrongIssuer {
            expected: self.issuer.clone(),
            got,
        }
    }

    /// Validates `token` (the bearer value, without `Bearer `).
    ///
    /// Errors: an [`AuthError`] saying which check failed.
    pub async fn validate(&self, token: &str) -> Result<ValidatedToken, AuthError> {
        // jsonwebtoken's own text here is a bare kind name ("InvalidToken").
        let header = decode_header(token).map_err(|_| {
            AuthError::Malformed(
                "not a JWT (expected header.payload.signature, each base64url)".into(),
            )
        })?;
        let kid = header
            .kid
            .ok_or_else(|| AuthError::Malformed("no kid".into()))?;
        match Self::unverified_issuer(token)? {
            Some(iss) if iss.trim_end_matches('/') == self.issuer => {}
            other => return Err(self.wrong_issuer(other.as_deref())),
        }
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
                K::InvalidIssuer => self.wrong_issuer(None),
                K::InvalidAudience => AuthError::WrongAudience,
                K::InvalidSignature => AuthError::BadSignature,
                K::MissingRequiredClaim(c) if c == "aud" => AuthError::WrongAudience,
                K::MissingRequiredClaim(c) => {
                    AuthError::Malformed(format!("the claim {c} is missing"))
                }
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
        let client_id = service_account_client(
            c.azp.as_deref(),
            c.client_id.as_deref(),
            c.preferred_username.as_deref(),
        );
        Ok(ValidatedToken {
            principal: Principal {
                client_id,
                username: c.preferred_username.unwrap_or_else(|| c.sub.clone()),
                id: c.sub,
                roles,
                groups,
            },
            exp: c.exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::service_account_client as sa;
    use super::{AuthError, TokenValidator};

    /// A bearer value that is not a JWT is said in words, not as
    /// jsonwebtoken's kind name (`InvalidToken`). No key is fetched.
    #[tokio::test]
    async fn a_token_that_is_not_a_jwt_is_said_in_words() {
        let v = TokenValidator::new(
            "http://127.0.0.1:9/realms/r",
            "jit-api",
            reqwest::Client::new(),
        );
        for bad in ["garbage", "a.b", "x.y.z"] {
            let Err(e) = v.validate(bad).await else {
                panic!("{bad:?} was accepted");
            };
            assert!(matches!(e, AuthError::Malformed(_)), "{e:?}");
            let text = e.to_string();
            assert!(text.contains("not a JWT"), "{text}");
            assert!(!text.contains("InvalidToken"), "{text}");
        }
    }

    #[test]
    fn service_accounts_are_told_apart_from_people() {
        // Keycloak 26 client-credentials token: both marks.
        assert_eq!(
            sa(
                Some("ci-deploy"),
                Some("ci-deploy"),
                Some("service-account-ci-deploy")
            ),
            Some("ci-deploy".into())
        );
        // Either mark alone, with azp naming the client.
        assert_eq!(
            sa(Some("Build"), Some("Build"), Some("x")),
            Some("Build".into())
        );
        assert_eq!(
            sa(Some("Build"), None, Some("service-account-build")),
            Some("Build".into())
        );
        // People: a login through a client carries neither.
        assert_eq!(sa(Some("jit-cli"), None, Some("alice")), None);
        // A user named like a service account of another client.
        assert_eq!(
            sa(Some("jit-cli"), None, Some("service-account-ci-deploy")),
            None
        );
        // A client_id claim that does not match azp.
        assert_eq!(sa(Some("jit-cli"), Some("ci-deploy"), Some("bob")), None);
        assert_eq!(
            sa(None, Some("ci-deploy"), Some("service-account-ci-deploy")),
            None
        );
    }
}
