import { createContext } from "preact";
import { useCallback, useContext, useEffect, useRef, useState } from "preact/hooks";
import { errorText } from "./api";

export type Loaded<T> = {
  data: T | null;
  error: string | null;
  loading: boolean;
  reload: () => void;
};

/** What each view loaded last (by the `keep` name of its `useLoad`): shown
 *  again when the view is opened while a part is down (the outage banner
 *  marks it stale) instead of an empty view. Only the logged-in user's
 *  data: `App` forgets it all at logout. */
const lastLoaded = new Map<string, unknown>();

/** Forgets every view's last loaded data (at logout, switch user). */
export function forgetLoaded(): void {
  lastLoaded.clear();
}

/** Loads `fetcher()` on mount and whenever `deps` change. Reloads after the
 *  first keep showing the old data (no flicker on each live event). With
 *  `keep`, a view opened again starts from what it loaded last (see
 *  `lastLoaded`) until the fetch answers. */
export function useLoad<T>(fetcher: () => Promise<T>, deps: readonly unknown[], keep?: string): Loaded<T> {
  const [data, setData] = useState<T | null>(() => (keep ? ((lastLoaded.get(keep) as T | undefined) ?? null) : null));
  const [error, setError] = useState<string | null>(null);
  const [loading, setLoading] = useState(true);
  const [nonce, setNonce] = useState(0);
  const seq = useRef(0);
  useEffect(() => {
    const mine = ++seq.current;
    setLoading(true);
    fetcher()
      .then((d) => {
        if (mine !== seq.current) return;
        if (keep) lastLoaded.set(keep, d);
        setData(d);
        setError(null);
      })
      .catch((e: unknown) => {
        if (mine !== seq.current) return;
        setError(errorText(e));
      })
      .finally(() => {
        if (mine === seq.current) setLoading(false);
      });
  }, [...deps, nonce]);
  const reload = useCallback(() => setNonce((n) => n + 1), []);
  return { data, error, loading, reload };
}

/** The current local time in ms, updated every second. */
export function useNow(): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(t);
  }, []);
  return now;
}

/** Why buttons that send something to jitd are off now (the outage
 *  banner's part, in words; see `logic/actions`), `null` when they may
 *  run. Provided by `App`. */
export const ActionsBlocked = createContext<string | null>(null);

/** The reason of {@link ActionsBlocked}. */
export function useActionsBlocked(): string | null {
  return useContext(ActionsBlocked);
}
