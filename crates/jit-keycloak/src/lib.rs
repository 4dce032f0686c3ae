//! What jitd says to Keycloak: token validation and the Admin REST API.
//!
//! - [`validate`]: access-token validation for jitd — signature against the
//!   realm's JWKS, `iss`, `aud`, `exp`/`nbf`, `typ`.
//! - [`admin`]: the Admin REST API, as the `jit-backend` service account —
//!   user lookup, grant and revoke of realm roles, client roles and group
//!   membership, and ending a user's sessions.
//!
//! Not for: deciding *whether* something may be granted (that is `jit-core`),
//! remembering what was granted (that is `jit-server`'s store), or logging
//! a person in (that is `jit-login`, for the CLI and the app: jitd pulls in
//! no `oauth2` or browser opener).

pub mod admin;
pub mod observe;
pub mod validate;

pub use admin::{
    AdminClient, CurrentUser, KeycloakAdmin, KeycloakError, SessionsEnded, TargetStatus, UserParts,
};
pub use observe::{CallObserver, KeycloakCall};
pub use validate::{AuthError, TokenValidator, ValidatedToken};

/// A reqwest client for jitd's calls to Keycloak, with sane timeouts, rustls, and no redirects followed
/// (Keycloak's endpoints never need them; following one could leak a
/// token).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(20))
        .user_agent(concat!("jit-access/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("reqwest client builds")
}

/// `{base}/realms/{realm}` — the issuer Keycloak puts in `iss` when its
/// hostname is pinned (`--hostname`), which it must be: otherwise `iss`
/// follows whatever host the caller used.
pub fn issuer_url(base: &str, realm: &str) -> String {
    format!("{}/realms/{}", base.trim_end_matches('/'), realm)
}
