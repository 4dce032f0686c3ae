// Whether the buttons that send something to jitd (approve, deny, drop,
// cancel, more time, a new request) may be pressed now. Every such call
// needs a fresh access token from Keycloak and an answer from jitd: while
// the outage banner says either is unreachable, the buttons are off and
// say why, instead of failing on click. They come back on by themselves
// when the banner goes.
import type { SessionInfo } from "../api";

/** The outage of `SessionInfo` (the banner's part and words). */
export type Outage = SessionInfo["outage"];

/** Why actions are off now, in words for a button's tooltip; `null`
 *  when they may run (nothing is down). */
export function actionsBlocked(outage: Outage): string | null {
  if (!outage) return null;
  if (outage.part === "keycloak") {
    return "Keycloak is unreachable, so your login cannot be renewed to send this. It turns back on by itself when Keycloak is back.";
  }
  return "jitd is unreachable, so this cannot be sent. It turns back on by itself when jitd is back.";
}

/** The `disabled` and `title` of an action button: off while `busy` (a
 *  call of this card is running) or while `blocked` says why. */
export function actionButton(busy: boolean, blocked: string | null): { disabled: boolean; title?: string } {
  if (blocked) return { disabled: true, title: blocked };
  return { disabled: busy };
}
