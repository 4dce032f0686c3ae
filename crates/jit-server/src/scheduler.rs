//! The scheduler: reads what is due from the store and does it.
//!
//! It holds no state that matters across a restart: on every tick it asks
//! the store what is due — pending requests past their TTL, approved
//! requests whose start has come, active grants past `expires_at`, ended
//! grants whose role is still in Keycloak — and works through it.
//!
//! Keycloak work runs in parallel, bounded by
//! [`SchedulerConfig::keycloak_concurrency`] workers talking to Keycloak at
//! once ([`crate::permits`]: due removals get a slot first, then grants
//! already under way, then new grants — places taken when the tick hands
//! the work out, so a removal never waits for grants of the same tick; a
//! worker gives its slot back while it waits for the store, whose changes
//! are group-committed, [`crate::commit_batch`]). The tick reads what its
//! workers start from in one store round trip for all of them
//! ([`crate::store::SqlStore::work_views`]), after it marked their
//! assignments busy; a burst of grants of one target decides ownership from
//! one read of the target's direct holders ([`batched_held`]). On a shared
//! database (several replicas) a tick claims only what its replica can
//! start soon and claims more as its Keycloak slots free up
//! ([`Scheduler::claim_budget`]), so the replicas share a burst. Work is
//! ordered per assignment (user + target): one
//! worker per assignment at a time, doing its removals before its
//! activations, so a grant and a removal of the same role never race.
//! Every Keycloak call has a time limit
//! ([`SchedulerConfig::keycloak_call_timeout_secs`]), so a hung call holds
//! up only its own assignment; a failure in one item never stops the rest.
//!
//! Failures (see [`KeycloakError::is_transient`]):
//! - transient (refused connection, timeout, 5xx, 429): retried with
//!   backoff (1 s doubling to 10 s), shown on the grant (`last_error`,
//!   `revoke_late`). A connection-level failure marks Keycloak down: no
//!   more items are sent, a readiness probe runs every 100 ms, and when
//!   Keycloak answers again every waiting item becomes due at once.
//!   Not forever: a grant not applied within its window ([`window_end`])
//!   or after [`SchedulerConfig::grant_retry_limit_secs`] of retrying ends
//!   `failed` ("gave up …"); a removal becomes `removal_failed` after
//!   [`SchedulerConfig::removal_retry_limit_secs`] of retrying. Retrying
//!   time is [`retried_secs`]: the sum of the backoff waits, so time while
//!   Keycloak is down as a whole (only the probe runs) or jitd is stopped
//!   does not count.
//! - permanent (404, 403, 400): a grant ends `failed` with Keycloak's
//!   reason; a removal whose user or target is gone is complete (nothing
//!   is left to remove); a removal Keycloak forbids is marked
//!   `removal_failed` and left to an administrator. Nothing is retried
//!   forever on a permanent answer.
//!
//! Order of a grant: re-check the policy and the requester's eligibility
//! (Keycloak's current enabled state, and the roles and groups the
//! entitlement's requester rule names), decide and persist whether JIT
//! owns the assignment, assign in Keycloak (idempotent), then mark the
//! request active. Order of a removal: the request is ended with
//! `removal_pending`, the role is removed in Keycloak (exactly the one role
//! or membership; idempotent), the user's sessions are ended if the policy
//! says so (offline sessions too), then `removal_pending` is cleared. A
//! crash between any two steps is finished on the next tick.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use jit_core::{DomainError, EntitlementKind, Principal, Status, Transition};
use jit_keycloak::{KeycloakError, TargetStatus};
use serde::Deserialize;

use crate::commit_batch::{CommitBatcher, ReleaseBatcher};
use crate::permits::{Permits, Priority};
use crate::store::{AuditRecord, Entry, EventKind, Note, StoreError, Stored, WorkView};
use crate::AppState;

/// `[scheduler]` in jitd's config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Grants and removals worked on at once (each makes its Keycloak calls
    /// one after the other). Default 12.
    pub keycloak_concurrency: usize,
    /// Longest wait for one Keycloak call, seconds; a call that takes longer
    /// counts as a transient failure. Default 10.
    pub keycloak_call_timeout_secs: u64,
    /// A grant that keeps failing transiently is given up (`failed`) after
    /// this many seconds of retrying ([`retried_secs`]). Default 900. A
    /// grant is also given up when its window ([`window_end`]) ends first.
    pub grant_retry_limit_secs: u64,
    /// A removal that keeps failing transiently becomes `removal_failed`
    /// (for an administrator) after this many seconds of retrying
    /// ([`retried_secs`]). Default 3600.
    pub removal_retry_limit_secs: u64,
    /// How often active grants are checked against the realm's disabled
    /// users, seconds (at least 1): a grant whose requester is disabled in
    /// Keycloak is revoked by jitd and its assignment removed
    /// ([`end_open_requests_of_disabled_requesters`]). Default 30.
    pub disabled_check_secs: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            keycloak_concurrency: 12,
            keycloak_call_timeout_secs: 10,
            grant_retry_limit_secs: 900,
            removal_retry_limit_secs: 3600,
            disabled_check_secs: 30,
        }
    }
}

/// How long the readiness probe waits after a failed probe before the
/// next, while Keycloak is down (a refused connection costs ~0.2 ms).
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// The same while Keycloak refuses the service account's login.
const PROBE_EVERY_LOGIN_REFUSED: Duration = Duration::from_secs(5);
/// How often entitlement targets are re-checked in Keycloak.
const TARGET_CHECK_EVERY: Duration = Duration::from_secs(60);
/// With Keycloak taken for up, how long without any answer from it before
/// the scheduler asks it (the readiness call) whether it still answers: an
/// idle jitd notices a stopped or hung Keycloak within this plus
/// `keycloak_call_timeout_secs` (and its scheduler's pass: while the store
/// answers), and `/healthz` says so.
const LIVENESS_EVERY: Duration = Duration::from_secs(10);

/// The scheduler's in-memory coordination (nothing here needs to survive a
/// restart: the store says what is due).
pub struct Scheduler {
    config: SchedulerConfig,
    /// Slots for Keycloak work, removals served first.
    permits: Arc<Permits>,
    /// Group commit of the workers' store changes.
    commits: CommitBatcher,
    /// Group release of finished work's claims (several replicas).
    releases: ReleaseBatcher,
    /// Assignments (user + target) with a worker right now.
    busy: Mutex<HashSet<String>>,
    /// Requests handed to a worker and not finished.
    in_flight: Mutex<HashSet<String>>,
    /// A tick skipped due work because its assignment was busy: the next
    /// worker to finish wakes the scheduler.
    deferred: AtomicBool,
    /// A tick left due work unclaimed because this replica had claimed as
    /// much as it can start soon ([`Scheduler::claim_budget`]): the
    /// scheduler claims more as soon as Keycloak slots free up.
    more_due: AtomicBool,
    /// The last read of each target's direct holders (target key → the
    /// tick that made it, the read), shared by the grants of a burst
    /// ([`batched_held`]).
    holders: Mutex<std::collections::HashMap<String, (u64, Arc<HolderRead>)>>,
    /// Ticks that handed out grants deciding ownership from a shared read.
    ticks: std::sync::atomic::AtomicU64,
    /// The last read of the realm's disabled users (when it was started,
    /// the read), shared by the grants of entitlements anyone may request
    /// ([`shared_disabled`]).
    disabled: Mutex<Option<(Instant, Arc<DisabledRead>)>>,
    /// When the scheduler's current sleep ends (work due earlier must wake it).
    sleep_until: Mutex<Option<DateTime<Utc>>>,
    /// A connection-level failure was seen; only the probe talks to
    /// Keycloak until it answers.
    down: AtomicBool,
    /// The probe failed at least once in this outage (so recovery makes all
    /// waiting work due at once).
    probe_failed: AtomicBool,
    /// The last failure while down was Keycloak refusing the service
    /// account's login (wrong client id or secret), not a network one.
    login_refused: AtomicBool,
    probing: AtomicBool,
    /// A liveness check ([`LIVENESS_EVERY`]) is under way.
    checking_liveness: AtomicBool,
    /// When Keycloak last answered, on the monotonic clock (the liveness
    /// check's quiet time; a wall-clock step does not move it).
    answered_instant: Mutex<Option<Instant>>,
    last_target_check: Mutex<Option<Instant>>,
    /// When the last check of active grants against the disabled users
    /// started ([`spawn_disabled_check`]).
    last_disabled_check: Mutex<Option<Instant>>,
    /// A check of open requests against the disabled users is under way.
    checking_disabled: AtomicBool,
    /// How many such checks have finished since start (any outcome).
    disabled_checks_finished: AtomicU64,
    /// The last such check could not read Keycloak (said once at WARN).
    disabled_check_failing: AtomicBool,
    /// When Keycloak last answered a call of jitd's (any answer, even a
    /// refusal), unix milliseconds UTC; 0 = not yet.
    answered_at_ms: std::sync::atomic::AtomicI64,
}

impl Scheduler {
    /// The group commits hand the rows they write to `hub`
    /// ([`CommitBatcher::hand_to`]).
    pub fn hand_commits_to(&self, hub: Arc<crate::events::Hub>) {
        self.commits.hand_to(hub);
    }

    /// A scheduler with `config` (concurrency at least 1).
    pub fn new(mut config: SchedulerConfig) -> Scheduler {
        config.keycloak_concurrency = config.keycloak_concurrency.max(1);
        config.keycloak_call_timeout_secs = config.keycloak_call_timeout_secs.max(1);
        config.disabled_check_secs = config.disabled_check_secs.max(1);
        Scheduler {
            permits: Permits::new(config.keycloak_concurrency),
            commits: CommitBatcher::default(),
            releases: ReleaseBatcher::default(),
            config,
            busy: Mutex::new(HashSet::new()),
            in_flight: Mutex::new(HashSet::new()),
            deferred: AtomicBool::new(false),
            more_due: AtomicBool::new(false),
            holders: Mutex::new(Default::default()),
            ticks: Default::default(),
            disabled: Mutex::new(None),
            sleep_until: Mutex::new(None),
            down: AtomicBool::new(false),
            probe_failed: AtomicBool::new(false),
            login_refused: AtomicBool::new(false),
            probing: AtomicBool::new(false),
            checking_liveness: AtomicBool::new(false),
            answered_instant: Mutex::new(None),
            last_target_check: Mutex::new(None),
            last_disabled_check: Mutex::new(None),
            checking_disabled: AtomicBool::new(false),
            disabled_checks_finished: AtomicU64::new(0),
            disabled_check_failing: AtomicBool::new(false),
            answered_at_ms: Default::default(),
        }
    }

    /// When Keycloak last answered a call of jitd's (UTC); `None` before
    /// the first answer. While Keycloak is taken for up, an idle jitd asks
    /// it at least every [`LIVENESS_EVERY`], so an older instant means
    /// that question is waiting for its answer.
    pub fn keycloak_answered_at(&self) -> Option<DateTime<Utc>> {
        match self.answered_at_ms.load(Ordering::SeqCst) {
            0 => None,
            ms => DateTime::from_timestamp_millis(ms),
        }
    }

    /// How many checks of open requests against Keycloak's disabled users
    /// have finished since jitd started, whatever their outcome (the first
    /// runs right after start).
    pub fn disabled_checks_finished(&self) -> u64 {
        self.disabled_checks_finished.load(Ordering::SeqCst)
    }

    /// Whether jitd currently considers Keycloak unreachable.
    pub fn keycloak_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    /// Keycloak as the scheduler sees it, for `/healthz`: `ok`,
    /// `unreachable` (no answer, timeouts, 502–504), or `login_refused`
    /// (Keycloak answers but refuses jitd's service account: its client id
    /// or secret is wrong). Grants and removals wait while it is not `ok`.
    pub fn keycloak_state(&self) -> &'static str {
        if !self.keycloak_down() {
            "ok"
        } else if self.login_refused.load(Ordering::SeqCst) {
            "login_refused"
        } else {
            "unreachable"
        }
    }

    /// Requests being worked on right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Something becomes due at `t`: wakes the scheduler if it would
    /// otherwise sleep past it.
    fn due_at(&self, state: &AppState, t: DateTime<Utc>) {
        let until = *self.sleep_until.lock().unwrap_or_else(|p| p.into_inner());
        if until.is_none_or(|u| t < u) {
            state.wake.notify_one();
        }
    }

    fn call_timeout(&self) -> Duration {
        Duration::from_secs(self.config.keycloak_call_timeout_secs)
    }

    /// How many more due items this replica claims now (several replicas
    /// on one database): [`CLAIM_AHEAD`] × `keycloak_concurrency`, less
    /// the work that holds or waits for a Keycloak slot here already
    /// ([`Permits::load`]). Work waiting only for its store commit does not
    /// count: its Keycloak call is done. So a burst is shared by the
    /// replicas (each claims what it can start soon, and more as its slots
    /// free up) instead of going to the first replica that looks.
    fn claim_budget(&self) -> usize {
        (CLAIM_AHEAD * self.config.keycloak_concurrency).saturating_sub(self.permits.load())
    }

    /// Resolves when this replica should claim more of the due work a tick
    /// left over: its load fell to [`Scheduler::refill_at`] or below.
    async fn room_to_claim(&self) {
        loop {
            let freed = self.permits.freed();
            if self.permits.load() <= self.refill_at() {
                return;
            }
            freed.await;
        }
    }

    /// The load ([`Permits::load`]) at or below which a replica with due
    /// work left over claims more: one concurrency's worth of room, so one
    /// tick claims that many items (a tick is several store round trips),
    /// while the slots still have as many waiting for them.
    fn refill_at(&self) -> usize {
        (CLAIM_AHEAD - 1) * self.config.keycloak_concurrency
    }
}

/// A replica claims at most this many times `keycloak_concurrency` items
/// ahead of its free Keycloak slots ([`Scheduler::claim_budget`]): enough
/// that the slots stay busy while a refill tick runs (its store round
/// trips took 20–300 ms on the loaded 2-core machine, while 12 slots work
/// through about 30 removals in 100 ms), few enough that replicas share a
/// burst of a few hundred.
const CLAIM_AHEAD: usize = 5;

/// A claim is first tried on this many times its budget of the due ids
/// (removals first), then, if that did not fill the budget, on the rest:
/// each id given costs the claim statement a check, and a refill in a
/// burst of 1,000 claims one concurrency's worth.
const CLAIM_LOOKS_AT: usize = 3;

/// Whether an error says Keycloak as a whole is unreachable (not just this
/// item): then the probe takes over.
fn is_outage(e: &KeycloakError) -> bool {
    matches!(
        e,
        KeycloakError::Unavailable(_) | KeycloakError::Timeout(_) | KeycloakError::Login(_)
    ) || matches!(e, KeycloakError::Status { status, .. } if matches!(status, 502..=504))
}

/// A worker's hold on a Keycloak slot ([`Permits`]): taken at its first
/// Keycloak call, given back while it waits for the store (group commit),
/// taken again — ahead of new work — for its next call.
struct Slot {
    permit: Option<crate::permits::Permit>,
    /// The place in the slot queues taken when the tick handed out the
    /// work (so removals handed out first are served first), until used.
    ticket: Option<crate::permits::Ticket>,
    /// The job takes access away.
    removal: bool,
    /// The job already held a slot once.
    resumed: bool,
    /// Where the current item's time went (logged at debug level).
    spent: Spent,
    /// Items whose claim their last write gave back ([`commit_last`]):
    /// the worker does not release them again.
    released: HashSet<String>,
}

/// Time one scheduler item spent in each phase, for the debug line
/// `scheduler step timings` (profiling bursts).
#[derive(Default, Clone, Copy)]
struct Spent {
    slot_wait: Duration,
    keycloak: Duration,
    keycloak_calls: u32,
    store_read: Duration,
    commit: Duration,
}

/// Adds to the current worker's [`Spent`] (nothing outside a worker).
fn spend(f: impl FnOnce(&mut Spent)) {
    let _ = SLOT.try_with(|s| f(&mut s.borrow_mut().spent));
}

/// A store read inside a worker, timed.
async fn read<T>(fut: impl Future<Output = T>) -> T {
    let t = Instant::now();
    let r = fut.await;
    spend(|s| s.store_read += t.elapsed());
    r
}

tokio::task_local! {
    static SLOT: std::cell::RefCell<Slot>;
}

/// Inside a scheduler worker: waits for a Keycloak slot unless it holds
/// one. Elsewhere (API handlers, target checks): nothing.
async fn ensure_slot(state: &AppState) {
    let ticket = SLOT
        .try_with(|s| {
            let mut s = s.borrow_mut();
            if s.permit.is_none() {
                s.ticket.take()
            } else {
                None
            }
        })
        .ok()
        .flatten();
    if let Some(ticket) = ticket {
        let t = Instant::now();
        let permit = ticket.wait().await;
        spend(|s| s.slot_wait += t.elapsed());
        let _ = SLOT.try_with(|s| {
            let mut s = s.borrow_mut();
            s.permit = Some(permit);
            s.resumed = true;
        });
        return;
    }
    let wanted = SLOT
        .try_with(|s| {
            let s = s.borrow();
            s.permit.is_none().then_some(if s.removal {
                Priority::Removal
            } else if s.resumed {
                Priority::Resume
            } else {
                Priority::Other
            })
        })
        .ok()
        .flatten();
    if let Some(p) = wanted {
        let t = Instant::now();
        let permit = state.scheduler.permits.acquire(p).await;
        spend(|s| s.slot_wait += t.elapsed());
        let _ = SLOT.try_with(|s| {
            let mut s = s.borrow_mut();
            s.permit = Some(permit);
            s.resumed = true;
        });
    }
}

/// Inside a scheduler worker: gives its Keycloak slot back (while it waits
/// for something else).
fn release_slot() {
    let _ = SLOT.try_with(|s| {
        let mut s = s.borrow_mut();
        s.permit = None;
        // A place not used yet is given up too (the next call queues anew,
        // ahead of new work).
        s.ticket = None;
    });
}

/// Inside a scheduler worker: gives its Keycloak slot, or its place in
/// the queue for one, back while it waits for something that takes none;
/// its next Keycloak call then queues as work under way
/// ([`Priority::Resume`]), ahead of work not started yet (whose places
/// may belong to workers not waiting for them yet).
fn step_aside() {
    release_slot();
    let _ = SLOT.try_with(|s| s.borrow_mut().resumed = true);
}

/// Whether this task is a scheduler worker.
fn in_worker() -> bool {
    SLOT.try_with(|_| ()).is_ok()
}

/// Runs one Keycloak call with the per-call time limit, and keeps the
/// up/down picture current. In a scheduler worker the call first waits for
/// a Keycloak slot, and is not sent at all while Keycloak is down (only the
/// readiness probe talks to it then; the item stays due).
pub async fn call<T>(
    state: &AppState,
    fut: impl Future<Output = Result<T, KeycloakError>>,
) -> Result<T, KeycloakError> {
    ensure_slot(state).await;
    if in_worker() && state.scheduler.keycloak_down() {
        return Err(KeycloakError::Unavailable(
            "not sent: Keycloak is unreachable (waiting for it to answer again)".into(),
        ));
    }
    let limit = state.scheduler.call_timeout();
    let t = Instant::now();
    let r = match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(KeycloakError::Timeout(limit.as_secs())),
    };
    spend(|s| {
        s.keycloak += t.elapsed();
        s.keycloak_calls += 1;
    });
    match &r {
        Err(e) if is_outage(e) => keycloak_failed(state, e),
        // Any answer from Keycloak (even a 404) means it is up.
        _ => keycloak_answered(state).await,
    }
    r
}

/// Whether `e` is Keycloak as a whole out of reach for jitd (no answer,
/// timeouts, 502–504, or its service account's login refused), not a
/// refusal of one call.
pub fn is_keycloak_outage(e: &KeycloakError) -> bool {
    is_outage(e)
}

/// Keycloak failed a call of jitd's as a whole ([`is_keycloak_outage`]):
/// Keycloak work pauses and only the readiness probe (started by the
/// scheduler's next pass, which this wakes) talks to it until it answers.
/// Said once per outage: at ERROR when the service account's login is
/// refused (it does not mend itself), else at WARN.
pub fn keycloak_failed(state: &AppState, e: &KeycloakError) {
    let refused = matches!(e, KeycloakError::Login(_));
    state
        .scheduler
        .login_refused
        .store(refused, Ordering::SeqCst);
    if !state.scheduler.down.swap(true, Ordering::SeqCst) {
        if refused {
            tracing::error!(error = %e, "Keycloak refuses jitd's service account (check [keycloak] backend_client_id and its secret); pausing Keycloak work until it logs in");
        } else {
            tracing::warn!(error = %e, "Keycloak unreachable; pausing Keycloak work until it answers");
        }
        state.wake.notify_one();
    }
}

/// Keycloak answered: if it was down and the probe had failed, every
/// waiting item becomes due now instead of at its own backoff timer.
async fn keycloak_answered(state: &AppState) {
    let s = &state.scheduler;
    s.answered_at_ms
        .fetch_max(Utc::now().timestamp_millis(), Ordering::SeqCst);
    *s.answered_instant.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    if s.down.swap(false, Ordering::SeqCst) {
        // A read of the disabled users that failed with the outage does
        // not stand for the grants after it.
        *s.disabled.lock().unwrap_or_else(|p| p.into_inner()) = None;
        // The grant-ends writer paused too.
        state.grant_ends.wake_up();
        if s.probe_failed.swap(false, Ordering::SeqCst) {
            match state.store.clear_backoff().await {
                Ok(n) => tracing::info!(
                    retry_timers_cleared = n,
                    "Keycloak answers again; all waiting work is due now"
                ),
                Err(e) => tracing::error!(error = %e, "cannot clear retry timers"),
            }
        }
        state.wake.notify_one();
    }
}

/// Marks `s` ended with transition `t`; if JIT may have assigned something
/// in Keycloak, the removal becomes due. Nothing granted (no ownership
/// decided) means nothing to remove.
pub fn end_grant(s: &mut Stored, t: Transition) -> Vec<Entry> {
    if s.grant.owns_assignment.is_some() || s.grant.granted_at.is_some() {
        s.grant.removal_pending = true;
        s.grant.attempts = 0;
        s.grant.next_attempt_at = None;
        s.grant.last_error = None;
    }
    vec![t.into()]
}

/// Runs until `state.stopping` flips.
pub async fn run(state: Arc<AppState>) {
    let mut stop = state.stopping.subscribe();
    let mut checked_generation = 0;
    loop {
        if *stop.borrow() {
            return;
        }
        state.reload_policy_if_changed();
        let generation = state
            .policy_generation
            .load(std::sync::atomic::Ordering::SeqCst);
        if generation != checked_generation {
            match withdraw_outside_policy(&state).await {
                Ok(()) => {
                    checked_generation = generation;
                    spawn_target_check(&state);
                }
                Err(e) => crate::store::log_failure(&e, "policy re-check failed"),
            }
        }
        if let Err(e) = close_orphaned_extensions(&state).await {
            crate::store::log_failure(&e, "closing extensions of ended grants failed");
        }
        let due_target_check = state
            .scheduler
            .last_target_check
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none_or(|t| t.elapsed() >= TARGET_CHECK_EVERY);
        if due_target_check && !state.scheduler.keycloak_down() {
            spawn_target_check(&state);
        }
        spawn_disabled_check(&state);
        check_liveness(&state);
        let next = match tick(&state, Utc::now()).await {
            Ok(n) => n,
            Err(e) => {
                crate::store::log_failure(&e, "scheduler tick failed");
                None
            }
        };
        // Sleep until the next due instant, at most 1 s (policy reload
        // check; while Keycloak is down the probe wakes the scheduler as
        // soon as Keycloak answers).
        let max = Duration::from_secs(1);
        let sleep = next
            .map(|t| (t - Utc::now()).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(max)
            .min(max);
        *state
            .scheduler
            .sleep_until
            .lock()
            .unwrap_or_else(|p| p.into_inner()) =
            Some(Utc::now() + chrono::Duration::from_std(sleep).unwrap_or_default());
        let more_due = state.scheduler.more_due.load(Ordering::SeqCst);
        tokio::select! {
            _ = state.wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
            _ = stop.changed() => {}
            // Due work left unclaimed: claim more as slots free up.
            _ = state.scheduler.room_to_claim(), if more_due => {}
        }
    }
}

/// Asks Keycloak whether it still answers (the readiness call, bounded by
/// `keycloak_call_timeout_secs`) when it is taken for up but has answered
/// nothing for [`LIVENESS_EVERY`]: a jitd with no work would otherwise say
/// `ok` for a Keycloak that stopped long ago. No answer marks it down like
/// any call's ([`keycloak_failed`]; the readiness probe takes over); any
/// answer counts as one. At most one check at a time.
fn check_liveness(state: &Arc<AppState>) {
    let s = &state.scheduler;
    let quiet = s
        .answered_instant
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .is_none_or(|t| t.elapsed() >= LIVENESS_EVERY);
    if s.keycloak_down() || !quiet || s.checking_liveness.swap(true, Ordering::SeqCst) {
        return;
    }
    let state = state.clone();
    tokio::spawn(async move {
        let mut stop = state.stopping.subscribe();
        let asked = async {
            // A Keycloak call like any other: within `keycloak_concurrency`,
            // and not sent once Keycloak is taken for down meanwhile (then
            // only the readiness probe talks to it).
            let _permit = state.scheduler.permits.acquire(Priority::Other).await;
            if state.scheduler.keycloak_down() {
                return None;
            }
            let limit = state.scheduler.call_timeout();
            Some(
                match tokio::time::timeout(limit, state.admin.ready()).await {
                    Ok(r) => r,
                    Err(_) => Err(KeycloakError::Timeout(limit.as_secs())),
                },
            )
        };
        // The slot is given back before the bookkeeping below (which may
        // wait for the store).
        let r = tokio::select! {
            r = asked => r,
            _ = stop.changed() => None,
        };
        match &r {
            None => {}
            Some(Err(e)) if is_outage(e) => {
                tracing::debug!(error = %e, "Keycloak liveness check: no answer");
                keycloak_failed(&state, e);
            }
            Some(_) => keycloak_answered(&state).await,
        }
        state
            .scheduler
            .checking_liveness
            .store(false, Ordering::SeqCst);
    });
}

/// Starts [`end_open_requests_of_disabled_requesters`] in the background when
/// `disabled_check_secs` have passed since the last one started (at once
/// after jitd starts), Keycloak is taken for up, and none is under way.
fn spawn_disabled_check(state: &Arc<AppState>) {
    let s = &state.scheduler;
    let every = Duration::from_secs(s.config.disabled_check_secs);
    {
        let mut last = s
            .last_disabled_check
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < every)
            || s.keycloak_down()
            || s.checking_disabled.swap(true, Ordering::SeqCst)
        {
            return;
        }
        *last = Some(Instant::now());
    }
    let state = state.clone();
    tokio::spawn(async move {
        let mut stop = state.stopping.subscribe();
        // Stopping jitd does not wait for it: each revocation is one
        // transaction, and what is left is the next start's check.
        let r = tokio::select! {
            r = end_open_requests_of_disabled_requesters(&state) => Some(r),
            _ = stop.changed() => None,
        };
        match r {
            None | Some(Ok(0)) => {}
            Some(Ok(n)) => tracing::info!(
                ended = n,
                "grants and waiting requests of requesters disabled in Keycloak ended"
            ),
            Some(Err(e)) => {
                crate::store::log_failure(&e, "ending what disabled requesters have open failed")
            }
        }
        let s = &state.scheduler;
        s.disabled_checks_finished.fetch_add(1, Ordering::SeqCst);
        s.checking_disabled.store(false, Ordering::SeqCst);
    });
}

/// Ends what every requester disabled in Keycloak (person or service
/// account) has open, as jitd, with the reason "`<username>` is disabled in
/// Keycloak": each active grant is revoked (its assignment is then removed
/// like any ended grant's, `removal_pending`), and each access request
/// still waiting for a decision or for its start (`pending`, `approved`)
/// is cancelled, so approvers are not asked about it and it is never
/// granted. Disabling an account is how an incident or an offboarding
/// starts: the JIT roles it holds go with it, not at their end. Returns
/// how many grants and requests it ended.
///
/// Reads nothing from Keycloak while no grant is active and no request
/// waits. Otherwise one `GET /users?enabled=false`
/// ([`KeycloakAdmin::disabled_users`], outside the Keycloak slots, within
/// `keycloak_call_timeout_secs`); when more than [`DISABLED_MAX`] users
/// are disabled, each active grant's holder's account is read instead (one
/// call each), and the waiting requests of those found disabled end with
/// their grants (the others meet the eligibility check before their
/// grant). A deleted holder is left to its grant's end (Keycloak took the
/// assignment away with the user; the removal finds nothing). A failed
/// read ends the check for this round (the next one is
/// `disabled_check_secs` later; said once at WARN until a check works
/// again; `jit_disabled_check_failures_total`). Not seen, as at
/// activation: a user only locked out by brute-force detection, a disabled
/// state only a federation provider knows. Errors: the store's.
///
/// [`KeycloakAdmin::disabled_users`]: jit_keycloak::KeycloakAdmin::disabled_users
pub async fn end_open_requests_of_disabled_requesters(
    state: &AppState,
) -> Result<usize, StoreError> {
    let grants = state.store.active_grant_holders().await?;
    if grants.is_empty() && !state.store.any_waiting_request().await? {
        state.metrics.disabled_check_done();
        return Ok(0);
    }
    let disabled = match disabled_holders(state, &grants).await {
        Ok(ids) => {
            if state
                .scheduler
                .disabled_check_failing
                .swap(false, Ordering::SeqCst)
            {
                tracing::info!(
                    "the check of open requests against Keycloak's disabled users works again"
                );
            }
            ids
        }
        Err(e) => {
            state.metrics.disabled_check_failed();
            // Said once until it works again (a missing right, view-users,
            // stays so until an administrator acts).
            if state
                .scheduler
                .disabled_check_failing
                .swap(true, Ordering::SeqCst)
            {
                tracing::debug!(error = %e, "checking the open requests against Keycloak's disabled users failed again");
            } else {
                tracing::warn!(error = %e, "cannot check the open requests against Keycloak's disabled users; trying again every disabled_check_secs");
            }
            return Ok(0);
        }
    };
    let mut users: Vec<String> = disabled.iter().cloned().collect();
    users.sort();
    let waiting = state.store.waiting_requests_of(users).await?;
    // Grants first: they hold access now.
    let revoked = grants
        .into_iter()
        .filter(|g| disabled.contains(&g.requester_id));
    let mut ended = 0;
    for r in revoked.chain(waiting) {
        let reason = format!("{} is disabled in Keycloak", r.requester_username);
        tracing::warn!(request = %r.id, %reason, "ending");
        withdraw(state, &r.id, &reason).await?;
        ended += 1;
    }
    if ended > 0 {
        state.wake.notify_one();
    }
    state.metrics.disabled_check_done();
    Ok(ended)
}

/// Which users are disabled in Keycloak: the realm's disabled users (one
/// read), or, when more than [`DISABLED_MAX`] are disabled, those of the
/// holders of `grants` whose account says so (a deleted holder is not
/// counted).
async fn disabled_holders(
    state: &AppState,
    grants: &[crate::store::GrantHolder],
) -> Result<HashSet<String>, KeycloakError> {
    if let Some(ids) = call(state, state.admin.disabled_users(DISABLED_MAX)).await? {
        return Ok(ids);
    }
    let mut ids = HashSet::new();
    let holders: HashSet<&str> = grants.iter().map(|g| g.requester_id.as_str()).collect();
    for user in holders {
        let account = jit_keycloak::UserParts::ACCOUNT;
        match call(state, state.admin.current_user_parts(user, account)).await {
            Ok(u) if !u.enabled => {
                ids.insert(user.to_string());
            }
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(ids)
}

/// Checks every entitlement's Keycloak target (exists, assignable by the
/// service account) in the background and keeps the answers in
/// `state.targets`; logs a warning for each one that cannot be granted.
pub fn spawn_target_check(state: &Arc<AppState>) {
    *state
        .scheduler
        .last_target_check
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    let state = state.clone();
    tokio::spawn(async move {
        // Counts against the Keycloak concurrency like any other work.
        let _permit = state.scheduler.permits.acquire(Priority::Other).await;
        let policy = state.policy();
        for e in policy.entitlements.values() {
            match call(&state, state.admin.target_status(&e.kind)).await {
                Ok(st) => {
                    let before = state.target_status(&e.id, &e.kind);
                    if let Some(why) = st.unavailable_reason() {
                        if before.as_ref() != Some(&st) {
                            tracing::warn!(entitlement = %e.id, target = %e.kind, reason = why, "entitlement cannot be granted");
                        }
                    }
                    state.set_target_status(&e.id, &e.kind, st);
                }
                Err(err) => {
                    tracing::debug!(entitlement = %e.id, error = %err, "target check failed");
                    if err.is_transient() {
                        return;
                    }
                }
            }
        }
    });
}

/// Whether open request `r` is ended by [`withdraw_outside_policy`] under
/// `policy`: its entitlement is not in it, or names another Keycloak target
/// there (an approved extension is left to its grant's end).
pub fn outside_policy(policy: &jit_core::Policy, r: &jit_core::AccessRequest) -> bool {
    let in_policy = policy
        .entitlement(r.entitlement_id())
        .is_some_and(|e| e.kind == *r.target());
    !(in_policy
        || (r.status() == Status::Approved && !matches!(r.kind(), jit_core::RequestKind::Access)))
}

/// Ends every open request whose entitlement is no longer in the policy in
/// force, or now names another Keycloak target: only policy entitlements may
/// be held through JIT. Runs at start and after each policy change.
pub async fn withdraw_outside_policy(state: &AppState) -> Result<(), StoreError> {
    let policy = state.policy();
    for s in state.store.open_requests().await? {
        let r = &s.request;
        if !outside_policy(&policy, r) {
            continue;
        }
        let reason = format!(
            "'{}' is no longer in the policy (as {})",
            r.entitlement_id(),
            r.target()
        );
        tracing::warn!(request = %r.id(), %reason, "withdrawing");
        withdraw(state, r.id(), &reason).await?;
    }
    Ok(())
}

/// Says, when jitd stops, what happens to the grants it holds: their
/// roles stay in Keycloak while no jitd runs on this database; the next
/// one to start removes those already past their end at once and the
/// others on time. One WARN line naming how many and the earliest end;
/// nothing when none is active.
pub async fn say_what_stays(state: &AppState) {
    let open = match state.store.open_requests().await {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(error = %e, "stopping: cannot count the active grants");
            return;
        }
    };
    let active: Vec<_> = open
        .iter()
        .filter(|s| s.request.status() == Status::Active)
        .collect();
    let Some(first) = active.iter().filter_map(|s| s.request.expires_at()).min() else {
        return;
    };
    let who = if state.store.shared() {
        "while no jitd replica runs on this database (another replica running on it removes them on time); the next jitd started on it"
    } else {
        "while no jitd runs on this database; the next jitd started on it"
    };
    tracing::warn!(
        active_grants = active.len(),
        earliest_end = %first.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "stopping with {} active grant{}: their roles stay in Keycloak {who} removes those past their end at once, the others on time",
        active.len(),
        if active.len() == 1 { "" } else { "s" }
    );
}

/// Cancels pending extensions whose grant has ended, so no approver is
/// offered a decision the server would refuse (`not_an_active_grant`).
pub async fn close_orphaned_extensions(state: &AppState) -> Result<(), StoreError> {
    for id in state.store.orphaned_extensions().await? {
        ignore_race(
            state
                .store
                .update(&id, |s| {
                    let grant = match &s.request.kind() {
                        jit_core::RequestKind::Extension { grant_id } => grant_id.clone(),
                        jit_core::RequestKind::Access => String::new(),
                    };
                    let reason = format!("its grant {grant} has ended");
                    Ok(vec![s.request.withdraw(&reason, Utc::now())?.into()])
                })
                .await
                .map(|(_, recs)| state.published(&recs)),
        )?;
    }
    Ok(())
}

/// Ends request `id` by jitd with `reason` (cancelled before activation,
/// revoked when active).
async fn withdraw(state: &AppState, id: &str, reason: &str) -> Result<(), StoreError> {
    release_slot();
    let reason = reason.to_string();
    ignore_race(
        state
            .store
            .update(id, move |s| {
                let t = s.request.withdraw(&reason, Utc::now())?;
                Ok(end_grant(s, t))
            })
            .await
            .map(|(_, recs)| state.published(&recs)),
    )
}

fn ignore_race(r: Result<(), StoreError>) -> Result<(), StoreError> {
    // Another path (an API call) changed the request first: fine.
    match r {
        Err(StoreError::Domain(DomainError::IllegalTransition { .. })) => Ok(()),
        other => other,
    }
}

/// The key that orders Keycloak work: one assignment of one target to one user.
fn assignment_key(r: &jit_core::AccessRequest) -> String {
    format!(
        "{}\u{0}{}",
        r.requester_id(),
        serde_json::to_string(&r.target()).unwrap_or_default()
    )
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Work {
    Remove,
    Activate,
}

/// One pass over due work at `now`: lapses and expiries are written at
/// once (one transaction each); Keycloak work is handed to workers (at
/// most one per assignment, bounded in number) and not waited for.
/// Returns when the next thing is due.
pub async fn tick(
    state: &Arc<AppState>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let tick_started = Instant::now();
    // Set again below if this tick leaves due work for later.
    let more_was_due = state.scheduler.more_due.swap(false, Ordering::SeqCst);
    let due = state.store.due(now).await?;
    let due_read = tick_started.elapsed();
    if !due.lapse.is_empty() {
        let (_, recs) = state
            .store
            .update_each(due.lapse.clone(), move |s| {
                Ok(vec![s.request.lapse(now)?.into()])
            })
            .await?;
        state.published(&recs);
    }
    if !due.expire.is_empty() {
        let (_, recs) = state
            .store
            .update_each(due.expire.clone(), move |s| {
                let t = s.request.expire(now)?;
                Ok(end_grant(s, t))
            })
            .await?;
        state.published(&recs);
    }
    let ended = tick_started.elapsed();
    if state.scheduler.keycloak_down() {
        probe(state);
        return Ok(due.next_due);
    }
    // Removals before activations within each assignment. The grants just
    // expired are due for removal too (a worker skips those with nothing
    // to remove).
    let mut work: BTreeMap<String, Vec<(Work, String)>> = BTreeMap::new();
    let mut seen = HashSet::new();
    let items = due
        .remove
        .iter()
        .chain(&due.expire)
        .map(|id| (Work::Remove, id))
        .chain(due.activate.iter().map(|id| (Work::Activate, id)));
    let mut candidates = Vec::new();
    for (kind, id) in items {
        if !seen.insert((kind, id.clone())) {
            continue;
        }
        if state
            .scheduler
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(id)
        {
            continue;
        }
        candidates.push((kind, id.clone()));
    }
    // With several replicas on one database, due Keycloak work is claimed
    // first (one statement for the whole tick, at most what this replica
    // can start soon): each grant and removal is worked on by one replica
    // at a time, the replicas share a burst, and a dead replica's claims
    // lapse after CLAIM_LEASE. One process alone on SQLite needs no claims.
    let claimed_at = Instant::now();
    let mut left_over = false;
    let mut no_room = false;
    let claimed: HashSet<String> = if state.store.shared() {
        let mut ids: Vec<String> = candidates.iter().map(|(_, id)| id.clone()).collect();
        ids.dedup();
        // Only what this replica can start soon: the other replicas take
        // the rest of a burst, and this one claims more as it frees up.
        let budget = state.scheduler.claim_budget();
        // While due work is left over and this replica's slots still have
        // more than a refill's worth queued, a pass (woken by a new
        // request, a policy reload …) claims nothing: the refill claims
        // when the load falls to `refill_at`, a concurrency's worth at
        // once, instead of passes of one or two items each (every pass is
        // several store round trips).
        let budget = if more_was_due && state.scheduler.permits.load() > state.scheduler.refill_at()
        {
            0
        } else {
            budget
        };
        let got = if budget == 0 {
            Vec::new()
        } else {
            // The first few times the budget of the due ids first (the
            // claim checks each id it is given, and a refill in a burst of
            // 1,000 claims 12); all of them only if those were not enough
            // (other replicas hold some).
            let first = ids.len().min(CLAIM_LOOKS_AT * budget);
            let mut got = state
                .store
                .claim_due(
                    ids[..first].to_vec(),
                    &state.replica,
                    Utc::now(),
                    CLAIM_LEASE,
                    budget,
                )
                .await?;
            if got.len() < budget && first < ids.len() {
                got.extend(
                    state
                        .store
                        .claim_due(
                            ids[first..].to_vec(),
                            &state.replica,
                            Utc::now(),
                            CLAIM_LEASE,
                            budget - got.len(),
                        )
                        .await?,
                );
            }
            got
        };
        left_over = got.len() >= budget && ids.len() > got.len();
        no_room = budget == 0;
        got.into_iter().collect()
    } else {
        candidates.iter().map(|(_, id)| id.clone()).collect()
    };
    // The assignment of each item, from one read for the whole tick (a
    // request's user and target never change).
    let mut unique = HashSet::new();
    let ids: Vec<String> = candidates
        .iter()
        .filter(|(_, id)| claimed.contains(id) && unique.insert(id.clone()))
        .map(|(_, id)| id.clone())
        .collect();
    let keys: std::collections::HashMap<String, String> = if ids.is_empty() {
        Default::default()
    } else {
        state
            .store
            .get_many(ids)
            .await?
            .into_iter()
            .map(|s| (s.request.id().to_string(), assignment_key(&s.request)))
            .collect()
    };
    for (kind, id) in candidates {
        if let Some(key) = keys.get(&id) {
            work.entry(key.clone()).or_default().push((kind, id));
        }
    }
    // Each assignment gets one worker: those with a worker still running
    // wait for the next tick (that worker wakes the scheduler when done).
    let mut mine = Vec::new();
    for (key, items) in work {
        if !state
            .scheduler
            .busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone())
        {
            state.scheduler.deferred.store(true, Ordering::SeqCst);
            continue;
        }
        state
            .scheduler
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(items.iter().map(|(_, id)| id.clone()));
        mine.push((key, items));
    }
    // Workers that take access away start first, so they ask for their
    // Keycloak slot before any grant does (after an outage, hundreds of
    // grants may be due with a few removals).
    mine.sort_by_key(|(_, items)| !items.iter().any(|(k, _)| *k == Work::Remove));
    // What each worker starts from, read for all of them at once — after
    // their assignments were marked busy, so no other worker changes what
    // was read (API handlers may; every store change re-checks in its
    // transaction). If this read fails, each worker reads for itself.
    let firsts: Vec<String> = mine.iter().map(|(_, items)| items[0].1.clone()).collect();
    let mut views: std::collections::HashMap<String, WorkView> = if firsts.is_empty() {
        Default::default()
    } else {
        match state.store.work_views(firsts).await {
            Ok(v) => v
                .into_iter()
                .map(|v| (v.stored.request.id().to_string(), v))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "reading due work failed; each worker reads for itself");
                Default::default()
            }
        }
    };
    // A burst of grants of one target (workers with one grant each) decides
    // ownership from one read of the target's holders.
    let mut per_target: std::collections::HashMap<String, usize> = Default::default();
    for (_, items) in &mine {
        if let [(Work::Activate, id)] = items.as_slice() {
            if let Some(v) = views.get(id) {
                *per_target
                    .entry(serde_json::to_string(v.stored.request.target()).unwrap_or_default())
                    .or_default() += 1;
            }
        }
    }
    // A target with a fresh read from an earlier tick uses it too (a tick
    // that claims a few more grants of a burst: see `batched_held`).
    let batched_target =
        |t: &String, n: usize| n >= HOLDERS_BATCH_MIN || state.scheduler.has_fresh_holders(t);
    let tick_holders = per_target
        .iter()
        .any(|(t, n)| batched_target(t, *n))
        .then(|| {
            Arc::new(TickHolders {
                tick: state.scheduler.ticks.fetch_add(1, Ordering::SeqCst) + 1,
            })
        });
    // A pass handing out a few grants or more shares one read of the
    // realm's disabled users among them (`shared_disabled`); smaller ones
    // read each requester's account.
    let activations: usize = per_target.values().sum();
    let disabled_since = (activations >= DISABLED_BATCH_MIN).then_some(tick_started);
    let grouped = tick_started.elapsed();
    let mut spawned_workers = 0usize;
    for (key, items) in mine {
        spawned_workers += 1;
        let mut first_view = views.remove(&items[0].1);
        let batch = match (items.as_slice(), &first_view, &tick_holders) {
            ([(Work::Activate, _)], Some(v), Some(h))
                if {
                    let t = serde_json::to_string(v.stored.request.target()).unwrap_or_default();
                    per_target.get(&t).is_some_and(|n| batched_target(&t, *n))
                } =>
            {
                Some(h.clone())
            }
            _ => None,
        };
        let state = state.clone();
        // Taking access away first: a removal waits for no grant.
        let priority = if items.iter().any(|(k, _)| *k == Work::Remove) {
            Priority::Removal
        } else {
            Priority::Other
        };
        let spawned = Instant::now();
        // Its place in the queue for a Keycloak slot, taken now, in the
        // order of `mine` (removals first).
        let ticket = state.scheduler.permits.ticket(priority);
        tokio::spawn(async move {
            let slot = std::cell::RefCell::new(Slot {
                permit: None,
                ticket: Some(ticket),
                removal: priority == Priority::Removal,
                resumed: false,
                spent: Spent::default(),
                released: HashSet::new(),
            });
            let shared = state.store.shared();
            let released = SLOT.scope(slot, async {
                // The worker's claims, from the tick's: renewed together,
                // before an item, once CLAIM_RENEW_AFTER has passed since
                // they were last taken (so each item starts with at least
                // CLAIM_LEASE - CLAIM_RENEW_AFTER of its claim left).
                let mut claimed_at = claimed_at;
                let mut lost: HashSet<String> = HashSet::new();
                for (i, (kind, id)) in items.iter().enumerate() {
                    if state.scheduler.keycloak_down() {
                        break;
                    }
                    let t = Instant::now();
                    if shared {
                        // The wait for a Keycloak slot comes first: in a
                        // burst (or as Keycloak comes back) it can outlast
                        // the claim, and another replica may have taken the
                        // item over meanwhile. The claim is checked after it.
                        ensure_slot(&state).await;
                    }
                    // Renew the claims if due (or find another replica took
                    // some over) before the item's work starts.
                    if shared && claimed_at.elapsed() >= CLAIM_RENEW_AFTER {
                        let mut rest: Vec<String> = items[i..]
                            .iter()
                            .map(|(_, id)| id.clone())
                            .filter(|id| !lost.contains(id))
                            .collect();
                        rest.dedup();
                        let asked = Instant::now();
                        match state
                            .store
                            .claim(rest.clone(), &state.replica, Utc::now(), CLAIM_LEASE)
                            .await
                        {
                            Ok(got) => {
                                claimed_at = asked;
                                let got: HashSet<String> = got.into_iter().collect();
                                lost.extend(rest.into_iter().filter(|id| !got.contains(id)));
                            }
                            // Not renewed: this item waits for a later tick.
                            Err(e) => {
                                tracing::warn!(request = %id, error = %e, "renewing claims failed");
                                continue;
                            }
                        }
                    }
                    if lost.contains(id) {
                        continue;
                    }
                    // Items after the first read afresh (the first changed
                    // what they depend on).
                    let view = first_view.take().filter(|_| i == 0);
                    let r = match kind {
                        Work::Remove => remove(&state, id, view).await,
                        Work::Activate => {
                            activate(&state, id, view, batch.as_deref(), disabled_since).await
                        }
                    };
                    let spent = SLOT.with(|s| std::mem::take(&mut s.borrow_mut().spent));
                    tracing::debug!(
                        request = %id,
                        kind = ?kind,
                        since_tick_ms = spawned.elapsed().as_secs_f64() * 1e3,
                        total_ms = t.elapsed().as_secs_f64() * 1e3,
                        store_read_ms = spent.store_read.as_secs_f64() * 1e3,
                        slot_wait_ms = spent.slot_wait.as_secs_f64() * 1e3,
                        keycloak_ms = spent.keycloak.as_secs_f64() * 1e3,
                        keycloak_calls = spent.keycloak_calls,
                        commit_ms = spent.commit.as_secs_f64() * 1e3,
                        "scheduler step timings"
                    );
                    if let Err(e) = r {
                        tracing::error!(request = %id, error = %e, "scheduler step failed");
                    }
                }
                SLOT.with(|s| std::mem::take(&mut s.borrow_mut().released))
            })
            .await;
            if shared {
                let mut ids: Vec<String> = items
                    .iter()
                    .map(|(_, id)| id.clone())
                    .filter(|id| !released.contains(id))
                    .collect();
                ids.dedup();
                if let Err(e) = state
                    .scheduler
                    .releases
                    .release(&state.store, &state.replica, ids)
                    .await
                {
                    tracing::warn!(error = %e, "releasing claims failed; they lapse");
                }
            }
            {
                let mut in_flight = state
                    .scheduler
                    .in_flight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                for (_, id) in &items {
                    in_flight.remove(id);
                }
            }
            state
                .scheduler
                .busy
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
            if state.scheduler.deferred.swap(false, Ordering::SeqCst) {
                state.wake.notify_one();
            }
        });
    }
    // Claim more as Keycloak slots free up — unless slots were free and
    // still nothing could start (every claimed item's assignment busy):
    // then the next worker to finish wakes the scheduler.
    if left_over && (spawned_workers > 0 || no_room) {
        state.scheduler.more_due.store(true, Ordering::SeqCst);
    }
    if spawned_workers > 0 {
        tracing::debug!(
            due_read_ms = due_read.as_secs_f64() * 1e3,
            lapse_expire_done_ms = ended.as_secs_f64() * 1e3,
            claimed_and_grouped_ms = grouped.as_secs_f64() * 1e3,
            total_ms = tick_started.elapsed().as_secs_f64() * 1e3,
            workers = spawned_workers,
            claimed = claimed.len(),
            left_over,
            "scheduler tick timings"
        );
    }
    Ok(due.next_due)
}

/// Starts the readiness probe unless it runs: while Keycloak is down, it
/// asks Keycloak every [`PROBE_EVERY`] (counted from the end of the
/// previous probe, so never two at once) until one answers; that answer
/// makes all waiting work due and wakes the scheduler at once
/// ([`keycloak_answered`]), without waiting for the scheduler's next pass.
fn probe(state: &Arc<AppState>) {
    if state.scheduler.probing.swap(true, Ordering::SeqCst) {
        return;
    }
    let state = state.clone();
    tokio::spawn(async move {
        let mut stop = state.stopping.subscribe();
        let mut refused;
        while state.scheduler.keycloak_down() && !*stop.borrow() {
            let limit = state.scheduler.call_timeout();
            let sent = Instant::now();
            let r = match tokio::time::timeout(limit, state.admin.ready()).await {
                Ok(r) => r,
                Err(_) => Err(KeycloakError::Timeout(limit.as_secs())),
            };
            let elapsed_ms = sent.elapsed().as_secs_f64() * 1e3;
            match r {
                Ok(()) => {
                    tracing::debug!(elapsed_ms, "Keycloak readiness probe answered");
                    keycloak_answered(&state).await;
                    break;
                }
                Err(e) => {
                    state.scheduler.probe_failed.store(true, Ordering::SeqCst);
                    tracing::debug!(elapsed_ms, error = %e, "Keycloak readiness probe failed");
                    refused = matches!(e, KeycloakError::Login(_));
                    state
                        .scheduler
                        .login_refused
                        .store(refused, Ordering::SeqCst);
                }
            }
            // A refused login does not mend itself within 100 ms (an
            // administrator fixes the secret): no flood of logins meanwhile.
            let wait = if refused {
                PROBE_EVERY_LOGIN_REFUSED
            } else {
                PROBE_EVERY
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
        }
        state.scheduler.probing.store(false, Ordering::SeqCst);
        // Marked down again between the last probe and this line: the next
        // tick starts a probe again (it probes whenever Keycloak is down).
    });
}

/// How long a replica's claim on due Keycloak work lasts: the longest
/// another replica waits to take over the work of one that died. Longer
/// than one item's Keycloak calls take at their time limit
/// ([`SchedulerConfig::keycloak_call_timeout_secs`], default 10 s) is not
/// needed: a worker renews its claims before an item once
/// [`CLAIM_RENEW_AFTER`] has passed since it last took them.
pub const CLAIM_LEASE: chrono::Duration = chrono::Duration::seconds(10);

/// A worker renews its claims (all of its remaining items, one statement)
/// before an item — after it got its Keycloak slot, however long that
/// took — once this long has passed since they were taken: every item's
/// work starts with at least 8 s of its claim left (an item another
/// replica took over meanwhile is skipped), and a worker whose items
/// follow one another quickly asks the database once, not once per item.
const CLAIM_RENEW_AFTER: Duration = Duration::from_secs(2);

/// Wait before retry number `attempt` (1, 2, …), seconds: 1 doubling to 10.
fn backoff_secs(attempt: u32) -> i64 {
    (1i64 << (attempt.clamp(1, 6) - 1)).min(10)
}

/// Seconds of retrying behind `attempts` transient failures of one step:
/// the sum of their backoff waits (1 + 2 + 4 + 8 + 10 + 10 …). Time while
/// Keycloak is down as a whole or jitd is stopped adds no attempts, so it
/// does not count.
pub fn retried_secs(attempts: u32) -> i64 {
    match attempts {
        0..=4 => (1..=attempts).map(backoff_secs).sum(),
        n => 15 + 10 * i64::from(n - 4),
    }
}

/// When the window of approved access request `r` ends (UTC): when it
/// became due (the later of the decision and the scheduled start) plus its
/// duration. A grant not applied by then is given up, never granted late.
pub fn window_end(r: &jit_core::AccessRequest) -> DateTime<Utc> {
    let due = r.decided_at().max(r.start_at()).unwrap_or(r.created_at());
    due + chrono::Duration::seconds(r.duration_secs())
}

fn backoff(s: &mut Stored, err: String) {
    s.grant.attempts = s.grant.attempts.saturating_add(1);
    let secs = backoff_secs(s.grant.attempts);
    s.grant.next_attempt_at = Some(Utc::now() + chrono::Duration::seconds(secs));
    s.grant.last_error = Some(err);
}

/// A transient failure of `id`'s current step: retried after a backoff,
/// unless its limit is reached — then the grant ends `failed`, or the
/// removal becomes `removal_failed` (audited, published, counted).
async fn record_failure(state: &AppState, id: &str, err: String) -> Result<(), StoreError> {
    // Keycloak answered (or did not): its slot is not needed for the store.
    release_slot();
    if state.scheduler.keycloak_down() {
        // Keycloak is unreachable as a whole: not this item's failure. It
        // stays due (shown with the error) and is retried as soon as the
        // probe sees Keycloak answer; no attempt is counted.
        tracing::debug!(request = id, error = %err, "Keycloak unreachable; waiting for it");
        return ignore_race(
            state
                .store
                .update(id, move |s| {
                    s.grant.last_error = Some(err);
                    Ok(vec![])
                })
                .await
                .map(|_| ()),
        );
    }
    let grant_limit = state.scheduler.config.grant_retry_limit_secs;
    let removal_limit = state.scheduler.config.removal_retry_limit_secs;
    let e = err.clone();
    let r = state
        .store
        .update(id, move |s| {
            backoff(s, e.clone());
            let retried = retried_secs(s.grant.attempts);
            if s.grant.removal_pending {
                if retried >= removal_limit as i64 {
                    let reason = format!(
                        "Keycloak kept failing for {retried} s of retries (removal_retry_limit_secs = {removal_limit}); \
                         an administrator must remove it: {e}"
                    );
                    return Ok(removal_failed_in(s, reason));
                }
            } else if s.request.status() == Status::Approved
                && matches!(s.request.kind(), jit_core::RequestKind::Access)
            {
                let end = window_end(&s.request);
                let why = if retried >= grant_limit as i64 {
                    Some(format!(
                        "Keycloak kept failing for {retried} s of retries (grant_retry_limit_secs = {grant_limit})"
                    ))
                } else if s.grant.next_attempt_at.is_some_and(|t| t >= end) {
                    Some(format!(
                        "its window ends at {} before Keycloak could be asked again",
                        end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ))
                } else {
                    None
                };
                if let Some(why) = why {
                    let reason = format!("gave up granting: {why}; last error: {e}");
                    return fail_in(s, &reason, Utc::now());
                }
            }
            Ok(vec![])
        })
        .await;
    match &r {
        // Given up: the removal for an administrator, or the grant.
        Ok((s, recs)) if !recs.is_empty() && s.grant.removal_failed => {
            tracing::error!(request = id, reason = ?s.grant.last_error, "removal given up");
            state.metrics.removal_failed();
            state.published(recs);
        }
        Ok((s, recs)) if !recs.is_empty() => {
            tracing::warn!(request = id, reason = ?s.request.end_reason(), "grant given up");
            state.published(recs);
        }
        Ok((s, _)) => {
            tracing::warn!(request = id, error = %err, "Keycloak step failed; will retry");
            if let Some(t) = s.grant.next_attempt_at {
                state.scheduler.due_at(state, t);
            }
        }
        Err(_) => {}
    }
    ignore_race(r.map(|_| ()))
}

/// Ends an approved request as `failed` (Keycloak refused the grant for
/// good, or it was given up), audited and published to the requester and
/// approvers.
async fn fail_grant(state: &AppState, id: &str, reason: String) -> Result<(), StoreError> {
    fail_grant_with(state, id, reason, false).await
}

/// [`fail_grant`] when Keycloak refused this attempt's own assignment for
/// good, after no earlier attempt was found to have landed (the ownership
/// was decided by this attempt, or Keycloak showed the role not held):
/// nothing of this grant is in Keycloak.
async fn fail_grant_refused(state: &AppState, id: &str, reason: String) -> Result<(), StoreError> {
    fail_grant_with(state, id, reason, true).await
}

async fn fail_grant_with(
    state: &AppState,
    id: &str,
    reason: String,
    refused: bool,
) -> Result<(), StoreError> {
    release_slot();
    tracing::warn!(request = id, %reason, "grant failed for good");
    ignore_race(
        state
            .store
            .update(id, move |s| {
                if refused {
                    s.grant.assigning_since = None;
                }
                fail_in(s, &reason, Utc::now())
            })
            .await
            .map(|(_, recs)| state.published(&recs)),
    )
}

/// The store side of [`fail_grant`], inside its transaction.
fn fail_in(s: &mut Stored, reason: &str, now: DateTime<Utc>) -> Result<Vec<Entry>, DomainError> {
    let t = s.request.fail(reason, now)?;
    s.grant.last_error = Some(reason.to_string());
    s.grant.next_attempt_at = None;
    // A permanent refusal of this attempt assigned nothing; an earlier
    // attempt that failed transiently (a timeout may hide a success) or
    // was never recorded (`assigning_since`: jitd stopped after sending
    // it) may have: then the removal path checks Keycloak.
    if s.grant.owns_assignment == Some(true)
        && (s.grant.attempts > 0 || s.grant.assigning_since.is_some())
    {
        s.grant.removal_pending = true;
        s.grant.attempts = 0;
    }
    Ok(vec![t.into()])
}

/// A permanent refusal of `target` for `user_id`, in words: which of the
/// user and the target is gone, or what Keycloak forbade.
async fn explain_refusal(
    state: &AppState,
    entitlement_id: &str,
    target: &EntitlementKind,
    e: &KeycloakError,
) -> String {
    if e.is_not_found() {
        if let Ok(st) = call(state, state.admin.target_status(target)).await {
            if let Some(why) = st.unavailable_reason() {
                let why = why.to_string();
                state.set_target_status(entitlement_id, target, st);
                return format!("Keycloak refused the grant: {why}");
            }
        }
        return format!("Keycloak refused the grant: the user no longer exists in Keycloak ({e})");
    }
    if e.is_forbidden() {
        let why = format!("Keycloak does not let jitd's service account assign {target} (403)");
        state.set_target_status(
            entitlement_id,
            target,
            TargetStatus::NotAssignable(why.clone()),
        );
        return format!("Keycloak refused the grant: {why}");
    }
    format!("Keycloak refused the grant: {e}")
}

/// Re-checks, at activation, that the requester may still request the
/// entitlement, from a read of their account now (a token seen at creation
/// may be hours old): the enabled state and only what the requester rule
/// names — one Admin API call for an entitlement anyone may request, two
/// for a rule of roles or of groups, three for both. `Ok(None)` =
/// eligible.
async fn eligibility(
    state: &AppState,
    e: &jit_core::Entitlement,
    r: &jit_core::AccessRequest,
) -> Result<Option<String>, KeycloakError> {
    let parts = jit_keycloak::UserParts {
        realm_roles: !e.requester_roles.is_empty(),
        groups: !e.requester_groups.is_empty(),
    };
    let access = call(
        state,
        state.admin.current_user_parts(r.requester_id(), parts),
    )
    .await?;
    if !access.enabled {
        return Ok(Some(format!(
            "no longer eligible: {} is disabled in Keycloak",
            r.requester_username()
        )));
    }
    let p = Principal {
        id: r.requester_id().to_string(),
        username: r.requester_username().to_string(),
        roles: access.realm_roles,
        groups: access.groups,
        client_id: None,
    };
    if !e.may_request(&p) {
        return Ok(Some(format!(
            "no longer eligible: {} no longer holds a role or group that may request '{}'",
            r.requester_username(),
            e.id
        )));
    }
    Ok(None)
}

/// A read of the realm's disabled users: when it ended, and their ids or
/// `None` if it failed or too many are disabled.
type DisabledRead = tokio::sync::OnceCell<(Instant, Option<HashSet<String>>)>;

/// How long a read of the realm's disabled users that failed (or found
/// more than [`DISABLED_MAX`]) stands after it ended: the grants of that
/// time read each requester's account instead of asking again.
const DISABLED_RETRY: Duration = Duration::from_secs(30);
/// Most disabled users read at once; a realm with more reads each
/// requester's account.
const DISABLED_MAX: usize = 10_000;
/// Longest wait for the read of the disabled users (or the call timeout if
/// shorter): the grants of a pass wait for it, and a slow search (a large
/// realm) must not hold them for a whole call timeout.
const DISABLED_READ_LIMIT: Duration = Duration::from_secs(3);
/// A pass hands out at least this many grants before they share one read
/// of the realm's disabled users; fewer read each requester's account
/// (one call each, whatever the number of disabled users).
const DISABLED_BATCH_MIN: usize = 4;

/// Whether `user_id` is disabled in Keycloak, from one read of the realm's
/// disabled users started after `since` (the start of the scheduler pass
/// that handed the grant out; a pass of at least [`DISABLED_BATCH_MIN`]
/// grants), shared by every grant that may use it: the first to ask makes
/// it, the others of its pass (or of a later pass that began before it was
/// started) wait for it. So a requester Keycloak lists as disabled before
/// the pass began is not granted. One disabled while their grant is under
/// way may be, as with a read of their account just before the assignment
/// (the role is taken away at the end as any grant's, and Keycloak
/// refuses a disabled user's logins and refreshes meanwhile). At most one
/// read is under way at a time, and a pass makes at most one.
///
/// A read an earlier pass started and that is still under way is waited
/// for, then a new one is made. `None` — read the account — when the last
/// read failed, took longer than
/// [`DISABLED_READ_LIMIT`] or found more than [`DISABLED_MAX`] (for
/// [`DISABLED_RETRY`] after it ended, or until Keycloak comes back from an
/// outage); or while Keycloak is taken for down. Not listed, so granted: a
/// deleted user (the ownership check or the assignment finds them gone),
/// one locked out for a while by brute-force detection (their account is
/// enabled), one whose disabled state lives only in a federation provider
/// that does not answer the search (e.g. LDAP), one jitd's service account
/// may not view.
async fn shared_disabled(state: &AppState, user_id: &str, since: Instant) -> Option<bool> {
    if state.scheduler.keycloak_down() {
        return None;
    }
    // At most twice round: after waiting for a read an earlier pass
    // started, that read is done and a new one is made (or used).
    for _ in 0..2 {
        let (cell, mine) = {
            let mut last = state
                .scheduler
                .disabled
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let found = match &*last {
                None => None,
                Some((started, c)) => match c.get() {
                    Some((ended, None)) if ended.elapsed() < DISABLED_RETRY => return None,
                    _ if *started >= since => Some((c.clone(), true)),
                    // Under way, started before this pass: waited for (no
                    // second read at the same time), not used.
                    None => Some((c.clone(), false)),
                    Some(_) => None,
                },
            };
            match found {
                Some(f) => f,
                None => {
                    let c = Arc::new(DisabledRead::new());
                    *last = Some((Instant::now(), c.clone()));
                    (c, true)
                }
            }
        };
        let (_, ids) = cell.get_or_init(|| read_disabled(state)).await;
        if mine {
            return ids.as_ref().map(|ids| ids.contains(user_id));
        }
    }
    None
}

/// One read of the realm's disabled users for [`shared_disabled`], within
/// [`DISABLED_READ_LIMIT`]: when it ended, and the ids (`None`: failed,
/// too slow, or more than [`DISABLED_MAX`]). No Keycloak slot of its own
/// (beyond `keycloak_concurrency`, one at a time), as `batched_held`:
/// grants waiting for it may hold slots already.
async fn read_disabled(state: &AppState) -> (Instant, Option<HashSet<String>>) {
    let limit = state.scheduler.call_timeout().min(DISABLED_READ_LIMIT);
    let ids = match tokio::time::timeout(limit, state.admin.disabled_users(DISABLED_MAX)).await {
        Ok(Ok(Some(ids))) => {
            tracing::debug!(
                disabled = ids.len(),
                "read the realm's disabled users for the grants of a pass"
            );
            Some(ids)
        }
        Ok(Ok(None)) => {
            tracing::debug!(max = DISABLED_MAX, "more of the realm's users are disabled than one read takes; reading each requester's account");
            None
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "reading the realm's disabled users failed; reading each requester's account");
            None
        }
        Err(_) => {
            tracing::debug!(
                "reading the realm's disabled users timed out; reading each requester's account"
            );
            None
        }
    };
    (Instant::now(), ids)
}

/// `view`: the request as read for this worker, or `None` to read it.
async fn view_of(
    state: &AppState,
    id: &str,
    view: Option<WorkView>,
) -> Result<Option<WorkView>, StoreError> {
    match view {
        Some(v) => Ok(Some(v)),
        None => Ok(read(state.store.work_views(vec![id.to_string()]))
            .await?
            .pop()),
    }
}

/// The tick a worker's grant was handed out in, for [`batched_held`].
struct TickHolders {
    /// [`Scheduler::ticks`] of that tick.
    tick: u64,
}

/// A read of a target's direct holders: when it was sent and the holders'
/// ids, or `None` if it failed or there are too many holders.
type HolderRead = tokio::sync::OnceCell<Option<(Instant, HashSet<String>)>>;

impl Scheduler {
    /// Whether the target (key) has a read of its holders younger than
    /// [`HOLDERS_FRESH`] (or one under way).
    fn has_fresh_holders(&self, target: &str) -> bool {
        self.holders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(target)
            .is_some_and(|(_, cell)| holders_usable(cell))
    }
}

/// A read under way, or done and younger than [`HOLDERS_FRESH`].
fn holders_usable(cell: &HolderRead) -> bool {
    match cell.get() {
        None => true,
        Some(r) => r
            .as_ref()
            .is_some_and(|(sent, _)| sent.elapsed() < HOLDERS_FRESH),
    }
}

/// A tick hands out at least this many grants of one target before their
/// ownership is decided from one read of the target's holders.
const HOLDERS_BATCH_MIN: usize = 4;
/// Longest time a batched read of a target's holders decides ownership
/// after it was sent; later grants ask per user.
const HOLDERS_FRESH: Duration = Duration::from_secs(5);
/// Most holders read at once; a target held by more is asked per user.
const HOLDERS_MAX: usize = 10_000;

/// Whether `user_id` holds `target` directly, from one read of all the
/// target's direct holders shared by the grants of a burst: the first
/// grant to ask makes it, later ones — in this tick or later ticks —
/// use it while it is younger than [`HOLDERS_FRESH`]. `None` — ask
/// Keycloak for this user — if that read failed, found more than
/// [`HOLDERS_MAX`] holders, or is too old; and when a read made by an
/// earlier tick shows the user as a holder (a JIT grant of the same
/// assignment may have been removed since, by this replica or another:
/// "held" from an older read is never trusted, so a JIT role is never
/// taken for a standing one). The answer is the same as `holds(user,
/// target, direct)` at the moment of the read: a standing assignment made
/// before it is seen; one made after it — like one made after a per-user
/// read, or while the grant is active — is taken for JIT's.
async fn batched_held(
    state: &AppState,
    holders: &TickHolders,
    user_id: &str,
    target: &EntitlementKind,
) -> Option<bool> {
    let key = serde_json::to_string(target).unwrap_or_default();
    let (from_tick, cell) = {
        let mut reads = state
            .scheduler
            .holders
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match reads.get(&key) {
            Some((t, cell)) if *t == holders.tick || holders_usable(cell) => (*t, cell.clone()),
            _ => {
                let cell = Arc::new(HolderRead::new());
                reads.insert(key, (holders.tick, cell.clone()));
                (holders.tick, cell)
            }
        }
    };
    // The read takes no Keycloak slot of its own (one per target at a
    // time, beyond `keycloak_concurrency`): grants waiting for it may hold
    // slots already, and must not wait for one another's.
    let read = cell
        .get_or_init(|| async {
            if state.scheduler.keycloak_down() {
                return None;
            }
            let sent = Instant::now();
            let limit = state.scheduler.call_timeout();
            match tokio::time::timeout(limit, state.admin.direct_holders(target, HOLDERS_MAX))
                .await
            {
                Ok(Ok(Some(ids))) => {
                    tracing::debug!(%target, holders = ids.len(), "read a target's direct holders for a burst of grants");
                    Some((sent, ids))
                }
                Ok(Ok(None)) => None,
                Ok(Err(e)) => {
                    tracing::debug!(%target, error = %e, "reading a target's holders failed; asking per user");
                    None
                }
                Err(_) => {
                    tracing::debug!(%target, "reading a target's holders timed out; asking per user");
                    None
                }
            }
        })
        .await;
    let (sent, ids) = read.as_ref()?;
    if sent.elapsed() >= HOLDERS_FRESH {
        return None;
    }
    match ids.contains(user_id) {
        true if from_tick != holders.tick => None,
        held => Some(held),
    }
}

/// Whether JIT will own the assignment of request `r` (true: the user does
/// not hold the target directly now): inherited from another active grant
/// of the same assignment (`others_own`), else from the pass's shared read
/// of the target's holders (`batch`, [`batched_held`]), else asked of
/// Keycloak for this user (one call, in a Keycloak slot).
async fn read_owns(
    state: &AppState,
    batch: Option<&TickHolders>,
    others_own: Option<bool>,
    r: &jit_core::AccessRequest,
) -> Result<bool, KeycloakError> {
    if let Some(inherited) = others_own {
        return Ok(inherited);
    }
    if let Some(b) = batch {
        if let Some(held) = batched_held(state, b, r.requester_id(), r.target()).await {
            return Ok(!held);
        }
    }
    call(
        state,
        state.admin.holds(r.requester_id(), r.target(), false),
    )
    .await
    .map(|held| !held)
}

/// Grants request `id` (see the module's "Order of a grant"), from `view`
/// when the tick read it already; `batch`: the tick's shared reads of
/// targets' holders, for a burst of grants of one target;
/// `disabled_since`: when the tick that handed it out began, if its grants
/// share a read of the realm's disabled users ([`shared_disabled`]).
async fn activate(
    state: &AppState,
    id: &str,
    view: Option<WorkView>,
    batch: Option<&TickHolders>,
    disabled_since: Option<Instant>,
) -> Result<(), StoreError> {
    let Some(WorkView {
        stored: s,
        others_own,
    }) = view_of(state, id, view).await?
    else {
        return Ok(());
    };
    let now = Utc::now();
    if !s.request.is_due_for_activation(now) || s.grant.next_attempt_at.is_some_and(|t| t > now) {
        return Ok(());
    }
    let r = &s.request;
    let started = std::time::Instant::now();
    // Never granted late: past its window the grant is given up.
    let end = window_end(r);
    if now >= end {
        let mut reason = format!(
            "gave up granting: its window ended at {} before it could be granted",
            end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        if let Some(e) = &s.grant.last_error {
            reason.push_str(&format!("; last error: {e}"));
        }
        if let (Some(true), Some(t)) = (s.grant.owns_assignment, s.grant.assigning_since) {
            reason.push_str(&format!(
                "; an attempt from {} may have assigned it without being recorded: its removal checks Keycloak",
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
        }
        return fail_grant(state, id, reason).await;
    }
    // Only entitlements in the policy in force are ever granted, and only
    // with the Keycloak target the policy names.
    let policy = state.policy();
    let e = match policy.entitlement(r.entitlement_id()) {
        Some(e) if e.kind == *r.target() => e.clone(),
        _ => {
            let reason = format!(
                "'{}' is no longer in the policy (as {}); not granted",
                r.entitlement_id(),
                r.target()
            );
            return withdraw(state, id, &reason).await;
        }
    };
    // Eligibility may have been lost since the request was made (disabled
    // or deleted in Keycloak, removed from the group that may request it):
    // asked of Keycloak before the first attempt. For an entitlement
    // anyone may request only the enabled state counts: in a pass of a
    // few grants or more, from the read of the realm's disabled users its
    // grants share — alongside the ownership read when that is the pass's
    // shared read of the target's holders (neither takes a Keycloak slot),
    // so a burst's first grant waits for one call, not two. Otherwise, or
    // when that read is not usable, the requester's account is read, with
    // only what the entitlement's requester rule needs (`eligibility`). A
    // deleted requester of an entitlement anyone may request fails at the
    // ownership check or the assignment ("user no longer exists").
    let mut owns_read = None;
    if s.grant.owns_assignment.is_none() {
        let open = e.requester_roles.is_empty() && e.requester_groups.is_empty();
        if open && disabled_since.is_some() {
            // Neither shared read takes a Keycloak slot, and the ownership
            // decision is written (which gives the slot back) before the
            // assignment is sent: a slot held — or handed to this worker's
            // place in the queue — while the pass's reads are under way
            // would sit idle for them (up to all of the slots at the start
            // of each pass).
            step_aside();
        }
        let listed = match (open, disabled_since) {
            (true, Some(since)) if batch.is_some() => {
                let (listed, owns) = tokio::join!(
                    shared_disabled(state, r.requester_id(), since),
                    read_owns(state, batch, others_own, r)
                );
                owns_read = Some(owns);
                listed
            }
            (true, Some(since)) => shared_disabled(state, r.requester_id(), since).await,
            _ => None,
        };
        let eligible = match listed {
            Some(true) => Ok(Some(format!(
                "no longer eligible: {} is disabled in Keycloak",
                r.requester_username()
            ))),
            Some(false) => Ok(None),
            None => eligibility(state, &e, r).await,
        };
        match eligible {
            Ok(None) => {}
            Ok(Some(reason)) => {
                tracing::warn!(request = id, %reason, "not granted");
                return withdraw(state, id, &reason).await;
            }
            Err(err) if err.is_transient() => {
                return record_failure(state, id, err.to_string()).await
            }
            Err(err) => {
                let reason = if err.is_not_found() {
                    format!(
                        "no longer eligible: {} no longer exists in Keycloak",
                        r.requester_username()
                    )
                } else {
                    explain_refusal(state, &e.id, r.target(), &err).await
                };
                return fail_grant(state, id, reason).await;
            }
        }
    }
    // Whether this attempt decided the ownership (and so wrote
    // `assigning_since` itself, just now).
    let mut fresh = false;
    let owns = match s.grant.owns_assignment {
        Some(o) => o,
        None => {
            let read = match owns_read {
                Some(read) => read,
                None => read_owns(state, batch, others_own, r).await,
            };
            let decided = match read {
                Ok(owns) => owns,
                Err(err) if err.is_transient() => {
                    return record_failure(state, id, err.to_string()).await
                }
                Err(err) => {
                    let reason = explain_refusal(state, &e.id, r.target(), &err).await;
                    return fail_grant(state, id, reason).await;
                }
            };
            let r = commit(state, id, move |s| {
                if !s.request.is_due_for_activation(Utc::now()) {
                    return Err(DomainError::IllegalTransition {
                        from: s.request.status(),
                        action: jit_core::model::Action::Activate,
                    });
                }
                s.grant.owns_assignment = Some(decided);
                if decided {
                    s.grant.assigning_since = Some(Utc::now());
                }
                Ok(vec![])
            })
            .await;
            match r {
                Ok(_) => {}
                // Cancelled meanwhile: nothing assigned, nothing to do.
                Err(StoreError::Domain(DomainError::IllegalTransition { .. })) => return Ok(()),
                Err(e) => return Err(e),
            }
            fresh = true;
            decided
        }
    };
    // When the role has been in Keycloak since an earlier attempt that was
    // not recorded (jitd stopped after the assignment landed, or its answer
    // never came): the grant counts from then, so a crash never makes a
    // grant longer than its duration.
    let mut since = None;
    if owns && !fresh {
        let earlier = match s.grant.assigning_since {
            Some(at) => match call(
                state,
                state.admin.holds(r.requester_id(), r.target(), false),
            )
            .await
            {
                Ok(true) => Some(at),
                Ok(false) => None,
                Err(err) if err.is_transient() => {
                    return record_failure(state, id, err.to_string()).await
                }
                Err(err) => {
                    let reason = explain_refusal(state, &e.id, r.target(), &err).await;
                    return fail_grant(state, id, reason).await;
                }
            },
            None => None,
        };
        match earlier {
            Some(at) => since = Some(at),
            // No earlier assignment landed: this attempt's start goes to
            // disk before its assignment is sent.
            None => {
                let r = commit(state, id, move |s| {
                    if !s.request.is_due_for_activation(Utc::now()) {
                        return Err(DomainError::IllegalTransition {
                            from: s.request.status(),
                            action: jit_core::model::Action::Activate,
                        });
                    }
                    s.grant.assigning_since = Some(Utc::now());
                    Ok(vec![])
                })
                .await;
                match r {
                    Ok(_) => {}
                    Err(StoreError::Domain(DomainError::IllegalTransition { .. })) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        }
    }
    if owns && since.is_none() {
        // The extension must know the grant's end before any token carries the role.
        ensure_slot(state).await;
        crate::grant_ends::before_assign(state, r.requester_id()).await;
        // The wait for a slot and the grant-ends write can take a while: a
        // request cancelled or revoked meanwhile is not assigned at all
        // (its removal, set when it ended, finds nothing to remove). What
        // ends it between this read and the assignment is removed by that
        // removal, which then says so in the audit trail.
        match read(state.store.get(id)).await? {
            Some(now) if now.request.is_due_for_activation(Utc::now()) => {}
            _ => return Ok(()),
        }
        match call(state, state.admin.assign(r.requester_id(), r.target())).await {
            Ok(()) => {}
            Err(err) if err.is_transient() => {
                return record_failure(state, id, err.to_string()).await
            }
            Err(err) => {
                let reason = explain_refusal(state, &e.id, r.target(), &err).await;
                return fail_grant_refused(state, id, reason).await;
            }
        }
    }
    let result = commit_last(state, id, move |s| {
        let now = Utc::now();
        let t = s.request.activate_since(since.unwrap_or(now), now)?;
        s.grant.granted_at = Some(now);
        s.grant.attempts = 0;
        s.grant.next_attempt_at = None;
        s.grant.last_error = None;
        let mut entries = vec![Entry::from(t)];
        if !owns {
            entries.push(Entry::Note(Note {
                event: EventKind::GrantStanding,
                actor: jit_core::model::SYSTEM_ACTOR.into(),
                reason: Some("already held before this grant (standing or overlapping); JIT will not remove it".into()),
                at: Utc::now(),
            }));
        }
        Ok(entries)
    })
    .await;
    match result {
        Ok((s, recs)) => {
            // Due at the later of the decision and the scheduled start.
            let due = r.decided_at().max(r.start_at()).unwrap_or(r.created_at());
            let late = (Utc::now() - due).num_milliseconds() as f64 / 1000.0;
            state.metrics.granted(started.elapsed(), late);
            tracing::info!(request = id, target = %r.target(), user = %r.requester_username(), "granted");
            state.published_quietly_with(&recs, &s);
            if let Some(x) = s.request.expires_at() {
                state.scheduler.due_at(state, x);
            }
            Ok(())
        }
        // Cancelled or revoked while we were granting: the removal path
        // (set by end_grant, since owns_assignment is decided) cleans up.
        Err(StoreError::Domain(DomainError::IllegalTransition { .. })) => {
            state
                .store
                .update(id, |s| {
                    if s.request.status().is_terminal() && s.grant.removed_at.is_none() {
                        s.grant.removal_pending = true;
                    }
                    Ok(vec![])
                })
                .await?;
            state.wake.notify_one();
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// A worker's store change to request `id`, group-committed with the
/// other workers' ([`CommitBatcher`]); same answer as `Store::update`.
async fn commit(
    state: &AppState,
    id: &str,
    change: impl FnOnce(&mut Stored) -> Result<Vec<Entry>, DomainError> + Send + 'static,
) -> Result<(Stored, Vec<AuditRecord>), StoreError> {
    commit_with(state, id, false, change).await
}

/// [`commit`] of a worker's last write of an item (the grant confirmed,
/// the removal done): with several replicas, the item's claim is given
/// back in the same statement, not in a transaction of its own after the
/// worker ends. A refused change keeps the claim (the worker releases it).
async fn commit_last(
    state: &AppState,
    id: &str,
    change: impl FnOnce(&mut Stored) -> Result<Vec<Entry>, DomainError> + Send + 'static,
) -> Result<(Stored, Vec<AuditRecord>), StoreError> {
    commit_with(state, id, true, change).await
}

async fn commit_with(
    state: &AppState,
    id: &str,
    last: bool,
    change: impl FnOnce(&mut Stored) -> Result<Vec<Entry>, DomainError> + Send + 'static,
) -> Result<(Stored, Vec<AuditRecord>), StoreError> {
    // Keycloak is not used while waiting for the disk: another item may.
    release_slot();
    let release = (last && state.store.shared() && in_worker()).then_some(state.replica.as_str());
    let t = Instant::now();
    let r = state
        .scheduler
        .commits
        .update_releasing(&state.store, id, release, change)
        .await;
    spend(|s| s.commit += t.elapsed());
    if release.is_some() && r.is_ok() {
        let _ = SLOT.try_with(|s| s.borrow_mut().released.insert(id.to_string()));
    }
    r
}

/// Clears `removal_pending` with one audit note.
async fn finish_removal(
    state: &AppState,
    id: &str,
    event: EventKind,
    reason: String,
    removed: bool,
) -> Result<(), StoreError> {
    let note = reason.clone();
    let kind = event.clone();
    let (stored, recs) = commit_last(state, id, move |s| {
        if !s.grant.removal_pending {
            // Done meanwhile (another replica took over a lapsed claim):
            // record nothing twice.
            return Ok(vec![]);
        }
        s.grant.removal_pending = false;
        if removed {
            s.grant.removed_at = Some(Utc::now());
        }
        s.grant.attempts = 0;
        s.grant.next_attempt_at = None;
        s.grant.last_error = None;
        Ok(vec![Entry::Note(Note {
            event: kind.clone(),
            actor: jit_core::model::SYSTEM_ACTOR.into(),
            reason: Some(note),
            at: Utc::now(),
        })])
    })
    .await?;
    if recs.is_empty() {
        return Ok(());
    }
    tracing::info!(request = id, event = event.as_str(), %reason, "grant ended in Keycloak");
    state.published_quietly_with(&recs, &stored);
    Ok(())
}

/// Keycloak forbids the removal for good: no more retries; the grant shows
/// `removal_failed` and the reason, and the audit says so.
async fn removal_failed(state: &AppState, id: &str, err: &KeycloakError) -> Result<(), StoreError> {
    release_slot();
    let reason = format!("Keycloak refused the removal; an administrator must remove it: {err}");
    tracing::error!(request = id, %reason, "removal failed for good");
    let (_, recs) = state
        .store
        .update(id, move |s| Ok(removal_failed_in(s, reason)))
        .await?;
    state.metrics.removal_failed();
    state.published(&recs);
    Ok(())
}

/// The store side of a removal given up: not pending any more,
/// `removal_failed` with `reason`, one audit note `grant.removal_failed`.
fn removal_failed_in(s: &mut Stored, reason: String) -> Vec<Entry> {
    s.grant.removal_pending = false;
    s.grant.removal_failed = true;
    s.grant.next_attempt_at = None;
    s.grant.last_error = Some(reason.clone());
    vec![Entry::Note(Note {
        event: EventKind::GrantRemovalFailed,
        actor: jit_core::model::SYSTEM_ACTOR.into(),
        reason: Some(reason),
        at: Utc::now(),
    })]
}

/// What request `s` is, said for a retry of its removal that has nothing
/// to retry: never granted (with its status), still active, a removal
/// under way, or a removal done (or nothing JIT had to remove).
fn nothing_to_retry(s: &Stored) -> String {
    let r = &s.request;
    let g = &s.grant;
    let at = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let what = format!("{} ({})", r.id(), r.entitlement_id());
    if r.activated_at().is_none() {
        return match r.status() {
            Status::Pending | Status::Approved => format!(
                "request {what} has not been granted (it is {}): nothing to remove",
                r.status()
            ),
            st => format!("request {what} was never granted (it is {st}): nothing to remove"),
        };
    }
    if r.status() == Status::Active {
        return format!(
            "grant {what} is still active: its role is removed when it ends (drop or revoke it to end it now); no removal has failed"
        );
    }
    if g.removal_pending {
        return format!(
            "grant {what} has ended and jitd is removing its role now{}: the removal has not failed, nothing to retry",
            g.last_error
                .as_deref()
                .map(|e| format!(" (last attempt: {e})"))
                .unwrap_or_default()
        );
    }
    match g.removed_at {
        Some(t) if g.owns_assignment == Some(true) => format!(
            "grant {what} has ended and its role was removed from Keycloak at {}: nothing to retry",
            at(t)
        ),
        _ => format!(
            "grant {what} has ended and JIT had nothing to remove (the role was held before the grant, or another grant keeps it): nothing to retry"
        ),
    }
}

/// The store side of retrying a given-up removal (`removal_failed`), asked
/// by `actor` (an approver of the entitlement or the requester; the caller
/// checks that) with an optional `comment`: the removal is pending and due
/// at once again with a fresh retry budget (`removal_retry_limit_secs`
/// counts from zero), and one audit note `grant.removal_retried` says who
/// asked and why. jitd then removes the assignment, or finds it already
/// gone (an administrator removed it by hand), and ends the removal the
/// usual way (`grant.removed`, or `removal_failed` again if Keycloak still
/// refuses). Nobody can mark a removal done without Keycloak confirming it.
///
/// Errors: [`DomainError::RemovalNotFailed`] when the grant's removal has
/// not been given up (nothing to retry; a pending removal is already
/// being retried).
pub fn retry_removal_in(
    s: &mut Stored,
    actor: &str,
    comment: Option<String>,
    now: DateTime<Utc>,
) -> Result<Vec<Entry>, jit_core::DomainError> {
    if !s.grant.removal_failed {
        return Err(jit_core::DomainError::RemovalNotFailed {
            id: s.request.id().to_string(),
            why: nothing_to_retry(s),
        });
    }
    let given_up = s.grant.last_error.take().unwrap_or_default();
    s.grant.removal_failed = false;
    s.grant.removal_pending = true;
    s.grant.attempts = 0;
    s.grant.next_attempt_at = None;
    let reason = match comment {
        Some(c) => format!("{c} (removal had failed: {given_up})"),
        None => format!("removal had failed: {given_up}"),
    };
    Ok(vec![Entry::Note(Note {
        event: EventKind::GrantRemovalRetried,
        actor: actor.to_string(),
        reason: Some(reason),
        at: now,
    })])
}

/// Removes what request `id` assigned (see the module's "Order of a
/// removal"), from `view` when the tick read it already.
async fn remove(state: &AppState, id: &str, view: Option<WorkView>) -> Result<(), StoreError> {
    let Some(WorkView {
        stored: s,
        others_own,
    }) = view_of(state, id, view).await?
    else {
        return Ok(());
    };
    if !s.grant.removal_pending || s.grant.next_attempt_at.is_some_and(|t| t > Utc::now()) {
        return Ok(());
    }
    let r = &s.request;
    let gone = || {
        format!(
            "nothing left to remove: the user or {} no longer exists in Keycloak",
            r.target()
        )
    };
    if others_own.is_some() {
        return finish_removal(
            state,
            id,
            EventKind::GrantKept,
            "another active grant of the same entitlement remains; role kept".into(),
            false,
        )
        .await;
    }
    if s.grant.owns_assignment != Some(true) {
        return finish_removal(
            state,
            id,
            EventKind::GrantKept,
            "standing assignment held before the grant; JIT never removes it".into(),
            false,
        )
        .await;
    }
    if s.grant.granted_at.is_none() {
        // Ended before the grant was confirmed: remove only what an
        // interrupted attempt may have assigned.
        match call(
            state,
            state.admin.holds(r.requester_id(), r.target(), false),
        )
        .await
        {
            Ok(true) => {}
            Ok(false) => {
                return finish_removal(
                    state,
                    id,
                    EventKind::GrantNothingToRemove,
                    "never granted in Keycloak; nothing to remove".into(),
                    false,
                )
                .await
            }
            Err(e) if e.is_not_found() => {
                return finish_removal(state, id, EventKind::GrantNothingToRemove, gone(), false)
                    .await
            }
            Err(e) if e.is_transient() => return record_failure(state, id, e.to_string()).await,
            Err(e) => return removal_failed(state, id, &e).await,
        }
    }
    let started = std::time::Instant::now();
    match call(state, state.admin.unassign(r.requester_id(), r.target())).await {
        Ok(()) => {}
        Err(e) if e.is_not_found() => {
            return finish_removal(state, id, EventKind::GrantRemoved, gone(), true).await
        }
        Err(e) if e.is_transient() => return record_failure(state, id, e.to_string()).await,
        Err(e) => return removal_failed(state, id, &e).await,
    }
    let end_sessions = state
        .policy()
        .entitlement(r.entitlement_id())
        .is_some_and(|e| e.end_sessions_on_revoke);
    let mut sessions_note = String::new();
    if end_sessions {
        match call(state, state.admin.end_sessions(r.requester_id())).await {
            Ok(ended) => {
                sessions_note = format!(
                    "; user sessions ended ({} offline session{})",
                    ended.offline,
                    if ended.offline == 1 { "" } else { "s" }
                )
            }
            Err(e) if e.is_not_found() => {}
            Err(e) if e.is_transient() => {
                return record_failure(
                    state,
                    id,
                    format!("role removed, ending sessions failed: {e}"),
                )
                .await
            }
            Err(e) => sessions_note = format!("; ending the user's sessions was refused: {e}"),
        }
    }
    // Late relative to when access should have ended: expires_at for an
    // expiry (even if jitd was down then), else when it was ended.
    let due = match r.status() {
        Status::Expired => r.expires_at().or(r.ended_at()),
        _ => r.ended_at(),
    };
    let late = due
        .map(|t| (Utc::now() - t).num_milliseconds() as f64 / 1000.0)
        .unwrap_or(0.0);
    state.metrics.removed(started.elapsed(), late);
    let mut why = format!("{} removed from Keycloak{sessions_note}", r.target());
    if s.grant.granted_at.is_none() {
        // The audit trail has no `grant.granted` for it: say how it got there.
        why.push_str(
            "; it had been assigned by a grant attempt the request ended before (no grant was recorded)",
        );
    }
    if late > 5.0 {
        why.push_str(&format!("; {late:.0} s late"));
    }
    finish_removal(state, id, EventKind::GrantRemoved, why, true).await
}
