import { describe, expect, it } from "vitest";
import type { RequestView } from "../api";
import { cardActions, durationFacts, grantCards } from "./grants";

const row = (over: Partial<RequestView> = {}): RequestView => ({
  id: "g1",
  kind: { type: "access" },
  entitlement_id: "prod-db-admin",
  target: { kind: "realm_role", role: "prod-db-admin" },
  requester_id: "u-alice",
  requester_username: "alice",
  justification: "INC-42 fix the replica",
  ticket: null,
  urgent: false,
  break_glass: false,
  requested_secs: 600,
  duration_secs: 600,
  approvals_required: 1,
  votes: [],
  status: "active",
  created_at: "2026-11-29T10:00:00Z",
  pending_until: "2026-11-29T10:30:00Z",
  start_at: null,
  decided_at: null,
  activated_at: "2026-11-29T10:01:00Z",
  expires_at: "2026-11-29T10:26:00Z",
  ended_at: null,
  ended_by: null,
  end_reason: null,
  auto_approved: null,
  review_required: false,
  reviewed_by: null,
  reviewed_at: null,
  extensions: [],
  entitlement_name: "Production database admin",
  remaining_secs: 900,
  total_secs: 600,
  approvals: 0,
  keycloak: {
    owns_assignment: true,
    granted_at: null,
    assigning_since: null,
    removal_pending: false,
    removed_at: null,
    attempts: 0,
    next_attempt_at: null,
    last_error: null,
    removal_failed: false,
  },
  revoke_late: false,
  ends_sessions: false,
  awaits_your_review: null,
  ...over,
});

const ext = (status: RequestView["status"]) =>
  row({ id: "x1", kind: { type: "extension", grant_id: "g1" }, status, duration_secs: 900 });

describe("My access cards", () => {
  it("shows an applied extension only as part of its grant", () => {
    const rows = [row(), ext("applied"), ext("approved"), row({ id: "p1", status: "pending" })];
    expect(grantCards(rows).map((r) => r.id)).toEqual(["g1", "p1"]);
  });

  it("keeps a pending extension as an open request", () => {
    expect(grantCards([ext("pending")]).map((r) => r.id)).toEqual(["x1"]);
  });

  it("offers only actions the server accepts", () => {
    expect(cardActions(row())).toEqual({ drop: true, extend: true, cancel: false });
    expect(cardActions(row({ status: "pending" }))).toEqual({ drop: false, extend: false, cancel: true });
    expect(cardActions(row({ status: "approved" }))).toEqual({ drop: false, extend: false, cancel: true });
    expect(cardActions(ext("pending"))).toEqual({ drop: false, extend: false, cancel: true });
    for (const s of ["approved", "applied"] as const)
      expect(cardActions(ext(s))).toEqual({ drop: false, extend: false, cancel: false });
    for (const s of ["denied", "cancelled", "lapsed", "expired", "revoked"] as const)
      expect(cardActions(row({ status: s }))).toEqual({ drop: false, extend: false, cancel: false });
  });

  it("gives a grant's whole length with its extensions", () => {
    const x = {
      id: "x1",
      requested_by: "alice",
      approved_by: ["bob"],
      added_secs: 900,
      justification: "still fixing",
      applied_at: "2026-11-29T10:05:00Z",
      expires_at: "2026-11-29T10:26:00Z",
    };
    const f = durationFacts(row({ extensions: [x], total_secs: 1500 }));
    expect(f).toEqual({ total: 1500, granted: 600, extensions: [x] });
    // An older jitd without total_secs: summed here.
    expect(durationFacts(row({ extensions: [x], total_secs: undefined })).total).toBe(1500);
  });
});
