//! `kc-form-login URL` — a test "browser" for the `jit` CLI and the desktop
//! app: set `BROWSER=kc-form-login` (see `jit_testkit::kc_form_login_path`).
//!
//! Opens the Keycloak authorize URL, signs in through the real login page as
//! `JIT_TEST_USERNAME` / `JIT_TEST_PASSWORD`, then sends a GET to the final
//! loopback redirect (code + state) so that the caller's own listener
//! receives it. Exit 0 on success; otherwise one line on stderr and exit 1.
//! Never prints passwords, codes or tokens. Test use only.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let line = format!("{e:#}").replace('\n', " ");
            eprintln!("kc-form-login: {line}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    let url = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow!("usage: kc-form-login AUTHORIZE_URL"))?;
    let username =
        std::env::var("JIT_TEST_USERNAME").map_err(|_| anyhow!("JIT_TEST_USERNAME is not set"))?;
    let password =
        std::env::var("JIT_TEST_PASSWORD").map_err(|_| anyhow!("JIT_TEST_PASSWORD is not set"))?;

    let callback = jit_testkit::browser_login(&url, &username, &password).await?;
    let mut shown = callback.clone();
    shown.set_query(None);

    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut attempt = 0;
    let resp = loop {
        attempt += 1;
        match client.get(callback.clone()).send().await {
            Ok(r) => break r,
            Err(e) if e.is_connect() && attempt < 10 => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                return Err(e.without_url())
                    .with_context(|| format!("cannot deliver the redirect to {shown}"));
            }
        }
    };
    let status = resp.status();
    if !(status.is_success() || status.is_redirection()) {
        bail!("the loopback listener at {shown} answered HTTP {status}");
    }
    Ok(())
}
