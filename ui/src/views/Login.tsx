import type { SessionInfo } from "../api";

export function Login({
  session,
  busy,
  error,
  onLogin,
}: {
  session: SessionInfo;
  busy: boolean;
  error: string | null;
  onLogin: () => void;
}) {
  return (
    <section class="login" aria-labelledby="login-title">
      <img src="/icon.png" alt="" width={72} height={72} />
      <h1 id="login-title">JIT Access</h1>
      <p class="muted">Just-in-time access to Keycloak roles: ask, approve, and it ends on time.</p>
      <button type="button" class="btn primary big" data-testid="login-button" disabled={busy} onClick={onLogin}>
        {busy ? "Waiting for the browser…" : "Log in with Keycloak"}
      </button>
      {busy && <p class="muted">Finish signing in in your browser; this window updates by itself.</p>}
      {error && (
        <p class="flash err" role="alert">
          {error}
        </p>
      )}
      <p class="muted small">
        Server <span class="mono">{session.server_url || "…"}</span> ({session.backend})
      </p>
    </section>
  );
}
