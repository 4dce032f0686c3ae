// My access: which cards to show and which actions each may offer — the
// server's rules (jit-core), so no button offers something it will refuse.
import type { AppliedExtension, RequestView } from "../api";

/** An extension whose time is already part of its grant: `applied`, or
 *  `approved` as older jitd versions left it. It is shown on its grant's
 *  card, never as a request of its own. */
export function isAppliedExtension(r: RequestView): boolean {
  return r.kind.type === "extension" && (r.status === "applied" || r.status === "approved");
}

/** The rows My access shows as cards. */
export function grantCards(rows: readonly RequestView[]): RequestView[] {
  return rows.filter((r) => !isAppliedExtension(r));
}

export type CardActions = { drop: boolean; extend: boolean; cancel: boolean };

/** Drop and "more time" for an active grant; cancel for a pending request
 *  or an approved access request that has not started. */
export function cardActions(r: RequestView): CardActions {
  const access = r.kind.type === "access";
  return {
    drop: r.status === "active" && access,
    extend: r.status === "active" && access,
    cancel: r.status === "pending" || (r.status === "approved" && access),
  };
}

export type DurationFacts = { total: number; granted: number; extensions: AppliedExtension[] };

/** The grant's whole length and its extensions. */
export function durationFacts(r: RequestView): DurationFacts {
  const extensions = r.extensions ?? [];
  const added = extensions.reduce((n, x) => n + x.added_secs, 0);
  return { total: Math.max(r.total_secs ?? 0, r.duration_secs + added), granted: r.duration_secs, extensions };
}
