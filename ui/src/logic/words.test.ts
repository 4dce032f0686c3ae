import { describe, expect, it } from "vitest";
import { createdWarnings, dropQuestion, eventLabel, humanReason, statusChange } from "./words";

describe("audit words", () => {
  it("names events in words", () => {
    expect(eventLabel("grant.extended")).toBe("Extended");
    expect(eventLabel("grant.granted")).toBe("Access granted");
    expect(eventLabel("request.created")).toBe("Requested");
    expect(eventLabel("break_glass.used")).toBe("Break glass used");
  });

  it("omits a change that is no change", () => {
    expect(statusChange("active", "active")).toBe("");
    expect(statusChange(null, "pending")).toBe("new → pending");
    expect(statusChange("pending", "approved")).toBe("pending → approved");
    expect(statusChange(null, null)).toBe("");
  });

  it("shortens ids and timestamps in reasons", () => {
    expect(
      humanReason("extension 0d8bff88-1c2b-4a53-9b58-aa0c2f6d9e01 approved; expires_at 2030-01-01T12:10:00.123456Z"),
    ).toBe("extension 0d8bff88 approved; expires_at 2030-01-01 12:10");
    expect(humanReason(null)).toBe("");
  });
});

describe("warnings of a request just created", () => {
  it("are jitd's sentences, none when it gave none", () => {
    expect(createdWarnings({})).toEqual([]);
    expect(createdWarnings({ warnings: [] })).toEqual([]);
    expect(
      createdWarnings({
        warnings: [{ code: "no_eligible_approver", message: "nobody besides you may approve it" }],
      }),
    ).toEqual(["nobody besides you may approve it"]);
  });
});

describe("drop question", () => {
  it("says when a drop also ends the Keycloak sessions", () => {
    expect(dropQuestion({ entitlement_name: "Prod DB", ends_sessions: false })).toBe(
      "Drop Prod DB now? Your access ends at once.",
    );
    expect(dropQuestion({ entitlement_name: "Break glass", ends_sessions: true })).toBe(
      "Drop Break glass now? Your access ends at once. It also ends your Keycloak sessions: you will have to log in again.",
    );
  });
});
