// The one place the UI talks to the Tauri crate: typed wrappers around the
// commands and events of docs/desktop-contract.md. Wire types mirror
// crates/jit-core/src/api.rs (snake_case JSON).
import { invoke } from "@tauri-apps/api/core";
import { listen, type UnlistenFn } from "@tauri-apps/api/event";

export type Connection = "connecting" | "live" | "polling" | "offline";

export type SessionInfo = {
  logged_in: boolean;
  username: string | null;
  server_url: string;
  backend: "embedded" | "remote";
  connection: Connection;
  token_storage: "keyring" | "memory";
  notice: string | null;
};

export type Settings = { mute_non_urgent: boolean; notifications_paused: boolean };

export type Status =
  | "pending"
  | "approved"
  | "active"
  | "denied"
  | "cancelled"
  | "lapsed"
  | "expired"
  | "revoked"
  | "applied";

export type Vote = {
  approver_id: string;
  approver_username: string;
  decision: "approve" | "deny";
  comment: string | null;
  duration_secs: number | null;
  at: string;
};

export type RequestKind = { type: "access" } | { type: "extension"; grant_id: string };

/** An extension whose time was added to a grant (kept on the grant). */
export type AppliedExtension = {
  id: string;
  requested_by: string;
  approved_by: string[];
  added_secs: number;
  justification: string;
  applied_at: string;
  expires_at: string;
};

export type GrantState = {
  owns_assignment: boolean | null;
  granted_at: string | null;
  removal_pending: boolean;
  removed_at: string | null;
  attempts: number;
  next_attempt_at: string | null;
  last_error: string | null;
};

export type RequestView = {
  id: string;
  kind: RequestKind;
  entitlement_id: string;
  requester_id: string;
  requester_username: string;
  justification: string;
  ticket: string | null;
  urgent: boolean;
  break_glass: boolean;
  requested_secs: number;
  duration_secs: number;
  approvals_required: number;
  votes: Vote[];
  status: Status;
  created_at: string;
  pending_until: string;
  start_at: string | null;
  decided_at: string | null;
  activated_at: string | null;
  expires_at: string | null;
  ended_at: string | null;
  ended_by: string | null;
  end_reason: string | null;
  auto_approved: string | null;
  review_required: boolean;
  reviewed_by: string | null;
  reviewed_at: string | null;
  /** Applied extensions of this grant, oldest first. */
  extensions?: AppliedExtension[];
  entitlement_name: string;
  remaining_secs: number | null;
  /** The grant's whole length: duration_secs plus applied extensions. */
  total_secs?: number;
  keycloak: GrantState;
  revoke_late: boolean;
};

export type EntitlementView = {
  id: string;
  display_name: string;
  description: string;
  target: string;
  max_duration_secs: number;
  default_duration_secs: number;
  approvals_required: number;
  ticket_pattern: string | null;
  justification_min: number;
  justification_max: number;
  break_glass: boolean;
  you_approve: boolean;
};

export type CreateRequestBody = {
  entitlement: string;
  duration?: string;
  justification: string;
  ticket?: string;
  urgent?: boolean;
  break_glass?: boolean;
};

export type AuditRecord = {
  seq: number;
  at: string;
  event: string;
  request_id: string;
  entitlement_id: string;
  requester_id: string;
  actor: string;
  reason: string | null;
  from_status: string | null;
  to_status: string | null;
  prev_hash: string;
  hash: string;
};

export type MeView = {
  id: string;
  username: string;
  roles: string[];
  groups: string[];
  auditor: boolean;
  approves: string[];
  token_exp: number;
};

export type EventData = AuditRecord & { request: RequestView | null };

export type ListQuery = { mine?: boolean; to_review?: boolean; status?: string };

/** Errors from commands are one readable line; make sure we show a string. */
export function errorText(e: unknown): string {
  if (typeof e === "string") return e;
  if (e instanceof Error) return e.message;
  try {
    return JSON.stringify(e);
  } catch {
    return String(e);
  }
}

export const api = {
  getSession: () => invoke<SessionInfo>("get_session"),
  login: () => invoke<SessionInfo>("login"),
  logout: () => invoke<SessionInfo>("logout"),
  getMe: () => invoke<MeView>("get_me"),
  listEntitlements: () => invoke<EntitlementView[]>("list_entitlements"),
  listRequests: (query: ListQuery) => invoke<RequestView[]>("list_requests", { query }),
  createRequest: (body: CreateRequestBody) => invoke<RequestView>("create_request", { body }),
  approveRequest: (id: string, comment?: string, duration?: string) =>
    invoke<RequestView>("approve_request", { id, comment, duration }),
  denyRequest: (id: string, comment: string) => invoke<RequestView>("deny_request", { id, comment }),
  cancelRequest: (id: string) => invoke<RequestView>("cancel_request", { id }),
  dropGrant: (id: string) => invoke<RequestView>("drop_grant", { id }),
  revokeGrant: (id: string, comment: string) => invoke<RequestView>("revoke_grant", { id, comment }),
  extendGrant: (id: string, duration: string, justification: string) =>
    invoke<RequestView>("extend_grant", { id, duration, justification }),
  reviewRequest: (id: string, comment: string) =>
    invoke<RequestView>("review_request", { id, comment }),
  listAudit: (since?: number) => invoke<AuditRecord[]>("list_audit", { since }),
  serverClock: () => invoke<{ offset_ms: number }>("server_clock"),
  getSettings: () => invoke<Settings>("get_settings"),
  setSettings: (settings: Settings) => invoke<Settings>("set_settings", { settings }),
};

export const events = {
  onEvent: (f: (e: EventData) => void): Promise<UnlistenFn> =>
    listen<EventData>("jit:event", (ev) => f(ev.payload)),
  onSession: (f: (s: SessionInfo) => void): Promise<UnlistenFn> =>
    listen<SessionInfo>("jit:session", (ev) => f(ev.payload)),
  onOpenRequest: (f: (id: string) => void): Promise<UnlistenFn> =>
    listen<{ id: string }>("jit:open-request", (ev) => f(ev.payload.id)),
};
