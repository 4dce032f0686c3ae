//! The browser opener of an interactive login (RFC 8252 §7: an external
//! user-agent, never an embedded web view).

/// Opens `url` for an interactive login (RFC 8252 "external user-agent"):
/// with `$BROWSER` when set — a command line in which `%s` is replaced by
/// the URL, else the URL is appended — otherwise the desktop's default
/// browser. A `$BROWSER` child is reaped when it exits.
///
/// Errors: a one-line message (empty `$BROWSER`, command not startable,
/// no default browser).
pub fn open_in_browser(url: &str) -> Result<(), String> {
    if let Ok(cmd) = std::env::var("BROWSER") {
        let mut parts = cmd.split_whitespace();
        let prog = parts.next().ok_or("BROWSER is empty")?;
        let mut args: Vec<String> = parts.map(str::to_string).collect();
        if args.iter().any(|a| a.contains("%s")) {
            args = args.into_iter().map(|a| a.replace("%s", url)).collect();
        } else {
            args.push(url.to_string());
        }
        let mut child = std::process::Command::new(prog)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start BROWSER ({prog}): {e}"))?;
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        return Ok(());
    }
    webbrowser::open(url).map_err(|e| format!("cannot open a browser: {e}"))
}
