import type { ComponentChildren } from "preact";
import type { RequestView } from "./api";

export function Loading({ what }: { what: string }) {
  return (
    <p class="state state-loading" role="status" aria-live="polite">
      <span class="spinner" aria-hidden="true" /> Loading {what}…
    </p>
  );
}

export function ErrorBox({ error, retry }: { error: string; retry?: () => void }) {
  return (
    <div class="state state-error" role="alert">
      <p>{error}</p>
      {retry && (
        <button type="button" class="btn" onClick={retry}>
          Try again
        </button>
      )}
    </div>
  );
}

export function Empty({ testid, title, children }: { testid: string; title: string; children?: ComponentChildren }) {
  return (
    <div class="state state-empty" data-testid={testid}>
      <p class="state-title">{title}</p>
      {children && <p class="muted">{children}</p>}
    </div>
  );
}

export function StatusBadge({ r, testid }: { r: RequestView; testid?: string }) {
  return (
    <span class={`badge status-${r.status}`} data-testid={testid}>
      {r.status}
    </span>
  );
}

export function UrgencyBadge({ r }: { r: RequestView }) {
  if (r.break_glass) return <span class="badge urgent">break-glass</span>;
  if (r.urgent) return <span class="badge urgent">urgent</span>;
  return null;
}

export function ViewHeader({ title, children }: { title: string; children?: ComponentChildren }) {
  return (
    <header class="view-header">
      <h1>{title}</h1>
      {children && <div class="view-actions">{children}</div>}
    </header>
  );
}

/** Scrolls the highlighted row into view and focuses it once it exists. */
export function focusRow(id: string | null) {
  if (!id) return;
  requestAnimationFrame(() => {
    const el = document.querySelector<HTMLElement>(`[data-request-id="${CSS.escape(id)}"]`);
    if (el) {
      el.scrollIntoView({ block: "center" });
      el.focus({ preventScroll: true });
    }
  });
}
