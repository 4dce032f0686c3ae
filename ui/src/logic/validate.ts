// Inline validation of the request form. The server checks everything again;
// this only tells the user early, with the same rules (jit-core):
// durations need a unit, are > 0 and ≤ the entitlement's maximum;
// justification length (trimmed, in characters) within bounds; a ticket
// matching the entitlement's pattern when it has one.
import type { EntitlementView } from "../api";
import { formatDuration } from "./time";

export type DurationResult = { ok: true; secs: number } | { ok: false; error: string };

const UNITS: Record<string, number> = {
  s: 1,
  sec: 1,
  secs: 1,
  second: 1,
  seconds: 1,
  m: 60,
  min: 60,
  mins: 60,
  minute: 60,
  minutes: 60,
  h: 3600,
  hr: 3600,
  hrs: 3600,
  hour: 3600,
  hours: 3600,
  d: 86400,
  day: 86400,
  days: 86400,
};

/** Parses `90s`, `45m`, `4h`, `1h30m`, `1h 30m` into seconds. */
export function parseDuration(text: string): DurationResult {
  const t = text.trim().toLowerCase();
  if (t === "") return { ok: false, error: "Enter a duration, e.g. 45m or 1h30m" };
  if (/^\d+$/.test(t)) return { ok: false, error: "Add a unit, e.g. 90s, 45m, 4h" };
  const re = /(\d+)\s*([a-z]+)\s*/gy;
  let total = 0;
  let pos = 0;
  let m: RegExpExecArray | null;
  while (pos < t.length && (m = re.exec(t)) !== null) {
    const unit = UNITS[m[2]];
    if (unit === undefined) return { ok: false, error: `Unknown unit "${m[2]}" (use s, m, h or d)` };
    total += Number(m[1]) * unit;
    pos = re.lastIndex;
  }
  if (pos !== t.length) return { ok: false, error: "Not a duration; use e.g. 90s, 45m, 4h, 1h30m" };
  if (total <= 0) return { ok: false, error: "The duration must be more than zero" };
  return { ok: true, secs: total };
}

export type RequestForm = {
  entitlement: string;
  duration: string;
  justification: string;
  ticket: string;
  urgent: boolean;
};

export type FormErrors = Partial<Record<"entitlement" | "duration" | "justification" | "ticket", string>>;

/** A JS RegExp for the server's ticket pattern, or null if JS cannot read it
 *  (the server still checks it). */
export function ticketRegex(pattern: string | null): RegExp | null {
  if (!pattern) return null;
  const anchored = pattern.startsWith("^") ? pattern : `^(?:${pattern})$`;
  try {
    return new RegExp(anchored, "u");
  } catch {
    return null;
  }
}

/** Human form of the ticket pattern for hints (`^(?:INC-[0-9]+)$` → `INC-[0-9]+`). */
export function ticketHint(pattern: string | null): string {
  if (!pattern) return "";
  const m = /^\^\(\?:(.*)\)\$$/.exec(pattern);
  return m ? m[1] : pattern;
}

export function validateRequest(form: RequestForm, e: EntitlementView | undefined): FormErrors {
  const errors: FormErrors = {};
  if (!e) {
    errors.entitlement = "Choose what you need access to";
    return errors;
  }
  const d = parseDuration(form.duration);
  if (!d.ok) errors.duration = d.error;
  else if (d.secs > e.max_duration_secs)
    errors.duration = `At most ${formatDuration(e.max_duration_secs)} for ${e.display_name}`;

  const n = [...form.justification.trim()].length;
  if (n < e.justification_min)
    errors.justification =
      e.justification_min === 1
        ? "Say why you need it"
        : `At least ${e.justification_min} characters (${n} so far)`;
  else if (n > e.justification_max)
    errors.justification = `At most ${e.justification_max} characters (${n} now)`;

  const ticket = form.ticket.trim();
  if (e.ticket_pattern) {
    if (ticket === "") errors.ticket = `A ticket is required (${ticketHint(e.ticket_pattern)})`;
    else {
      const re = ticketRegex(e.ticket_pattern);
      if (re && !re.test(ticket))
        errors.ticket = `Does not match the ticket pattern ${ticketHint(e.ticket_pattern)}`;
    }
  }
  return errors;
}

export function hasErrors(errors: FormErrors): boolean {
  return Object.values(errors).some((v) => v !== undefined);
}
