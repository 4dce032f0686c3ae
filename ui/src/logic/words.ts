// Words people read for the machine names of the audit log.

import type { EventKind, KnownEventKind, RequestView } from "../generated/api-types";

/** Known event kinds (the server's `EventKind` names) and their words. */
const EVENTS: Partial<Record<KnownEventKind, string>> = {
  "request.created": "Requested",
  "request.approved": "Approved",
  "request.voted": "Approval vote",
  "request.denied": "Denied",
  "request.cancelled": "Cancelled",
  "request.lapsed": "Lapsed (no decision in time)",
  "request.reviewed": "Reviewed after break-glass",
  "grant.granted": "Access granted",
  "grant.expired": "Access expired",
  "grant.dropped": "Dropped by the requester",
  "grant.revoked": "Access revoked",
  "grant.extended": "Extended",
  "grant.removal_failed": "Removal failed: an administrator must act",
  "grant.removal_retried": "Removal retried",
};

/** `grant.extended` → "Extended"; kinds without words here (and a newer
 *  server's kinds) become plain words. */
export function eventLabel(event: EventKind): string {
  const known = EVENTS[event as KnownEventKind];
  if (known) return known;
  const words = event.replace(/[._]+/g, " ").trim();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/** The status change of a row, or "" when nothing changed (an extension
 *  keeps a grant active: no "active → active"). */
export function statusChange(from: string | null, to: string | null): string {
  if (!from && !to) return "";
  if (from && to && from === to) return "";
  return `${from ?? "new"} → ${to ?? "–"}`;
}

const UUID = /\b([0-9a-f]{8})-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b/gi;
const RFC3339 = /\b(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})(:\d{2}(?:\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?\b/g;

/** A reason as people read it: request ids shortened to their first 8
 *  characters (as everywhere else), timestamps without seconds and zone. */
export function humanReason(reason: string | null): string {
  if (!reason) return "";
  return reason.replace(UUID, "$1").replace(RFC3339, (_m, d: string, hm: string) => `${d} ${hm}`);
}

/**
 * The warnings jitd gave with a request just created (`warnings` of the
 * `POST /v1/requests` answer, e.g. `no_eligible_approver`: nobody besides
 * the requester may approve it, so it can only lapse), as sentences to
 * show next to the confirmation. Empty when there are none.
 */
export function createdWarnings(r: Pick<RequestView, "warnings">): string[] {
  return (r.warnings ?? []).map((w) => w.message).filter((m) => m.trim() !== "");
}

/** The question before a drop: what ends with it. A grant whose end ends
 *  the requester's Keycloak sessions (`ends_sessions`) signs them out
 *  everywhere, this app included. */
export function dropQuestion(r: Pick<RequestView, "entitlement_name" | "ends_sessions">): string {
  const q = `Drop ${r.entitlement_name} now? Your access ends at once.`;
  return r.ends_sessions ? `${q} It also ends your Keycloak sessions: you will have to log in again.` : q;
}
