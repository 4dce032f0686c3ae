import { useEffect, useState } from "preact/hooks";
import { api, errorText, events, type QuitRequest } from "../api";
import { formatTimestamp } from "../logic/time";

/** Asked when the app should quit while its embedded jitd holds grants:
 *  says what would happen and offers only the safe choices. */
export function QuitDialog({ quit, onClose }: { quit: QuitRequest; onClose: () => void }) {
  const [busy, setBusy] = useState(false);
  const [left, setLeft] = useState<number | null>(null);
  const [error, setError] = useState<string | null>(quit.error ?? null);
  const n = quit.active.length;

  useEffect(() => {
    const sub = events.onQuitProgress((l) => setLeft(l));
    return () => void sub.then((un) => un()).catch(() => undefined);
  }, []);

  async function background() {
    try {
      await api.quitChoice("background");
      onClose();
    } catch (e) {
      setError(errorText(e));
    }
  }

  async function endGrants() {
    setBusy(true);
    setError(null);
    try {
      await api.quitChoice("end_grants");
    } catch (e) {
      setError(errorText(e));
      setBusy(false);
    }
  }

  return (
    <div class="modal-backdrop">
      <div class="modal" role="alertdialog" aria-modal="true" aria-labelledby="quit-title" data-testid="quit-dialog">
        <h2 id="quit-title">Grants are still running here</h2>
        <p>
          This app runs jitd itself (embedded mode). If it stops now, nothing removes these roles in Keycloak when
          their time is up — not until the app runs again.
        </p>
        {n > 0 && (
          <ul class="held" data-testid="quit-grants">
            {quit.active.map((g) => (
              <li key={g.id}>
                <strong>{g.requester}</strong> → {g.entitlement}
                {g.expires_at && <span class="muted"> (until {formatTimestamp(g.expires_at)})</span>}
              </li>
            ))}
          </ul>
        )}
        {quit.removing > 0 && (
          <p class="muted">
            {quit.removing} ended grant(s) still wait for Keycloak to confirm their removal.
          </p>
        )}
        {busy && (
          <p role="status" data-testid="quit-progress">
            Ending the grants and waiting for Keycloak to confirm
            {left !== null ? ` (${left} left)` : ""}…
          </p>
        )}
        {error && (
          <p class="flash err" role="alert" data-testid="quit-error">
            {error}
          </p>
        )}
        <div class="buttons">
          <button type="button" class="btn primary" data-testid="quit-background" disabled={busy} onClick={background}>
            Keep running in the background
          </button>
          <button type="button" class="btn danger" data-testid="quit-end-grants" disabled={busy} onClick={endGrants}>
            End {n > 0 ? `${n} grant${n === 1 ? "" : "s"}` : "them"} now and quit
          </button>
          <button type="button" class="btn subtle" data-testid="quit-cancel" disabled={busy} onClick={onClose}>
            Cancel
          </button>
        </div>
        <p class="muted small">
          {quit.tray
            ? "In the background the app stays in the tray and keeps ending grants on time."
            : "In the background the window closes but the app keeps ending grants on time; start JIT Access again to bring it back."}
        </p>
      </div>
    </div>
  );
}
