//! `jitd check-policy FILE [--config C]`: a policy file checked without
//! starting jitd. Without a config: parsed and validated (jit-core's
//! rules), then listed. With one: also asked of Keycloak — does each
//! target exist and may the service account grant it, and who holds it
//! already as a standing assignment (a warning: JIT would never remove
//! that).
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
    let found = against_keycloak(policy, &admin).await;
    for line in &found.lines {
        crate::stdout::print(&format!("{line}\n"));
    }
    if found.errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
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
pub async fn against_keycloak<A: KeycloakAdmin + ?Sized>(policy: &Policy, admin: &A) -> Findings {
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
            Ok(h) if h.is_empty() => f.lines.push(format!(
                "ok: '{}' ({}) — nobody holds it standing",
                e.id, e.kind
            )),
            Ok(h) => f.lines.push(format!(
                "warning: '{}' ({}) is held as a standing assignment by: {}",
                e.id,
                e.kind,
                h.join(", ")
            )),
            Err(err) => {
                f.lines.push(format!(
                    "error: entitlement '{}': cannot list holders: {err}",
                    e.id
                ));
                f.errors += 1;
            }
        }
    }
    f
}
