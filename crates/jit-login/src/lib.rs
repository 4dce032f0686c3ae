//! Client-side login of JIT Access, shared by the `jit` CLI and the
//! desktop app, so both log in and refresh the same way.
//!
//! - [`oidc`]: discovery, Authorization Code + PKCE with a loopback
//!   redirect (RFC 7636, RFC 8252), device login (RFC 8628), refresh and
//!   logout against Keycloak.
//! - [`browser`]: opening the login URL (`$BROWSER`, else the desktop's
//!   default browser).
//! - [`refresh`]: [`RefreshingTokens`], which hands out the access token,
//!   refreshes it near its expiry and saves the new tokens through a
//!   [`TokenStore`] (a file for the CLI, the OS keyring for the app); each
//!   wraps it in its `jit_client::TokenSource`.
//! - [`browser_login`]: the one browser login sequence (start, open, wait).
//!
//! Not for: validating tokens or Admin REST calls (that is `jit-keycloak`,
//! used by jitd, which therefore pulls in neither `oauth2` nor
//! `webbrowser`).

pub mod browser;
pub mod oidc;
pub mod refresh;

pub use browser::open_in_browser;
pub use oidc::{Discovery, LoginSession, OidcClient, OidcError, TokenSet};
pub use refresh::{Login, RefreshError, RefreshingTokens, TokenStore};

/// A reqwest client for OIDC calls: rustls, connect timeout 5 s, whole
/// call 20 s, and no redirects followed (OIDC endpoints never need them;
/// following one could leak a token).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(20))
        .user_agent(concat!("jit-access/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("reqwest client builds")
}

/// The browser login of the CLI and the app: binds the loopback listener,
/// opens Keycloak's login page with [`open_in_browser`], tells `on_url` the
/// URL and, when no browser could be started, why (the login then keeps
/// waiting for the URL to be opened by hand), and waits up to `timeout`
/// for the browser to come back.
///
/// Errors: as [`OidcClient::start_login`] and [`OidcClient::finish_login`].
pub async fn browser_login(
    oidc: &OidcClient,
    timeout: std::time::Duration,
    on_url: impl FnOnce(&str, Option<String>),
) -> Result<TokenSet, OidcError> {
    let session = oidc.start_login().await?;
    let url = session.authorize_url.to_string();
    let no_browser = open_in_browser(&url).err();
    on_url(&url, no_browser);
    oidc.finish_login(session, timeout).await
}
