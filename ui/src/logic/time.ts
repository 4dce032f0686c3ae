// Countdowns and ages, corrected for the difference between the server's
// clock and ours (`offset_ms` = server − local, from `server_clock`).

/** Seconds left until `expiresAt` by the server's clock; never negative.
 *  `null` when there is no expiry or it cannot be read. */
export function remainingSecs(
  expiresAt: string | null | undefined,
  localNowMs: number,
  offsetMs: number,
): number | null {
  if (!expiresAt) return null;
  const end = Date.parse(expiresAt);
  if (Number.isNaN(end)) return null;
  const serverNow = localNowMs + offsetMs;
  return Math.max(0, Math.floor((end - serverNow) / 1000));
}

/** `4m 59s`, `1h 0m 5s`, `2d 3h 4m`, `42s`, `0s`. Negative counts as 0. */
export function formatCountdown(secs: number): string {
  let s = Math.max(0, Math.floor(secs));
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  if (d > 0) return `${d}d ${h}h ${m}m`;
  if (h > 0) return `${h}h ${m}m ${s}s`;
  if (m > 0) return `${m}m ${s}s`;
  return `${s}s`;
}

/** Compact duration as the server writes it: `1h30m`, `15m`, `90s` → `1m30s`. */
export function formatDuration(secs: number): string {
  if (secs <= 0) return "0s";
  let s = Math.floor(secs);
  let out = "";
  for (const [unit, n] of [
    ["d", 86400],
    ["h", 3600],
    ["m", 60],
    ["s", 1],
  ] as const) {
    if (s >= n) {
      out += `${Math.floor(s / n)}${unit}`;
      s %= n;
    }
  }
  return out;
}

/** How long ago `at` was, by the server's clock: `just now`, `3m ago`, `2h ago`, `4d ago`. */
export function formatAge(at: string, localNowMs: number, offsetMs: number): string {
  const t = Date.parse(at);
  if (Number.isNaN(t)) return "";
  const secs = Math.max(0, Math.floor((localNowMs + offsetMs - t) / 1000));
  if (secs < 60) return "just now";
  if (secs < 3600) return `${Math.floor(secs / 60)}m ago`;
  if (secs < 86400) return `${Math.floor(secs / 3600)}h ago`;
  return `${Math.floor(secs / 86400)}d ago`;
}

/** Local date and time for tables, e.g. `2025-01-31 14:05:09`. */
export function formatTimestamp(at: string): string {
  const d = new Date(at);
  if (Number.isNaN(d.getTime())) return at;
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(
    d.getMinutes(),
  )}:${p(d.getSeconds())}`;
}
