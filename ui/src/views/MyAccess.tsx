import { useEffect, useState } from "preact/hooks";
import { api, errorText, type RequestView } from "../api";
import { Empty, ErrorBox, Loading, StatusBadge, UrgencyBadge, ViewHeader, focusRow } from "../components";
import { useActionsBlocked, useLoad, useNow } from "../hooks";
import { actionButton } from "../logic/actions";
import { cardActions, durationFacts, grantCards } from "../logic/grants";
import { sortMine } from "../logic/lists";
import { formatAge, formatCountdown, formatDuration, remainingSecs } from "../logic/time";
import { parseDuration } from "../logic/validate";
import { dropQuestion } from "../logic/words";

type Props = { tick: number; offsetMs: number; highlight: string | null };

const OPEN = new Set(["pending", "approved", "active"]);

export function MyAccess({ tick, offsetMs, highlight }: Props) {
  const list = useLoad(() => api.listRequests({ mine: true }), [tick], "mine");
  const now = useNow();
  // A message about the last action; one about a request (an extension
  // asked for) shows only while that request is still waiting.
  const [flash, setFlash] = useState<{ text: string; id?: string } | null>(null);
  const [showEnded, setShowEnded] = useState(false);
  // Applied extensions are shown on their grant's card.
  const rows = sortMine(grantCards(list.data ?? []));
  const open = rows.filter((r) => OPEN.has(r.status));
  const ended = rows.filter((r) => !OPEN.has(r.status));
  const highlightEnded = ended.some((r) => r.id === highlight);

  useEffect(() => focusRow(highlight), [highlight, list.data, showEnded]);

  const done = (msg: string, id?: string) => {
    setFlash({ text: msg, id });
    list.reload();
  };
  const flashFor = flash?.id ? (list.data ?? []).find((r) => r.id === flash.id) : undefined;
  const showFlash = flash !== null && (!flash.id || !flashFor || flashFor.status === "pending");

  return (
    <section data-testid="mine-view">
      <ViewHeader title="My access" />
      {showFlash && (
        <p class="flash ok" role="status" data-testid="mine-flash">
          {flash.text}
        </p>
      )}
      {list.loading && !list.data && <Loading what="your requests" />}
      {list.error && !list.data && <ErrorBox error={list.error} retry={list.reload} />}
      {list.error && list.data && <p class="flash err">Could not refresh: {list.error}</p>}
      {list.data && rows.length === 0 && (
        <Empty testid="mine-empty" title="No requests yet">
          Ask for access in “Request access”; your grants and their countdowns show up here.
        </Empty>
      )}
      {list.data && rows.length > 0 && open.length === 0 && (
        <p class="muted">No active grants or open requests.</p>
      )}
      <ul class="cards">
        {open.map((r) => (
          <GrantRow key={r.id} r={r} now={now} offsetMs={offsetMs} highlighted={r.id === highlight} onDone={done} />
        ))}
      </ul>
      {ended.length > 0 && (
        <div class="ended">
          <button
            type="button"
            class="btn subtle"
            aria-expanded={showEnded || highlightEnded}
            onClick={() => setShowEnded((s) => !s)}
          >
            {showEnded || highlightEnded ? "Hide" : "Show"} ended requests ({ended.length})
          </button>
          {(showEnded || highlightEnded) && (
            <ul class="cards">
              {ended.map((r) => (
                <GrantRow key={r.id} r={r} now={now} offsetMs={offsetMs} highlighted={r.id === highlight} onDone={done} />
              ))}
            </ul>
          )}
        </div>
      )}
    </section>
  );
}

function GrantRow({
  r,
  now,
  offsetMs,
  highlighted,
  onDone,
}: {
  r: RequestView;
  now: number;
  offsetMs: number;
  highlighted: boolean;
  onDone: (msg: string, id?: string) => void;
}) {
  const [busy, setBusy] = useState(false);
  const blocked = useActionsBlocked();
  const button = actionButton(busy, blocked);
  const [confirmDrop, setConfirmDrop] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [extending, setExtending] = useState(false);
  const [extDuration, setExtDuration] = useState("15m");
  const [extWhy, setExtWhy] = useState("");
  const left = r.status === "active" ? remainingSecs(r.expires_at, now, offsetMs) : null;
  const actions = cardActions(r);
  const dur = durationFacts(r);
  const soon = left !== null && left <= 300;

  async function run(label: string, f: () => Promise<RequestView>) {
    setBusy(true);
    setError(null);
    try {
      const res = await f();
      if (res.kind.type === "extension")
        onDone(`${label}: ${res.entitlement_name} — waiting for approval`, res.id);
      else onDone(`${label}: ${res.entitlement_name}`);
      setExtending(false);
      setConfirmDrop(false);
    } catch (e) {
      setError(errorText(e));
    } finally {
      setBusy(false);
    }
  }

  function submitExtend(ev: Event) {
    ev.preventDefault();
    const d = parseDuration(extDuration);
    if (!d.ok) return setError(d.error);
    if (extWhy.trim() === "") return setError("Say why you need more time");
    void run("Extension requested", () => api.extendGrant(r.id, extDuration.trim(), extWhy.trim()));
  }

  return (
    <li
      class={`card card-${r.status}${highlighted ? " highlight" : ""}${soon ? " card-soon" : ""}`}
      data-testid="grant-row"
      data-request-id={r.id}
      tabIndex={-1}
    >
      <div class="card-head">
        <div>
          <strong>{r.entitlement_name}</strong> <StatusBadge r={r} testid="grant-status" /> <UrgencyBadge r={r} />
          {r.kind.type === "extension" && <span class="badge">extension</span>}
        </div>
        {r.status === "active" && left !== null ? (
          <span class={`countdown${soon ? " soon" : ""}`} aria-label="Time left">
            <span data-testid="countdown" role="timer">
              {formatCountdown(left)}
            </span>{" "}
            left
          </span>
        ) : (
          <span class="muted" title={r.created_at}>
            {formatAge(r.created_at, now, offsetMs)}
          </span>
        )}
      </div>
      <dl class="facts">
        <dt>Duration</dt>
        <dd data-testid="grant-duration">
          {formatDuration(dur.total)}
          {dur.extensions.length > 0 &&
            ` (${formatDuration(dur.granted)} + ${dur.extensions.length} extension${dur.extensions.length === 1 ? "" : "s"})`}
        </dd>
        {r.ticket && (
          <>
            <dt>Ticket</dt>
            <dd>{r.ticket}</dd>
          </>
        )}
        {r.status === "pending" && (
          <>
            <dt>Approvals</dt>
            <dd>
              {r.approvals} of {r.approvals_required}
            </dd>
          </>
        )}
        {r.ended_by && (
          <>
            <dt>Ended by</dt>
            <dd>
              {r.ended_by}
              {r.end_reason ? ` — ${r.end_reason}` : ""}
            </dd>
          </>
        )}
      </dl>
      <p class="justification">{r.justification}</p>
      {dur.extensions.length > 0 && (
        <ul class="extensions" data-testid="grant-extensions">
          {dur.extensions.map((x) => (
            <li key={x.id} class="muted">
              +{formatDuration(x.added_secs)} asked by {x.requested_by}, approved by {x.approved_by.join(", ")} —{" "}
              {x.justification}
            </li>
          ))}
        </ul>
      )}
      {r.votes
        .filter((v) => v.comment)
        .map((v) => (
          <p class="muted vote" key={v.approver_id}>
            {v.approver_username} ({v.decision}): {v.comment}
          </p>
        ))}
      {r.revoke_late && (
        <p class="flash err">
          Removal in Keycloak is late{r.keycloak.last_error ? `: ${r.keycloak.last_error}` : ""}; jitd keeps retrying.
        </p>
      )}
      {error && (
        <p class="field-error" role="alert">
          {error}
        </p>
      )}
      {blocked && (actions.drop || actions.extend || actions.cancel) && (
        <p class="muted blocked" data-testid="actions-blocked">
          {blocked}
        </p>
      )}
      <div class="buttons">
        {actions.drop &&
          (confirmDrop ? (
            <span class="confirm" role="group" aria-label="Confirm drop">
              <span>{dropQuestion(r)}</span>
              <button
                type="button"
                class="btn danger"
                data-testid="drop-confirm"
                disabled={button.disabled}
                title={button.title}
                onClick={() => run("Dropped", () => api.dropGrant(r.id))}
              >
                Yes, drop it
              </button>
              <button type="button" class="btn" data-testid="drop-keep" disabled={busy} onClick={() => setConfirmDrop(false)}>
                Keep access
              </button>
            </span>
          ) : (
            <button
              type="button"
              class="btn danger"
              data-testid="drop-button"
              disabled={button.disabled}
              title={button.title}
              onClick={() => setConfirmDrop(true)}
            >
              Drop access now
            </button>
          ))}
        {actions.extend && (
          <button
            type="button"
            class="btn"
            data-testid="extend-button"
            disabled={button.disabled}
            title={button.title}
            aria-expanded={extending}
            onClick={() => setExtending((x) => !x)}
          >
            Ask for more time
          </button>
        )}
        {actions.cancel && (
          <button
            type="button"
            class="btn"
            data-testid="cancel-button"
            disabled={button.disabled}
            title={button.title}
            onClick={() => run("Cancelled", () => api.cancelRequest(r.id))}
          >
            Cancel request
          </button>
        )}
      </div>
      {extending && (
        <form class="form inline" onSubmit={submitExtend}>
          <div class="field">
            <label for={`ext-d-${r.id}`}>Extra time</label>
            <input
              id={`ext-d-${r.id}`}
              class="short"
              data-testid="extend-duration"
              value={extDuration}
              onInput={(e) => setExtDuration((e.target as HTMLInputElement).value)}
              onChange={(e) => setExtDuration((e.target as HTMLInputElement).value)}
            />
          </div>
          <div class="field grow">
            <label for={`ext-j-${r.id}`}>Why</label>
            <input
              id={`ext-j-${r.id}`}
              data-testid="extend-justification"
              value={extWhy}
              onInput={(e) => setExtWhy((e.target as HTMLInputElement).value)}
              onChange={(e) => setExtWhy((e.target as HTMLInputElement).value)}
            />
          </div>
          <button
            type="submit"
            class="btn primary"
            data-testid="extend-submit"
            disabled={button.disabled}
            title={button.title}
          >
            Send
          </button>
        </form>
      )}
    </li>
  );
}
