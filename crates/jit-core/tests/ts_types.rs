//! The UI's TypeScript wire types (`ui/src/generated/api-types.ts`) are
//! generated from the Rust types of `jit_core::api` with ts-rs. This test
//! fails when the committed file differs from what the Rust types give;
//! `UPDATE_TS_TYPES=1 cargo test -p jit-core --test ts_types` rewrites it.

use jit_core::api::{
    AuditRecord, CreateRequestBody, DecisionBody, EntitlementView, EventData, EventKind,
    ExtendBody, GrantState, MeView, Problem, RequestView, RequestWarning, ServerConfigView,
};
use jit_core::{
    AccessRequest, AppliedExtension, Decision, EntitlementKind, RequestKind, Status, Vote,
};
use ts_rs::{Config, TS};

fn generated() -> String {
    // i64 seconds and sequence numbers fit in a JS number (< 2^53).
    let cfg = Config::new().with_large_int("number");
    let mut out = String::from(
        "// Generated from the Rust types of crates/jit-core (ts-rs) — do not edit.\n\
         // Regenerate: UPDATE_TS_TYPES=1 cargo test -p jit-core --test ts_types\n",
    );
    let decls = [
        Status::decl(&cfg),
        Decision::decl(&cfg),
        Vote::decl(&cfg),
        RequestKind::decl(&cfg),
        EntitlementKind::decl(&cfg),
        AppliedExtension::decl(&cfg),
        GrantState::decl(&cfg),
        event_kind_decl(),
        AccessRequest::decl(&cfg),
        RequestWarning::decl(&cfg),
        RequestView::decl(&cfg),
        EntitlementView::decl(&cfg),
        CreateRequestBody::decl(&cfg),
        DecisionBody::decl(&cfg),
        ExtendBody::decl(&cfg),
        AuditRecord::decl(&cfg),
        EventData::decl(&cfg),
        MeView::decl(&cfg),
        ServerConfigView::decl(&cfg),
        Problem::decl(&cfg),
    ];
    for d in decls {
        out.push('\n');
        out.push_str("export ");
        out.push_str(&d);
        out.push('\n');
    }
    out
}

/// `EventKind` as TypeScript: `KnownEventKind` (its known names, for
/// tables keyed by kind) and `EventKind`, those or any other string (a
/// newer jitd's kind, `EventKind::Other` in Rust; `(string & {})` keeps
/// the names for completion while any string is allowed).
/// Written here because the Rust enum serializes by hand (as its name).
fn event_kind_decl() -> String {
    let names: Vec<String> = EventKind::ALL
        .iter()
        .map(|k| format!("\"{}\"", k.as_str()))
        .collect();
    format!(
        "type KnownEventKind = {};\n\n// jit_core::api::EventKind: a known name, or a newer server's.\nexport type EventKind = KnownEventKind | (string & {{}});",
        names.join(" | ")
    )
}

#[test]
fn ui_types_match_the_rust_types() {
    let dir = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    let path = std::path::Path::new(&dir).join("../../ui/src/generated/api-types.ts");
    let want = generated();
    if std::env::var_os("UPDATE_TS_TYPES").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &want).unwrap();
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{} is out of date with the Rust types (or edited by hand); regenerate it with \
         `UPDATE_TS_TYPES=1 cargo test -p jit-core --test ts_types`",
        path.display()
    );
}
