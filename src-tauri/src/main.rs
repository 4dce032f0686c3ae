// No console window on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,jit_desktop=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    jit_desktop::run_app(tauri::Builder::default())
        .run(tauri::generate_context!())
        .expect("error while running the JIT Access desktop app");
}
