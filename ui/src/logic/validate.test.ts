import { describe, expect, it } from "vitest";
import type { EntitlementView } from "../api";
import grammar from "./duration-grammar.json";
import { hasErrors, parseDuration, ticketExample, validateRequest, type RequestForm } from "./validate";

const ent = (over: Partial<EntitlementView> = {}): EntitlementView => ({
  id: "billing-admin",
  display_name: "Billing admin",
  description: "",
  target: "client role billing-app/billing-admin",
  max_duration_secs: 4 * 3600,
  default_duration_secs: 3600,
  max_total_duration_secs: 16 * 3600,
  approvals_required: 1,
  ticket_pattern: null,
  justification_min: 10,
  justification_max: 50,
  break_glass: false,
  you_approve: false,
  available: true,
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
  // jit-core's own table (crates/jit-core/src/duration.rs, CASES).
  it.each(grammar.cases.map((c) => [c.input, c.secs] as const))("%j → %s", (text, secs) => {
    const r = parseDuration(text);
    if (secs === null) expect(r.ok, JSON.stringify(r)).toBe(false);
    else expect(r).toEqual({ ok: true, secs });
  });

  it("has cases to run", () => {
    expect(grammar.cases.length).toBeGreaterThan(20);
    expect(grammar.cases.some((c) => c.input === "5m5m" && c.secs === null)).toBe(true);
  });

  it("says what to do", () => {
    const why = (t: string) => {
      const r = parseDuration(t);
      return r.ok ? "" : r.error;
    };
    expect(why("30")).toMatch(/unit/);
    expect(why("5m5m")).toMatch(/twice/);
    expect(why("5M")).toMatch(/lower case/);
    expect(why("30m1h")).toMatch(/largest unit first/);
    expect(why("1.5h")).toMatch(/Whole numbers/);
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
    expect(validateRequest(form({ ticket: "INC-x" }), e).ticket).toMatch(/e\.g\. INC-1234/);
    expect(validateRequest(form({ ticket: "INC-x" }), e).ticket).not.toMatch(/\[0-9\]/);
    expect(validateRequest(form({ ticket: "XINC-12" }), e).ticket).toBeTruthy();
    expect(validateRequest(form({ ticket: " INC-42 " }), e).ticket).toBeUndefined();
  });

  it("anchors an unanchored pattern and tolerates patterns JS cannot read", () => {
    expect(validateRequest(form({ ticket: "INC-1 extra" }), ent({ ticket_pattern: "INC-[0-9]+" })).ticket).toBeTruthy();
    expect(validateRequest(form({ ticket: "anything" }), ent({ ticket_pattern: "(?P<x>a" })).ticket).toBeUndefined();
  });

  it("shows an example ticket, never the regular expression", () => {
    const cases: [string, string][] = [
      ["^(?:INC-[0-9]+)$", "INC-1234"],
      ["INC-[0-9]+", "INC-1234"],
      ["^(?:(INC|CHG)-\\d{5})$", "INC-12345"],
      ["^[A-Z]{2,4}-[0-9]{3}$", "AA-123"],
      ["^JIRA-[a-z]+$", "JIRA-aaa"],
    ];
    for (const [pattern, example] of cases) {
      expect(ticketExample(pattern)).toBe(example);
      expect(new RegExp(pattern.startsWith("^") ? pattern : `^(?:${pattern})$`).test(example)).toBe(true);
    }
    // Too clever to imitate: a plain phrase instead of the pattern.
    expect(ticketExample("^(?=X)Y$")).toBe("a ticket id");
  });
});
