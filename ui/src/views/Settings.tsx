import { useState } from "preact/hooks";
import { api, errorText, type SessionInfo, type Settings as S } from "../api";
import { ErrorBox, Loading, ViewHeader } from "../components";
import { useLoad } from "../hooks";

export function Settings({ session }: { session: SessionInfo }) {
  const loaded = useLoad(() => api.getSettings(), []);
  const [saved, setSaved] = useState<S | null>(null);
  const [error, setError] = useState<string | null>(null);
  const settings = saved ?? loaded.data;

  async function change(patch: Partial<S>) {
    if (!settings) return;
    setError(null);
    try {
      setSaved(await api.setSettings({ ...settings, ...patch }));
    } catch (e) {
      setError(errorText(e));
    }
  }

  return (
    <section data-testid="settings-view">
      <ViewHeader title="Settings" />
      {loaded.loading && !settings && <Loading what="settings" />}
      {loaded.error && !settings && <ErrorBox error={loaded.error} retry={loaded.reload} />}
      {settings && (
        <fieldset class="form">
          <legend>Notifications</legend>
          <div class="field check">
            <input
              id="set-mute"
              type="checkbox"
              data-testid="mute-non-urgent"
              checked={settings.mute_non_urgent}
              onChange={(e) => change({ mute_non_urgent: (e.target as HTMLInputElement).checked })}
            />
            <label for="set-mute">Only notify me of urgent and break-glass requests</label>
          </div>
          <div class="field check">
            <input
              id="set-pause"
              type="checkbox"
              data-testid="pause-notifications"
              checked={settings.notifications_paused}
              onChange={(e) => change({ notifications_paused: (e.target as HTMLInputElement).checked })}
            />
            <label for="set-pause">Pause all notifications (the tray still shows what is pending)</label>
          </div>
          {error && (
            <p class="field-error" role="alert">
              {error}
            </p>
          )}
        </fieldset>
      )}
      <section class="about" aria-label="Connection">
        <h2>Connection</h2>
        <dl class="facts">
          <dt>Server</dt>
          <dd class="mono">{session.server_url}</dd>
          <dt>Backend</dt>
          <dd>{session.backend === "embedded" ? "embedded jitd (in this app)" : "remote jitd"}</dd>
          <dt>Tokens</dt>
          <dd>{session.token_storage === "keyring" ? "OS keyring" : "memory only (log in again after a restart)"}</dd>
        </dl>
      </section>
    </section>
  );
}
