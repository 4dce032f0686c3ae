import { describe, expect, it } from "vitest";
import type { EntitlementView } from "../api";
import { hasErrors, parseDuration, ticketHint, validateRequest, type RequestForm } from "./validate";

const ent = (over: Partial<EntitlementView> = {}): EntitlementView => ({
  id: "billing-admin",
  display_name: "Billing admin",
  description: "",
  target: "client role billing-app/billing-admin",
  max_duration_secs: 4 * 3600,
  default_duration_secs: 3600,
  approvals_required: 1,
  ticket_pattern: null,
  justification_min: 10,
  justification_max: 50,
  break_glass: false,
  you_approve: false,
  ...over,
});

const form = (over: Partial<RequestForm> = {}): RequestForm => ({
  entitlement: "billing-admin",
  duration: "1h",
  justification: "Fix the invoice run",
  ticket: "",
  urgent: false,
  ...over,
});

describe("parseDuration", () => {
  it.each([
    ["90s", 90],
    ["45m", 2700],
    ["4h", 14400],
    ["1h30m", 5400],
    ["1h 30m", 5400],
    [" 15m ", 900],
    ["2d", 172800],
    ["10min", 600],
  ])("%s = %i s", (text, secs) => {
    expect(parseDuration(text)).toEqual({ ok: true, secs });
  });

  it.each(["", "30", "1.5h", "abc", "5 parsecs", "0m", "1h-", "h"])("refuses %j", (text) => {
    expect(parseDuration(text).ok).toBe(false);
  });

  it("asks for a unit on a bare number", () => {
    const r = parseDuration("30");
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error).toMatch(/unit/);
  });
});

describe("validateRequest", () => {
  it("accepts a good request", () => {
    expect(hasErrors(validateRequest(form(), ent()))).toBe(false);
  });

  it("needs an entitlement", () => {
    expect(validateRequest(form(), undefined).entitlement).toBeTruthy();
  });

  it("refuses more than the maximum duration", () => {
    const e = validateRequest(form({ duration: "4h1m" }), ent());
    expect(e.duration).toMatch(/At most 4h/);
    expect(validateRequest(form({ duration: "4h" }), ent()).duration).toBeUndefined();
  });

  it("checks justification bounds on trimmed text", () => {
    expect(validateRequest(form({ justification: "   short    " }), ent()).justification).toMatch(
      /At least 10/,
    );
    expect(validateRequest(form({ justification: "x".repeat(51) }), ent()).justification).toMatch(
      /At most 50/,
    );
    expect(validateRequest(form({ justification: "x".repeat(50) }), ent()).justification).toBeUndefined();
  });

  it("requires a ticket matching the pattern", () => {
    const e = ent({ ticket_pattern: "^(?:INC-[0-9]+)$" });
    expect(validateRequest(form(), e).ticket).toMatch(/required/);
    expect(validateRequest(form({ ticket: "INC-x" }), e).ticket).toMatch(/INC-\[0-9\]\+/);
    expect(validateRequest(form({ ticket: "XINC-12" }), e).ticket).toBeTruthy();
    expect(validateRequest(form({ ticket: " INC-42 " }), e).ticket).toBeUndefined();
  });

  it("anchors an unanchored pattern and tolerates patterns JS cannot read", () => {
    expect(validateRequest(form({ ticket: "INC-1 extra" }), ent({ ticket_pattern: "INC-[0-9]+" })).ticket).toBeTruthy();
    expect(validateRequest(form({ ticket: "anything" }), ent({ ticket_pattern: "(?P<x>a" })).ticket).toBeUndefined();
  });

  it("shows a readable ticket hint", () => {
    expect(ticketHint("^(?:INC-[0-9]+)$")).toBe("INC-[0-9]+");
  });
});
