import { useState } from "preact/hooks";
import type { LoginUrl, SessionInfo } from "../api";

/** Copies `text`: the async clipboard API where the webview allows it, else
 *  the selected text of a hidden field (older WebKitGTK). */
async function copy(text: string): Promise<boolean> {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const t = document.createElement("textarea");
    t.value = text;
    t.setAttribute("readonly", "");
    t.style.position = "fixed";
    t.style.opacity = "0";
    document.body.appendChild(t);
    t.select();
    const ok = document.execCommand("copy");
    t.remove();
    return ok;
  }
}

export function Login({
  session,
  busy,
  error,
  loginUrl,
  onLogin,
}: {
  session: SessionInfo;
  busy: boolean;
  error: string | null;
  loginUrl: LoginUrl | null;
  onLogin: () => void;
}) {
  const [copied, setCopied] = useState<boolean | null>(null);
  return (
    <section class="login" aria-labelledby="login-title">
      <img src="/icon.png" alt="" width={72} height={72} />
      <h1 id="login-title">JIT Access</h1>
      <p class="muted">Just-in-time access to Keycloak roles: ask, approve, and it ends on time.</p>
      {session.lost_reason && !busy && (
        <p class="flash warn" role="status" data-testid="login-lost-reason">
          {session.lost_reason}
        </p>
      )}
      <button type="button" class="btn primary big" data-testid="login-button" disabled={busy} onClick={onLogin}>
        {busy ? "Waiting for the login…" : "Log in with Keycloak"}
      </button>
      {busy && !loginUrl?.browser_error && (
        <p class="muted">Finish signing in in your browser; this window updates by itself.</p>
      )}
      {busy && loginUrl && (
        <div class={`login-url${loginUrl.browser_error ? " no-browser" : ""}`} data-testid="login-url-box">
          <p>
            {loginUrl.browser_error
              ? "No browser could be opened. Open this address in a browser on this computer to log in (the app is waiting; it gives up after 5 minutes):"
              : "If no browser window appeared, open this address on this computer:"}
          </p>
          <div class="copy-row">
            <input
              class="mono"
              readOnly
              data-testid="login-url"
              value={loginUrl.url}
              aria-label="Login address"
              onFocus={(e) => (e.target as HTMLInputElement).select()}
            />
            <button
              type="button"
              class="btn"
              data-testid="copy-login-url"
              onClick={() => void copy(loginUrl.url).then(setCopied)}
            >
              Copy
            </button>
          </div>
          {copied !== null && (
            <p class="muted small" role="status">
              {copied ? "Copied." : "Could not copy: select the address and copy it by hand."}
            </p>
          )}
          {loginUrl.browser_error && <p class="muted small">Why: {loginUrl.browser_error}</p>}
        </div>
      )}
      {error && (
        <p class="flash err" role="alert">
          {error}
        </p>
      )}
      <p class="muted small">
        Server <span class="mono" data-testid="server-url">{session.server_url || "…"}</span> ({session.backend})
      </p>
    </section>
  );
}
