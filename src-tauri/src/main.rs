// No console window on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,jit_desktop=info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: a log written to a file stays plain.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // The UI is small and static: JavaScriptCore's JIT tiers buy nothing
    // here but cost the web process memory (and attack surface). Set before
    // WebKit starts its web process, which inherits it; an explicit
    // JSC_useJIT in the environment wins.
    if std::env::var_os("JSC_useJIT").is_none() {
        std::env::set_var("JSC_useJIT", "false");
    }
    // Skia paints this small UI on the CPU: without a GPU (Xvfb, VMs,
    // remote desktops) the GL path runs on Mesa's llvmpipe and costs the web
    // process ~25 MiB of private memory (docs/measurements.md). Same
    // precedence as above.
    if std::env::var_os("WEBKIT_SKIA_ENABLE_CPU_RENDERING").is_none() {
        std::env::set_var("WEBKIT_SKIA_ENABLE_CPU_RENDERING", "1");
    }
    // Fewer malloc arenas and freed heap pages given back (src/memory.rs).
    jit_desktop::memory::lean_malloc();
    // One app per profile: a second launch hands its arguments (a deep
    // link) to the running one and ends.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let jit_desktop::instance::Claim::HandedOver =
        jit_desktop::instance::claim(&jit_desktop::instance::profile_key(), &args)
    {
        eprintln!("jit-desktop: the app of this profile is already running; handed over to it");
        return;
    }
    let context = tauri::generate_context!();
    // A build without the bundled UI (`--no-default-features`, for Vite's
    // hot reload) loads the dev server: never show a blank window when it
    // is not running.
    #[cfg(dev)]
    if let Some(url) = context.config().build.dev_url.clone() {
        if let Err(why) = jit_desktop::dev_server_reachable(&url) {
            eprintln!(
                "jit-desktop: this build loads the UI from the dev server {url}, which is not running ({why}).\n\
                 Start it with `cd ui && npm run dev`, or build the app with its UI bundled: `cargo build -p jit-desktop` (see src-tauri/README.md)."
            );
            std::process::exit(2);
        }
    }
    jit_desktop::run_app(tauri::Builder::default())
        .run(context)
        .expect("error while running the JIT Access desktop app");
}
