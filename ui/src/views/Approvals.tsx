import { useEffect, useState } from "preact/hooks";
import { api, errorText, type RequestView } from "../api";
import { Empty, ErrorBox, Loading, UrgencyBadge, ViewHeader, focusRow } from "../components";
import { useActionsBlocked, useLoad, useNow } from "../hooks";
import { actionButton } from "../logic/actions";
import { sortApprovals } from "../logic/lists";
import { formatAge, formatDuration } from "../logic/time";
import { parseDuration } from "../logic/validate";

type Props = { tick: number; offsetMs: number; highlight: string | null };

export function Approvals({ tick, offsetMs, highlight }: Props) {
  const list = useLoad(() => api.listRequests({ to_review: true }), [tick], "approvals");
  // Grants running now (of entitlements I approve): to tell when a
  // requester already holds the role through another grant.
  const active = useLoad(() => api.listRequests({ status: "active" }), [tick], "active");
  const now = useNow();
  const [done, setDone] = useState<string | null>(null);
  const rows = sortApprovals(list.data ?? []);

  useEffect(() => focusRow(highlight), [highlight, list.data]);

  return (
    <section data-testid="approvals-view" aria-labelledby="approvals-title">
      <ViewHeader title="Approvals">
        <span class="muted">{list.data ? `${rows.length} waiting` : ""}</span>
      </ViewHeader>
      <p class="sr-only" id="approvals-title">
        Requests waiting for your decision
      </p>
      {done && (
        <p class="flash ok" role="status">
          {done}
        </p>
      )}
      {list.error && !list.data && <ErrorBox error={list.error} retry={list.reload} />}
      {list.loading && !list.data && <Loading what="requests to review" />}
      {list.data && rows.length === 0 && (
        <Empty testid="approvals-empty" title="Nothing waiting for you">
          New requests you may approve show up here and as notifications.
        </Empty>
      )}
      {list.error && list.data && <p class="flash err">Could not refresh: {list.error}</p>}
      <ul class="cards">
        {rows.map((r) => (
          <ApprovalRow
            key={r.id}
            r={r}
            heldBy={(active.data ?? []).find(
              (a) =>
                a.id !== r.id &&
                a.kind.type === "access" &&
                a.requester_id === r.requester_id &&
                a.entitlement_id === r.entitlement_id &&
                !(r.kind.type === "extension" && r.kind.grant_id === a.id),
            )}
            now={now}
            offsetMs={offsetMs}
            highlighted={r.id === highlight}
            onDone={(msg) => {
              setDone(msg);
              list.reload();
            }}
          />
        ))}
      </ul>
    </section>
  );
}

function ApprovalRow({
  r,
  heldBy,
  now,
  offsetMs,
  highlighted,
  onDone,
}: {
  r: RequestView;
  /** Another active grant of the same entitlement to the same requester. */
  heldBy?: RequestView;
  now: number;
  offsetMs: number;
  highlighted: boolean;
  onDone: (msg: string) => void;
}) {
  const [comment, setComment] = useState("");
  const [shorten, setShorten] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const blocked = useActionsBlocked();
  const button = actionButton(busy, blocked);
  const approvals = r.votes.filter((v) => v.decision === "approve");
  const cid = `comment-${r.id}`;
  const sid = `shorten-${r.id}`;

  async function act(kind: "approve" | "deny") {
    setError(null);
    if (kind === "deny" && comment.trim() === "") {
      setError("A deny needs a comment: tell the requester why.");
      document.getElementById(cid)?.focus();
      return;
    }
    if (kind === "approve" && shorten.trim() !== "") {
      const d = parseDuration(shorten);
      if (!d.ok) {
        setError(d.error);
        document.getElementById(sid)?.focus();
        return;
      }
      if (d.secs > r.duration_secs) {
        setError(`An approver may only shorten: at most ${formatDuration(r.duration_secs)}`);
        return;
      }
    }
    setBusy(true);
    try {
      const res =
        kind === "approve"
          ? await api.approveRequest(r.id, comment.trim() || undefined, shorten.trim() || undefined)
          : await api.denyRequest(r.id, comment.trim());
      const who = `${r.requester_username} → ${r.entitlement_name}`;
      if (kind === "deny") onDone(`Denied: ${who}`);
      else if (res.status === "pending") {
        onDone(`Your approval is recorded: ${who} (${res.approvals} of ${res.approvals_required} approvals)`);
      } else onDone(`Approved: ${who}${res.status === "active" ? " — access granted" : ""}`);
    } catch (e) {
      setError(errorText(e));
    } finally {
      setBusy(false);
    }
  }

  return (
    <li
      class={`card${r.urgent || r.break_glass ? " card-urgent" : ""}${highlighted ? " highlight" : ""}`}
      data-testid="approval-row"
      data-request-id={r.id}
      tabIndex={-1}
      aria-label={`${r.urgent ? "Urgent request" : "Request"} from ${r.requester_username} for ${r.entitlement_name}`}
    >
      <div class="card-head">
        <div>
          <strong data-testid="approval-requester">{r.requester_username}</strong>
          <span class="arrow" aria-hidden="true">
            {" "}
            →{" "}
          </span>
          <span class="sr-only"> requests </span>
          <strong data-testid="approval-entitlement">{r.entitlement_name}</strong>{" "}
          <UrgencyBadge r={r} />
          {r.kind.type === "extension" && <span class="badge">extension</span>}
        </div>
        <span class="muted" title={r.created_at}>
          {formatAge(r.created_at, now, offsetMs)}
        </span>
      </div>
      <dl class="facts">
        <dt>Duration</dt>
        <dd>{formatDuration(r.duration_secs)}</dd>
        <dt>Ticket</dt>
        <dd>{r.ticket ?? <span class="muted">none</span>}</dd>
        <dt>Votes</dt>
        <dd>
          {r.approvals} of {r.approvals_required} approvals
          {approvals.length > 0 && <span class="muted"> ({approvals.map((v) => v.approver_username).join(", ")})</span>}
        </dd>
      </dl>
      <p class="justification">{r.justification}</p>
      {heldBy && (
        <p class="also-held" data-testid="approval-already-held">
          {r.requester_username} already holds {r.entitlement_name} through another grant
          {heldBy.expires_at ? ` (until ${new Date(heldBy.expires_at).toLocaleTimeString()})` : ""}; approving
          this one keeps it longer, it does not add anything new.
        </p>
      )}
      <div class="decide">
        <label for={cid}>Comment</label>
        <textarea
          id={cid}
          data-testid="approval-comment"
          rows={2}
          value={comment}
          placeholder="Required to deny; optional to approve"
          onInput={(e) => setComment((e.target as HTMLTextAreaElement).value)}
          onChange={(e) => setComment((e.target as HTMLTextAreaElement).value)}
        />
        <label for={sid}>Shorten to (optional)</label>
        <input
          id={sid}
          class="short"
          value={shorten}
          placeholder={formatDuration(r.duration_secs)}
          onInput={(e) => setShorten((e.target as HTMLInputElement).value)}
          onChange={(e) => setShorten((e.target as HTMLInputElement).value)}
        />
        {error && (
          <p class="field-error" role="alert">
            {error}
          </p>
        )}
        {blocked && (
          <p class="muted blocked" data-testid="actions-blocked">
            {blocked}
          </p>
        )}
        <div class="buttons">
          <button
            type="button"
            class="btn primary"
            data-testid="approve-button"
            disabled={button.disabled}
            title={button.title}
            onClick={() => act("approve")}
          >
            Approve
          </button>
          <button
            type="button"
            class="btn danger"
            data-testid="deny-button"
            disabled={button.disabled}
            title={button.title}
            onClick={() => act("deny")}
          >
            Deny
          </button>
        </div>
      </div>
    </li>
  );
}
