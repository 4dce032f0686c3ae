import { describe, expect, it } from "vitest";
import type { AuditRecord, RequestView } from "../api";
import { filterAudit, sortApprovals, sortMine } from "./lists";

const req = (id: string, over: Partial<RequestView> = {}): RequestView =>
  ({
    id,
    kind: { type: "access" },
    entitlement_id: "prod-db-admin",
    requester_id: "u-alice",
    requester_username: "alice",
    justification: "because",
    ticket: null,
    urgent: false,
    break_glass: false,
    requested_secs: 900,
    duration_secs: 900,
    approvals_required: 1,
    votes: [],
    status: "pending",
    created_at: "2030-01-01T12:00:00Z",
    entitlement_name: "Production database admin",
    expires_at: null,
    ...over,
  }) as RequestView;

describe("sortApprovals", () => {
  it("puts urgent first, then the oldest first", () => {
    const rows = [
      req("new", { created_at: "2030-01-01T12:10:00Z" }),
      req("old", { created_at: "2030-01-01T12:00:00Z" }),
      req("urgent-new", { urgent: true, created_at: "2030-01-01T12:20:00Z" }),
      req("urgent-old", { urgent: true, created_at: "2030-01-01T12:05:00Z" }),
      req("glass", { break_glass: true, created_at: "2030-01-01T12:15:00Z" }),
    ];
    expect(sortApprovals(rows).map((r) => r.id)).toEqual([
      "urgent-old",
      "glass",
      "urgent-new",
      "old",
      "new",
    ]);
  });

  it("does not change its input", () => {
    const rows = [req("b", { urgent: false }), req("a", { urgent: true })];
    sortApprovals(rows);
    expect(rows.map((r) => r.id)).toEqual(["b", "a"]);
  });
});

describe("sortMine", () => {
  it("shows active grants (soonest end first), then open requests, then the rest", () => {
    const rows = [
      req("old-denied", { status: "denied", created_at: "2030-01-01T10:00:00Z" }),
      req("active-late", { status: "active", expires_at: "2030-01-01T14:00:00Z" }),
      req("pending", { status: "pending" }),
      req("active-soon", { status: "active", expires_at: "2030-01-01T13:00:00Z" }),
      req("new-expired", { status: "expired", created_at: "2030-01-01T11:00:00Z" }),
    ];
    expect(sortMine(rows).map((r) => r.id)).toEqual([
      "active-soon",
      "active-late",
      "pending",
      "new-expired",
      "old-denied",
    ]);
  });
});

const rec = (seq: number, over: Partial<AuditRecord> = {}): AuditRecord => ({
  seq,
  at: "2030-01-01T12:00:00Z",
  event: "request.created",
  request_id: `r${seq}`,
  entitlement_id: "prod-db-admin",
  requester_id: "u-alice",
  actor: "alice",
  reason: null,
  from_status: null,
  to_status: "pending",
  prev_hash: "",
  hash: "",
  ...over,
});

describe("filterAudit", () => {
  const rows = [
    rec(1),
    rec(2, { event: "request.approved", actor: "bob", reason: "Looks fine" }),
    rec(3, { event: "grant.revoked", entitlement_id: "billing-admin", actor: "Carol" }),
  ];

  it("returns everything newest first for an empty query", () => {
    expect(filterAudit(rows, "  ").map((r) => r.seq)).toEqual([3, 2, 1]);
  });

  it("matches case-insensitively in any field", () => {
    expect(filterAudit(rows, "carol").map((r) => r.seq)).toEqual([3]);
    expect(filterAudit(rows, "LOOKS").map((r) => r.seq)).toEqual([2]);
    expect(filterAudit(rows, "r1").map((r) => r.seq)).toEqual([1]);
  });

  it("needs every term to match", () => {
    expect(filterAudit(rows, "prod approved").map((r) => r.seq)).toEqual([2]);
    expect(filterAudit(rows, "billing approved")).toEqual([]);
  });
});
