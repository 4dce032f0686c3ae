//! `jitd check-policy FILE [--config C]`: a policy file checked without
//! starting jitd. Without a config: parsed and validated (jit-core's
//! rules), then listed. With one: also asked of Keycloak — does each
//! target exist and may the service account grant it, and who holds it
//! already as a standing assignment (a warning: JIT would never remove
//! that); and, with jitd's database, which open requests and grants jitd
//! ends when it loads this policy (entitlements gone from it, or whose
//! target changed: a warning per entitlement).
//!
//! Exit codes: 0 valid (and grantable), 1 a target cannot be granted or
//! checked, 2 the file (or the config) is invalid.

use std::path::Path;
use std::process::ExitCode;

use jit_core::Policy;
use jit_keycloak::{KeycloakAdmin, TargetStatus};

/// Runs the check of `file` (with `config`: against its Keycloak) and
/// prints the result; the exit code as documented above.
pub fn run(file: &Path, config: Option<&Path>) -> ExitCode {
    let policy = match crate::load_policy(file) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("jitd: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(config) = config else {
        crate::stdout::print(&summary(file, &policy));
        return ExitCode::SUCCESS;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(with_config(&policy, config))
}

/// The offline listing: one line per entitlement (id, target, longest
/// duration, approvals required).
pub fn summary(file: &Path, p: &Policy) -> String {
    let mut out = format!(
        "{}: OK, {} entitlements\n",
        file.display(),
        p.entitlements.len()
    );
    for e in p.entitlements.values() {
        out.push_str(&format!(
            "  {:<20} {:<40} max {:>6}  approvals {}\n",
            e.id,
            e.kind.to_string(),
            jit_core::format_duration(e.max_duration),
            e.approvals_required
        ));
    }
    out
}

/// Reads `config` and its backend secret (exit 2 when it cannot), then
/// checks `policy` against that Keycloak.
async fn with_config(policy: &Policy, config: &Path) -> ExitCode {
    let cfg = match crate::Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("jitd: {e}");
            return ExitCode::from(2);
        }
    };
    let secret = match cfg.backend_secret() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("jitd: {e}");
            return ExitCode::from(2);
        }
    };
    let admin = jit_keycloak::AdminClient::new(
        &cfg.keycloak.url,
        &cfg.keycloak.realm,
        &cfg.keycloak.backend_client_id,
        &secret,
        jit_keycloak::http_client(),
    );
    let store = match existing_store(&cfg).await {
        Ok(Some(s)) => Some(s),
        Ok(None) => {
            crate::stdout::print(&format!(
                "note: jitd's database {} does not exist (no jitd has run with this config): holders through active JIT grants cannot be told from standing ones\n",
                cfg.database_display()
            ));
            None
        }
        Err(e) => {
            crate::stdout::print(&format!(
                "note: jitd's database cannot be read ({e}); holders through active JIT grants cannot be told from standing ones\n"
            ));
            None
        }
    };
    let found = against_keycloak(policy, &admin, store.as_ref()).await;
    for line in &found.lines {
        crate::stdout::print(&format!("{line}\n"));
    }
    if found.errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// jitd's store named by `cfg`, to tell holders through active JIT grants
/// from standing ones; `None` when it is a SQLite file that does not exist
/// (no jitd has run with this config: no grants), so the check never
/// creates one.
async fn existing_store(cfg: &crate::Config) -> anyhow::Result<Option<crate::store::Store>> {
    let spec = cfg.database.to_string_lossy();
    if !crate::store::postgres::is_url(&spec) && !cfg.database.exists() {
        return Ok(None);
    }
    // Read only: never migrates, creates or changes jitd's database.
    let spec = spec.to_string();
    let shown = cfg.database_display();
    tokio::task::spawn_blocking(move || crate::store::Store::open_spec_as_is(&spec))
        .await?
        .map(Some)
        .map_err(|e| anyhow::anyhow!("database {shown}: {e}"))
}

/// What [`against_keycloak`] found: the lines to print (`policy OK: …`,
/// then per entitlement `ok:`, `warning:` or `error:`) and how many are
/// errors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// One line each, in entitlement id order.
    pub lines: Vec<String>,
    /// How many entitlements cannot be granted or checked.
    pub errors: usize,
}

/// Asks `admin` about each entitlement of `policy`: whether its target can
/// be granted (`TargetStatus`), and who holds it as a standing assignment.
/// A holder whose assignment is owned by an active JIT grant in `store`
/// (`owns_assignment = true`: jitd removes it when the grant ends) is not
/// standing; such holders are named apart. Without a store holders cannot
/// be told apart: they are named as held (a warning), not as standing.
pub async fn against_keycloak<A: KeycloakAdmin + ?Sized>(
    policy: &Policy,
    admin: &A,
    store: Option<&crate::store::Store>,
) -> Findings {
    let mut f = Findings::default();
    f.lines.push(format!(
        "policy OK: {} entitlements",
        policy.entitlements.len()
    ));
    for e in policy.entitlements.values() {
        match admin.target_status(&e.kind).await {
            Ok(TargetStatus::Available) => {}
            Ok(st) => {
                f.lines.push(format!(
                    "error: entitlement '{}' ({}) cannot be granted: {}",
                    e.id,
                    e.kind,
                    st.unavailable_reason().unwrap_or("unavailable")
                ));
                f.errors += 1;
                continue;
            }
            // Keycloak refuses jitd's own login: one line for all of
            // them, saying what to fix.
            Err(err @ jit_keycloak::KeycloakError::Login(_)) => {
                f.lines.push(format!(
                    "error: no entitlement can be checked: Keycloak refuses jitd's service account (check [keycloak] backend_client_id and its secret): {err}"
                ));
                f.errors += policy.entitlements.len();
                return f;
            }
            Err(err) => {
                f.lines.push(format!(
                    "error: entitlement '{}' ({}): cannot check it in Keycloak: {err}",
                    e.id, e.kind
                ));
                f.errors += 1;
                continue;
            }
        }
        match admin.holders(&e.kind).await {
            Ok(h) => {
                let (owned, note) = match store {
                    None => (
                        Vec::new(),
                        " (standing or through JIT grants: no jitd database was read)".to_string(),
                    ),
                    Some(s) => match s.jit_owned_holders(&e.kind).await {
                        Ok(o) => (o, String::new()),
                        Err(err) => (
                            Vec::new(),
                            format!(
                                " (JIT grants not told apart: cannot read jitd's database: {err})"
                            ),
                        ),
                    },
                };
                let (mut jit, mut standing): (Vec<String>, Vec<String>) = h
                    .into_iter()
                    .partition(|u| owned.iter().any(|o| o.eq_ignore_ascii_case(u)));
                jit.sort();
                standing.sort();
                let through = if jit.is_empty() {
                    String::new()
                } else {
                    format!("; held through active JIT grants by: {}", jit.join(", "))
                };
                f.lines.push(if standing.is_empty() && store.is_none() {
                    format!("ok: '{}' ({}) — nobody holds it", e.id, e.kind)
                } else if standing.is_empty() {
                    format!(
                        "ok: '{}' ({}) — nobody holds it standing{through}{note}",
                        e.id, e.kind
                    )
                } else if store.is_none() {
                    format!(
                        "warning: '{}' ({}) is held by: {}{note}",
                        e.id,
                        e.kind,
                        standing.join(", ")
                    )
                } else {
                    format!(
                        "warning: '{}' ({}) is held as a standing assignment by: {}{through}{note}",
                        e.id,
                        e.kind,
                        standing.join(", ")
                    )
                });
            }
            Err(err) => {
                f.lines.push(format!(
                    "error: entitlement '{}': cannot list holders: {err}",
                    e.id
                ));
                f.errors += 1;
            }
        }
    }
    if let Some(s) = store {
        match s.open_requests().await {
            Ok(open) => f.lines.extend(ended_by(policy, &open)),
            Err(e) => f.lines.push(format!(
                "note: cannot read jitd's open requests ({e}): what this policy would end is not known"
            )),
        }
    }
    f
}

/// Warnings, one per entitlement id in entitlement id order, for the open
/// requests that jitd ends when it loads `policy`
/// ([`crate::scheduler::outside_policy`]: the entitlement is gone from it
/// or names another target): active grants are revoked and their roles
/// removed, requests not active yet are cancelled.
pub fn ended_by(policy: &Policy, open: &[crate::store::Stored]) -> Vec<String> {
    let mut by: std::collections::BTreeMap<&str, (usize, usize, bool)> = Default::default();
    for s in open {
        let r = &s.request;
        if !crate::scheduler::outside_policy(policy, r) {
            continue;
        }
        let e = by.entry(r.entitlement_id()).or_insert((
            0,
            0,
            policy.entitlement(r.entitlement_id()).is_some(),
        ));
        if r.status() == jit_core::Status::Active {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
    }
    by.into_iter()
        .map(|(id, (active, other, kept))| {
            let why = if kept {
                "its Keycloak target changed"
            } else {
                "it is no longer in this policy"
            };
            format!(
                "warning: loading this policy ends what is open of '{id}' ({why}): {active} active grant(s) revoked and their roles removed, {other} request(s) not active yet cancelled"
            )
        })
        .collect()
}
