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
  /** Which part is down (jitd or Keycloak) and what still works. */
  outage: { part: "jitd" | "keycloak"; message: string } | null;
  /** Why the last login was lost (shown on the login screen). */
  lost_reason: string | null;
  /** Increases with each state computed: keep the newest. */
  version: number;
};

/** The newer of two session states (answers and events may cross). */
export function newerSession(cur: SessionInfo | null, next: SessionInfo): SessionInfo {
  return cur && cur.version > next.version ? cur : next;
}

/** The error of every command: a stable code and one human sentence. */
export type CommandError = { code: string; message: string };

export type LoginUrl = { url: string; browser_error: string | null };

export type HeldGrant = { id: string; requester: string; entitlement: string; expires_at: string | null };

/** `jit:quit-requested`: what the embedded jitd holds when asked to quit. */
export type QuitRequest = { active: HeldGrant[]; removing: number; tray: boolean; error?: string };

export type DeepLink = { kind: "request"; id: string } | { kind: "new_request"; entitlement: string };

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

/** The code of a command error (`{code, message}`), if it is one. */
export function errorCode(e: unknown): string | null {
  if (e && typeof e === "object" && "code" in e && typeof (e as CommandError).code === "string")
    return (e as CommandError).code;
  return null;
}

/** Errors from commands are `{code, message}`; show the message. */
export function errorText(e: unknown): string {
  if (typeof e === "string") return e;
  if (e instanceof Error) return e.message;
  if (e && typeof e === "object" && "message" in e && typeof (e as CommandError).message === "string")
    return (e as CommandError).message;
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
  quitChoice: (choice: "background" | "end_grants") => invoke<null>("quit_choice", { choice }),
  takeDeepLink: () => invoke<DeepLink | null>("take_deep_link"),
};

export const events = {
  onEvent: (f: (e: EventData) => void): Promise<UnlistenFn> =>
    listen<EventData>("jit:event", (ev) => f(ev.payload)),
  onSession: (f: (s: SessionInfo) => void): Promise<UnlistenFn> =>
    listen<SessionInfo>("jit:session", (ev) => f(ev.payload)),
  onOpenRequest: (f: (id: string) => void): Promise<UnlistenFn> =>
    listen<{ id: string }>("jit:open-request", (ev) => f(ev.payload.id)),
  onLoginUrl: (f: (u: LoginUrl) => void): Promise<UnlistenFn> =>
    listen<LoginUrl>("jit:login-url", (ev) => f(ev.payload)),
  onQuitRequested: (f: (q: QuitRequest) => void): Promise<UnlistenFn> =>
    listen<QuitRequest>("jit:quit-requested", (ev) => f(ev.payload)),
  onQuitProgress: (f: (left: number) => void): Promise<UnlistenFn> =>
    listen<{ left: number }>("jit:quit-progress", (ev) => f(ev.payload.left)),
  onDeepLink: (f: (l: DeepLink) => void): Promise<UnlistenFn> =>
    listen<DeepLink>("jit:deep-link", (ev) => f(ev.payload)),
};
