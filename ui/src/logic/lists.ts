// Ordering and filtering of lists shown in the views.
import type { AuditRecord, RequestView } from "../api";

/** Approvals: urgent (and break-glass) first, then the oldest first. */
export function sortApprovals(rows: readonly RequestView[]): RequestView[] {
  return [...rows].sort((a, b) => {
    const ua = a.urgent || a.break_glass ? 1 : 0;
    const ub = b.urgent || b.break_glass ? 1 : 0;
    if (ua !== ub) return ub - ua;
    const ta = Date.parse(a.created_at);
    const tb = Date.parse(b.created_at);
    if (ta !== tb) return ta - tb;
    return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
  });
}

/** History search: every whitespace-separated term (case-insensitive) must
 *  appear in one of the row's fields. Newest first. */
export function filterAudit(rows: readonly AuditRecord[], query: string): AuditRecord[] {
  const terms = query.toLowerCase().split(/\s+/).filter(Boolean);
  const out = rows.filter((r) => {
    if (terms.length === 0) return true;
    const hay = [
      r.event,
      r.request_id,
      r.entitlement_id,
      r.requester_id,
      r.actor,
      r.reason ?? "",
      r.from_status ?? "",
      r.to_status ?? "",
      r.at,
      String(r.seq),
    ]
      .join("\n")
      .toLowerCase();
    return terms.every((t) => hay.includes(t));
  });
  return out.sort((a, b) => b.seq - a.seq);
}

/** My access: active grants first (soonest expiry first), then open
 *  requests, then the rest newest first. */
export function sortMine(rows: readonly RequestView[]): RequestView[] {
  const rank = (r: RequestView) =>
    r.status === "active" ? 0 : r.status === "approved" || r.status === "pending" ? 1 : 2;
  return [...rows].sort((a, b) => {
    const d = rank(a) - rank(b);
    if (d !== 0) return d;
    if (a.status === "active" && b.status === "active")
      return Date.parse(a.expires_at ?? "") - Date.parse(b.expires_at ?? "");
    return Date.parse(b.created_at) - Date.parse(a.created_at);
  });
}
