// Generates Tauri's context and the permissions of the app's own commands
// (`allow-<command>`), so capabilities/main-window.json can grant exactly
// the commands the UI uses and nothing else.
//
// The front end must be built first: `generate_context!` embeds ../ui/dist
// (`cd ui && npm ci && npm run build`).
const COMMANDS: &[&str] = &[
    "get_session",
    "login",
    "logout",
    "get_me",
    "list_entitlements",
    "list_requests",
    "create_request",
    "approve_request",
    "deny_request",
    "cancel_request",
    "drop_grant",
    "revoke_grant",
    "extend_grant",
    "review_request",
    "list_audit",
    "server_clock",
    "get_settings",
    "set_settings",
    "quit_choice",
    "take_deep_link",
];

fn main() {
    let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui/dist/index.html");
    println!("cargo:rerun-if-changed={}", dist.display());
    if !dist.exists() {
        println!(
            "cargo:warning=ui/dist is missing: run `cd ui && npm ci && npm run build` before building jit-desktop"
        );
    }
    tauri_build::try_build(
        tauri_build::Attributes::new()
            .app_manifest(tauri_build::AppManifest::new().commands(COMMANDS)),
    )
    .expect("tauri-build failed");
}
