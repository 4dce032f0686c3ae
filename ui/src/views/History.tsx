import { useState } from "preact/hooks";
import { api } from "../api";
import { Empty, ErrorBox, Loading, ViewHeader } from "../components";
import { useLoad } from "../hooks";
import { filterAudit } from "../logic/lists";
import { formatTimestamp } from "../logic/time";
import { eventLabel, humanReason, statusChange } from "../logic/words";

export function History({ tick }: { tick: number }) {
  const list = useLoad(() => api.listAudit(), [tick]);
  const [query, setQuery] = useState("");
  const rows = filterAudit(list.data ?? [], query);

  return (
    <section data-testid="history-view">
      <ViewHeader title="History">
        <label class="sr-only" for="history-search">
          Search the history
        </label>
        <input
          id="history-search"
          type="search"
          data-testid="history-search"
          placeholder="Search: user, entitlement, event, reason…"
          value={query}
          onInput={(e) => setQuery((e.target as HTMLInputElement).value)}
          onChange={(e) => setQuery((e.target as HTMLInputElement).value)}
        />
      </ViewHeader>
      {list.loading && !list.data && <Loading what="the history" />}
      {list.error && !list.data && <ErrorBox error={list.error} retry={list.reload} />}
      {list.data && list.data.length === 0 && (
        <Empty testid="history-empty" title="No history yet">
          Every request, decision, grant and revocation you may see is recorded here.
        </Empty>
      )}
      {list.data && list.data.length > 0 && rows.length === 0 && (
        <p class="muted" role="status">
          Nothing matches “{query}”.
        </p>
      )}
      {rows.length > 0 && (
        <div class="table-wrap">
          <table class="audit">
            <caption class="sr-only">Audit log, newest first</caption>
            <thead>
              <tr>
                <th scope="col">#</th>
                <th scope="col">Time</th>
                <th scope="col">Event</th>
                <th scope="col">Entitlement</th>
                <th scope="col">By</th>
                <th scope="col">Change</th>
                <th scope="col">Reason</th>
                <th scope="col">Request</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((r) => {
                const reason = humanReason(r.reason);
                return (
                  <tr key={r.seq} data-testid="audit-row" data-request-id={r.request_id}>
                    <td class="num">{r.seq}</td>
                    <td class="nowrap" title={r.at}>
                      {formatTimestamp(r.at)}
                    </td>
                    <td class="event" title={r.event} data-testid="audit-event">
                      {eventLabel(r.event)}
                    </td>
                    <td class="nowrap clip" title={r.entitlement_id}>
                      {r.entitlement_id}
                    </td>
                    <td class="nowrap clip" title={r.actor}>
                      {r.actor}
                    </td>
                    <td class="change">{statusChange(r.from_status, r.to_status)}</td>
                    <td class="reason" title={r.reason ?? ""} data-testid="audit-reason">
                      <div class="clamp">{reason}</div>
                    </td>
                    <td class="mono nowrap" title={r.request_id}>
                      {r.request_id.slice(0, 8)}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
