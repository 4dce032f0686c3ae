import { describe, expect, it } from "vitest";
import { formatAge, formatCountdown, formatDuration, remainingSecs } from "./time";

describe("remainingSecs", () => {
  const expires = "2030-01-01T12:05:00Z";
  const local = Date.parse("2030-01-01T12:00:00Z");

  it("counts down to expires_at by the server clock", () => {
    expect(remainingSecs(expires, local, 0)).toBe(300);
    expect(remainingSecs(expires, local + 1, 0)).toBe(299);
  });

  it("corrects for a server clock ahead of ours", () => {
    // server is 60 s ahead: only 4 minutes left in server time
    expect(remainingSecs(expires, local, 60_000)).toBe(240);
  });

  it("corrects for a server clock behind ours", () => {
    expect(remainingSecs(expires, local, -30_000)).toBe(330);
  });

  it("is never negative", () => {
    expect(remainingSecs(expires, local + 3_600_000, 0)).toBe(0);
    expect(remainingSecs(expires, local, 10_000_000)).toBe(0);
  });

  it("is null without a readable expiry", () => {
    expect(remainingSecs(null, local, 0)).toBeNull();
    expect(remainingSecs("soon", local, 0)).toBeNull();
  });
});

describe("formatCountdown", () => {
  it("uses the 4m 59s style", () => {
    expect(formatCountdown(299)).toBe("4m 59s");
    expect(formatCountdown(300)).toBe("5m 0s");
    expect(formatCountdown(59)).toBe("59s");
    expect(formatCountdown(0)).toBe("0s");
    expect(formatCountdown(3605)).toBe("1h 0m 5s");
    expect(formatCountdown(2 * 86400 + 3 * 3600 + 4 * 60 + 5)).toBe("2d 3h 4m");
  });

  it("never shows a negative time", () => {
    expect(formatCountdown(-5)).toBe("0s");
  });

  it("composes with remainingSecs and the offset", () => {
    const local = Date.parse("2030-01-01T12:00:00.500Z");
    expect(formatCountdown(remainingSecs("2030-01-01T12:05:00Z", local, 0)!)).toBe("4m 59s");
  });
});

describe("formatDuration and formatAge", () => {
  it("formats durations compactly", () => {
    expect(formatDuration(5400)).toBe("1h30m");
    expect(formatDuration(900)).toBe("15m");
    expect(formatDuration(90)).toBe("1m30s");
    expect(formatDuration(0)).toBe("0s");
  });

  it("tells ages by the server clock", () => {
    const now = Date.parse("2030-01-01T12:00:00Z");
    expect(formatAge("2030-01-01T11:59:30Z", now, 0)).toBe("just now");
    expect(formatAge("2030-01-01T11:57:00Z", now, 0)).toBe("3m ago");
    expect(formatAge("2030-01-01T11:57:00Z", now, 120_000)).toBe("5m ago");
    expect(formatAge("2030-01-01T09:00:00Z", now, 0)).toBe("3h ago");
    expect(formatAge("2029-12-28T12:00:00Z", now, 0)).toBe("4d ago");
  });
});
