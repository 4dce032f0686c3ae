// Inline validation of the request form. The server checks everything again;
// this only tells the user early, with the same rules (jit-core):
// durations need a unit, are > 0 and ≤ the entitlement's maximum;
// justification length (trimmed, in characters) within bounds; a ticket
// matching the entitlement's pattern when it has one.
import type { EntitlementView } from "../api";
import grammar from "./duration-grammar.json";
import { formatDuration } from "./time";

export type DurationResult = { ok: true; secs: number } | { ok: false; error: string };

// The duration grammar of jit-core (crates/jit-core/src/duration.rs): its
// units and limit come from the file jit-core writes, and the Vitest runs
// jit-core's own table of cases, so the app and the server agree.
type Unit = { names: string[]; secs: number };
const UNITS: Unit[] = grammar.units;
const MAX_SECS: number = grammar.max_secs;
const PART = /^([0-9]*)([.,]?)( *)([A-Za-z]*)( *)/;

/** Parses `90s`, `45m`, `4h`, `1h30m`, `1h 30m` into seconds: units s, m,
 *  h, d (lower case, also spelt out), each once, largest first. */
export function parseDuration(text: string): DurationResult {
  const fail = (error: string): DurationResult => ({ ok: false, error });
  const t = text.trim();
  if (t === "") return fail("Enter a duration, e.g. 45m or 1h30m");
  let rest = t;
  let total = 0;
  let last = -1;
  while (rest.length > 0) {
    const m = PART.exec(rest) as RegExpExecArray;
    const [all, digits, fraction, , unit] = m;
    if (digits === "") return fail("Not a duration; use e.g. 90s, 45m, 4h or 1h30m");
    if (fraction !== "") return fail("Whole numbers only, e.g. 90m instead of 1.5h");
    if (unit === "")
      return fail(rest === t && all === t ? "Add a unit, e.g. 90s, 45m, 4h" : `"${digits}" needs a unit (s, m, h or d)`);
    const u = UNITS.findIndex((x) => x.names.includes(unit));
    if (u < 0) {
      const lower = unit.toLowerCase();
      return fail(
        UNITS.some((x) => x.names.includes(lower))
          ? `Units are lower case: write "${lower}" instead of "${unit}"`
          : `Unknown unit "${unit}"; use s, m, h or d`,
      );
    }
    if (u === last) return fail(`The unit "${UNITS[u].names[0]}" appears twice; write each unit once, e.g. 1h30m`);
    if (u < last) return fail("Put the largest unit first (d, h, m, s), e.g. 1h30m");
    last = u;
    const n = Number(digits);
    if (n > MAX_SECS) return fail("Too large");
    total += n * UNITS[u].secs;
    if (total > MAX_SECS) return fail(`Too large: at most ${MAX_SECS / 86400}d`);
    rest = rest.slice(all.length);
  }
  if (total <= 0) return fail("The duration must be more than zero");
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

/** An example ticket that matches `pattern`, for hints people read
 *  (`^(?:INC-[0-9]+)$` → `INC-1234`): literals are kept, classes and
 *  escapes become sample characters, the first alternative is used. Falls
 *  back to "a ticket id" when the example would not match (never shows the
 *  regular expression itself). */
export function ticketExample(pattern: string | null): string {
  if (!pattern) return "";
  let p = pattern.replace(/^\^/, "").replace(/\$$/, "");
  // Groups: keep the first alternative of each (innermost first).
  for (let i = 0; i < 10 && /\((\?:)?([^()]*)\)/.test(p); i++)
    p = p.replace(/\((?:\?:)?([^()]*)\)/g, (_m, inner: string) => inner.split("|")[0]);
  p = p.split("|")[0];
  const sample = (cls: string): string => {
    if (/0-9|\\d/.test(cls)) return "1";
    if (/A-Z/.test(cls)) return "A";
    if (/a-z/.test(cls)) return "a";
    const lit = cls.replace(/\\/g, "")[0];
    return lit ?? "x";
  };
  let out = "";
  let i = 0;
  while (i < p.length) {
    let unit: string;
    const c = p[i];
    if (c === "[") {
      const end = p.indexOf("]", i);
      if (end < 0) break;
      unit = sample(p.slice(i + 1, end));
      i = end + 1;
    } else if (c === "\\") {
      const e = p[i + 1] ?? "";
      unit = e === "d" ? "1" : e === "w" ? "a" : e === "s" ? " " : e;
      i += 2;
    } else if (c === ".") {
      unit = "x";
      i += 1;
    } else {
      unit = c;
      i += 1;
    }
    // Quantifier.
    const q = /^(\{(\d+)(,(\d*))?\}|[+*?])/.exec(p.slice(i));
    let times = 1;
    if (q) {
      i += q[0].length;
      if (q[0] === "+") times = /\d/.test(unit) ? 4 : 3;
      else if (q[0] === "*") times = /\d/.test(unit) ? 4 : 3;
      else if (q[0] === "?") times = 1;
      else times = Math.max(1, Number(q[2]));
    }
    if (/\d/.test(unit) && times > 1) {
      out += "1234567890".repeat(4).slice(0, times);
    } else out += unit.repeat(times);
  }
  const re = ticketRegex(pattern);
  return out && re && re.test(out) ? out : "a ticket id";
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
    const example = ticketExample(e.ticket_pattern);
    if (ticket === "") errors.ticket = `A ticket is required (e.g. ${example})`;
    else {
      const re = ticketRegex(e.ticket_pattern);
      if (re && !re.test(ticket)) errors.ticket = `Not a ticket id of the expected form (e.g. ${example})`;
    }
  }
  return errors;
}

export function hasErrors(errors: FormErrors): boolean {
  return Object.values(errors).some((v) => v !== undefined);
}
