import { describe, expect, it } from "vitest";
import { actionButton, actionsBlocked } from "./actions";

describe("actions while a part is down", () => {
  it("are on when nothing is down", () => {
    expect(actionsBlocked(null)).toBeNull();
    expect(actionButton(false, actionsBlocked(null))).toEqual({ disabled: false });
    expect(actionButton(true, actionsBlocked(null))).toEqual({ disabled: true });
  });

  it("are off with the reason in words while Keycloak is unreachable", () => {
    const why = actionsBlocked({ part: "keycloak", message: "Keycloak is unreachable (http://kc)." });
    expect(why).toContain("Keycloak is unreachable");
    expect(why).toContain("login cannot be renewed");
    expect(why).toContain("back");
    expect(actionButton(false, why)).toEqual({ disabled: true, title: why });
  });

  it("are off with the reason in words while jitd is unreachable", () => {
    const why = actionsBlocked({ part: "jitd", message: "jitd cannot be reached" });
    expect(why).toContain("jitd is unreachable");
    expect(actionButton(false, why).disabled).toBe(true);
    expect(actionButton(false, why).title).toBe(why);
  });

  it("come back on when the outage is over", () => {
    const down = actionButton(false, actionsBlocked({ part: "keycloak", message: "x" }));
    const back = actionButton(false, actionsBlocked(null));
    expect(down.disabled).toBe(true);
    expect(back).toEqual({ disabled: false });
  });
});
