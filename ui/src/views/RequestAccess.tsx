import { useEffect, useState } from "preact/hooks";
import { api, errorText, type EntitlementView } from "../api";
import { Empty, ErrorBox, Loading, ViewHeader } from "../components";
import { useActionsBlocked, useLoad } from "../hooks";
import { actionButton } from "../logic/actions";
import { formatDuration } from "../logic/time";
import { hasErrors, ticketExample, validateRequest, type RequestForm } from "../logic/validate";
import { createdWarnings } from "../logic/words";

const blank: RequestForm = { entitlement: "", duration: "", justification: "", ticket: "", urgent: false };

export function RequestAccess({
  onCreated,
  prefill = null,
}: {
  onCreated: (id: string) => void;
  /** Entitlement id to preselect (deep link `jit://request?entitlement=ID`). */
  prefill?: string | null;
}) {
  const list = useLoad(() => api.listEntitlements(), []);
  const [form, setForm] = useState<RequestForm>(blank);
  const [breakGlass, setBreakGlass] = useState(false);
  const [touched, setTouched] = useState<Record<string, boolean>>({});
  const [submitted, setSubmitted] = useState(false);
  const [busy, setBusy] = useState(false);
  const button = actionButton(busy, useActionsBlocked());
  const [serverError, setServerError] = useState<string | null>(null);
  const [success, setSuccess] = useState<{ id: string; text: string; warnings: string[] } | null>(null);

  const ents = list.data ?? [];
  const ent: EntitlementView | undefined = ents.find((e) => e.id === form.entitlement);

  // Pick the linked (else the first) entitlement and its default duration
  // once the list arrives.
  useEffect(() => {
    if (prefill && ents.some((e) => e.id === prefill)) choose(prefill);
    else if (!form.entitlement && ents.length > 0) choose(ents[0].id);
  }, [list.data, prefill]);

  function choose(id: string) {
    const e = ents.find((x) => x.id === id);
    setForm((f) => ({ ...f, entitlement: id, duration: e ? formatDuration(e.default_duration_secs) : f.duration }));
    setBreakGlass(false);
  }

  const errors = validateRequest(form, ent);
  const show = (k: keyof typeof errors) => (submitted || touched[k] ? errors[k] : undefined);
  const set = (k: keyof RequestForm) => (ev: Event) => {
    const t = ev.target as HTMLInputElement;
    setForm((f) => ({ ...f, [k]: t.type === "checkbox" ? t.checked : t.value }));
    setSuccess(null);
  };
  const blur = (k: string) => () => setTouched((t) => ({ ...t, [k]: true }));

  async function submit(ev: Event) {
    ev.preventDefault();
    setSubmitted(true);
    setServerError(null);
    setSuccess(null);
    if (hasErrors(errors)) {
      const first = (["entitlement", "duration", "justification", "ticket"] as const).find((k) => errors[k]);
      if (first) document.getElementById(`req-${first}`)?.focus();
      return;
    }
    setBusy(true);
    try {
      const r = await api.createRequest({
        entitlement: form.entitlement,
        duration: form.duration.trim(),
        justification: form.justification.trim(),
        ticket: form.ticket.trim() || undefined,
        urgent: form.urgent,
        break_glass: breakGlass || undefined,
      });
      const what =
        r.status === "pending"
          ? `waiting for approval (${r.approvals_required} needed)`
          : r.status === "approved"
            ? "approved — access is being granted"
            : r.status;
      setSuccess({
        id: r.id,
        text: `Requested ${r.entitlement_name} for ${formatDuration(r.duration_secs)}: ${what}.`,
        warnings: createdWarnings(r),
      });
      setForm((f) => ({ ...f, justification: "", ticket: "", urgent: false }));
      setBreakGlass(false);
      setSubmitted(false);
      setTouched({});
    } catch (e) {
      setServerError(errorText(e));
    } finally {
      setBusy(false);
    }
  }

  return (
    <section data-testid="request-view">
      <ViewHeader title="Request access" />
      {list.loading && !list.data && <Loading what="entitlements" />}
      {list.error && <ErrorBox error={list.error} retry={list.reload} />}
      {list.data && ents.length === 0 && (
        <Empty testid="request-empty" title="Nothing you may request">
          The policy lists no entitlement for you. Ask your administrator.
        </Empty>
      )}
      {list.data && ents.length > 0 && (
        <form class="form" onSubmit={submit} noValidate>
          <div class="field">
            <label for="req-entitlement">Entitlement</label>
            <select
              id="req-entitlement"
              data-testid="entitlement-select"
              value={form.entitlement}
              onChange={(e) => choose((e.target as HTMLSelectElement).value)}
            >
              {ents.map((e) => (
                <option key={e.id} value={e.id}>
                  {e.display_name} (max {formatDuration(e.max_duration_secs)})
                  {e.available === false ? " — unavailable" : ""}
                </option>
              ))}
            </select>
            {ent && (
              <p class="hint">
                {ent.description ? (
                  <>
                    {ent.description} <span class="muted">· {ent.target}</span>
                  </>
                ) : (
                  <span class="muted">{ent.target}</span>
                )}
                <br />
                Up to {formatDuration(ent.max_duration_secs)} · {ent.approvals_required} approval
                {ent.approvals_required === 1 ? "" : "s"} needed
              </p>
            )}
            {ent && ent.available === false && (
              <p class="error" role="alert">
                Unavailable: {ent.unavailable_reason ?? "it cannot be granted now"}
              </p>
            )}
          </div>

          <div class="field">
            <label for="req-duration">Duration</label>
            <input
              id="req-duration"
              class="short"
              data-testid="duration-input"
              value={form.duration}
              onInput={set("duration")}
              onChange={set("duration")}
              onBlur={blur("duration")}
              aria-invalid={!!show("duration")}
              aria-describedby="req-duration-hint"
            />
            <p class="hint" id="req-duration-hint">
              e.g. 90s, 45m, 4h, 1h30m{ent ? ` · at most ${formatDuration(ent.max_duration_secs)}` : ""}. It counts
              from when access is granted.
            </p>
            {show("duration") && <p class="field-error">{show("duration")}</p>}
          </div>

          <div class="field">
            <label for="req-justification">Justification</label>
            <textarea
              id="req-justification"
              data-testid="justification-input"
              rows={3}
              value={form.justification}
              onInput={set("justification")}
              onChange={set("justification")}
              onBlur={blur("justification")}
              aria-invalid={!!show("justification")}
            />
            {ent && (
              <p class="hint">
                {[...form.justification.trim()].length} / {ent.justification_min}–{ent.justification_max} characters
              </p>
            )}
            {show("justification") && <p class="field-error">{show("justification")}</p>}
          </div>

          <div class="field">
            <label for="req-ticket">Ticket{ent?.ticket_pattern ? "" : " (optional)"}</label>
            <input
              id="req-ticket"
              class="short"
              data-testid="ticket-input"
              value={form.ticket}
              onInput={set("ticket")}
              onChange={set("ticket")}
              onBlur={blur("ticket")}
              aria-invalid={!!show("ticket")}
              placeholder={ent?.ticket_pattern ? `e.g. ${ticketExample(ent.ticket_pattern)}` : ""}
            />
            {show("ticket") && <p class="field-error">{show("ticket")}</p>}
          </div>

          <div class="field check">
            <input id="req-urgent" type="checkbox" data-testid="urgent-checkbox" checked={form.urgent} onChange={set("urgent")} />
            <label for="req-urgent">Urgent — approvers get a critical notification</label>
          </div>
          {ent?.break_glass && (
            <div class="field check">
              <input
                id="req-break-glass"
                type="checkbox"
                data-testid="break-glass-checkbox"
                checked={breakGlass}
                onChange={(e) => setBreakGlass((e.target as HTMLInputElement).checked)}
              />
              <label for="req-break-glass">
                Break glass — activate now without approval; approvers are alerted and must review it afterwards
              </label>
            </div>
          )}

          <div class="buttons">
            <button
              type="submit"
              class="btn primary"
              data-testid="submit-request"
              disabled={button.disabled}
              title={button.title}
            >
              {busy ? "Sending…" : "Request access"}
            </button>
          </div>
          {(serverError || (submitted && hasErrors(errors))) && (
            <p class="flash err" data-testid="form-error" role="alert">
              {serverError ?? "Please fix the fields marked above."}
            </p>
          )}
          {success && (
            <p class="flash ok" data-testid="form-success" role="status" data-created-id={success.id}>
              {success.text}{" "}
              <button type="button" class="link" onClick={() => onCreated(success.id)}>
                Show in My access
              </button>
            </p>
          )}
          {success?.warnings.map((w) => (
            <p key={w} class="flash warn" data-testid="form-warning" role="alert">
              {w}
            </p>
          ))}
        </form>
      )}
    </section>
  );
}
