// The one place the UI talks to the Tauri crate: typed wrappers around the
// commands and events of docs/desktop-contract.md.
import { invoke } from "@tauri-apps/api/core";
import { listen, type UnlistenFn } from "@tauri-apps/api/event";
import type {
  AuditRecord,
  CreateRequestBody,
  EntitlementView,
  EventData,
  MeView,
  RequestView,
} from "./generated/api-types";

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

// Wire types of the API, generated from the Rust types of crates/jit-core
// (ts-rs); `crates/jit-core/tests/ts_types.rs` fails when they drift.
export type {
  AppliedExtension,
  AuditRecord,
  CreateRequestBody,
  Decision,
  EntitlementKind,
  EntitlementView,
  EventData,
  GrantState,
  MeView,
  RequestKind,
  RequestView,
  Status,
  Vote,
} from "./generated/api-types";

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
