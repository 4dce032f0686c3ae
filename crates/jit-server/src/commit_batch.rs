//! Group commit for the scheduler's per-request store changes.
//!
//! Every grant and removal ends with a store change (ownership decided,
//! request activated, removal confirmed), each its own transaction with a
//! disk sync (`synchronous=FULL`): about 5 ms on the development machine,
//! and one at a time — which capped a burst at ~200 removals/s and ~100
//! activations/s whatever Keycloak could do. Here the changes that arrive
//! while a commit is running are written together in the next single
//! transaction ([`crate::Store::update_each`]): each change still sees the
//! request's latest state, is all-or-nothing for its request (a refused
//! change writes nothing for that request) and is on disk before its caller
//! goes on; an idle scheduler commits at once (no added wait).
//!
//! With several replicas, a worker's last write of an item gives back its
//! claim in the same statement ([`CommitBatcher::update_releasing`]); the
//! claims of work that ended otherwise (refused, failed, skipped) are given
//! back the same way as the changes ([`ReleaseBatcher`]): what the workers
//! finish while a release runs is released together in the next statement.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jit_core::DomainError;
use tokio::sync::oneshot;

use crate::events::Hub;
use crate::store::{AuditRecord, Entry, StoreError, Stored};
use crate::Store;

/// A change to one stored request (as given to [`Store::update`]).
pub type Change = Box<dyn FnOnce(&mut Stored) -> Result<Vec<Entry>, DomainError> + Send>;

type Reply = Result<(Stored, Vec<AuditRecord>), StoreError>;

struct Job {
    id: String,
    change: Change,
    reply: oneshot::Sender<Reply>,
    /// Give back this replica's claim on the request with the change
    /// (the claim's owner).
    release: Option<String>,
}

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    /// A writer task is draining the queue.
    writing: bool,
}

/// Batches [`Store::update`]-like changes into shared transactions.
#[derive(Default)]
pub struct CommitBatcher {
    queue: Arc<Mutex<Queue>>,
    /// Where each batch's audit rows go before any of its callers hears
    /// back ([`CommitBatcher::hand_to`]).
    hub: std::sync::OnceLock<Arc<Hub>>,
}

/// Most changes written in one transaction.
const MAX_BATCH: usize = 256;

impl CommitBatcher {
    /// From now on each batch hands all its audit rows, with the requests
    /// as written, to `hub` before it answers any caller. The callers still
    /// publish their own rows (`AppState::published_with`); but a row of a
    /// batch is then never announced before an earlier row of the same
    /// batch is with the hub, so the hub does not read from the store a
    /// row that is on its way (with several callers of one batch woken in
    /// any order, it did, for about one batch in two).
    pub fn hand_to(&self, hub: Arc<Hub>) {
        let _ = self.hub.set(hub);
    }

    /// Applies `change` to request `id` and commits it, together with the
    /// changes of other callers waiting at the same time. Same result as
    /// [`Store::update`]: the request after the change and its audit rows,
    /// or the change's refusal (nothing written for this request), or
    /// [`DomainError::NotFound`].
    pub async fn update(
        &self,
        store: &Store,
        id: &str,
        change: impl FnOnce(&mut Stored) -> Result<Vec<Entry>, DomainError> + Send + 'static,
    ) -> Reply {
        self.update_releasing(store, id, None, change).await
    }

    /// [`CommitBatcher::update`] that, when the change is written, also
    /// gives back the claim `release` (the replica that owns it) holds on
    /// the request, in the same statement ([`Store::update_each_releasing`]).
    /// A refused change keeps the claim.
    pub async fn update_releasing(
        &self,
        store: &Store,
        id: &str,
        release: Option<&str>,
        change: impl FnOnce(&mut Stored) -> Result<Vec<Entry>, DomainError> + Send + 'static,
    ) -> Reply {
        let (tx, rx) = oneshot::channel();
        let start_writer = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.jobs.push(Job {
                id: id.to_string(),
                change: Box::new(change),
                reply: tx,
                release: release.map(str::to_string),
            });
            !std::mem::replace(&mut q.writing, true)
        };
        if start_writer {
            let queue = self.queue.clone();
            let store = store.clone();
            let hub = self.hub.get().cloned();
            tokio::spawn(async move { drain(queue, store, hub).await });
        }
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Corrupt(
                "the store writer stopped before committing".into(),
            )),
        }
    }
}

/// Writes batches until the queue is empty.
async fn drain(queue: Arc<Mutex<Queue>>, store: Store, hub: Option<Arc<Hub>>) {
    loop {
        let jobs = {
            let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
            if q.jobs.is_empty() {
                q.writing = false;
                return;
            }
            // One change per request per transaction; the rest wait for
            // the next (they must see this one's result). Claims of one
            // owner per transaction (one replica has one owner name).
            let mut seen = std::collections::HashSet::new();
            let mut now = Vec::new();
            let mut later = Vec::new();
            let mut owner: Option<String> = None;
            for j in std::mem::take(&mut q.jobs) {
                let same_owner = match (&j.release, &owner) {
                    (Some(o), Some(first)) => o == first,
                    _ => true,
                };
                if now.len() < MAX_BATCH && same_owner && seen.insert(j.id.clone()) {
                    if owner.is_none() {
                        owner.clone_from(&j.release);
                    }
                    now.push(j);
                } else {
                    later.push(j);
                }
            }
            q.jobs = later;
            now
        };
        write(&store, jobs, hub.as_deref()).await;
    }
}

/// One transaction for `jobs`; answers each.
async fn write(store: &Store, jobs: Vec<Job>, hub: Option<&Hub>) {
    let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
    let release = jobs.iter().find_map(|j| j.release.clone()).map(|owner| {
        let which: std::collections::HashSet<String> = jobs
            .iter()
            .filter(|j| j.release.is_some())
            .map(|j| j.id.clone())
            .collect();
        (owner, which)
    });
    let slots: HashMap<String, Slot> = jobs
        .into_iter()
        .map(|j| {
            (
                j.id,
                Slot {
                    change: Some(j.change),
                    reply: Some(j.reply),
                    result: None,
                },
            )
        })
        .collect();
    let slots = Arc::new(Mutex::new(slots));
    let inside = slots.clone();
    let started = std::time::Instant::now();
    let changes = ids.len();
    let r = store
        .update_each_releasing(ids, release, move |s| {
            let mut slots = inside.lock().unwrap_or_else(|p| p.into_inner());
            let Some(slot) = slots.get_mut(s.request.id()) else {
                return Err(DomainError::NotFound);
            };
            let Some(change) = slot.change.take() else {
                return Err(DomainError::NotFound);
            };
            match change(s) {
                Ok(entries) => {
                    slot.result = Some(Ok(s.clone()));
                    Ok(entries)
                }
                Err(e) => {
                    slot.result = Some(Err(e.clone()));
                    Err(e)
                }
            }
        })
        .await;
    tracing::debug!(
        changes,
        ms = started.elapsed().as_secs_f64() * 1e3,
        "group commit"
    );
    let mut slots = slots.lock().unwrap_or_else(|p| p.into_inner());
    match r {
        Ok((_, recs)) => {
            let mut by_request: HashMap<&str, Vec<AuditRecord>> = HashMap::new();
            for rec in &recs {
                by_request
                    .entry(rec.request_id.as_str())
                    .or_default()
                    .push(rec.clone());
            }
            if let Some(hub) = hub {
                for (id, rows) in &by_request {
                    if let Some(Some(Ok(s))) = slots.get(*id).map(|slot| slot.result.as_ref()) {
                        hub.hand_over(rows, Some(s));
                    }
                }
            }
            for (id, slot) in slots.iter_mut() {
                let reply = match slot.result.take() {
                    Some(Ok(s)) => Ok((s, by_request.remove(id.as_str()).unwrap_or_default())),
                    Some(Err(e)) => Err(StoreError::Domain(e)),
                    None => Err(StoreError::Domain(DomainError::NotFound)),
                };
                if let Some(tx) = slot.reply.take() {
                    let _ = tx.send(reply);
                }
            }
        }
        Err(e) => {
            let msg = e.to_string();
            tracing::error!(error = %msg, "store batch failed; nothing of it was written");
            for slot in slots.values_mut() {
                if let Some(tx) = slot.reply.take() {
                    let _ = tx.send(Err(not_written(&e)));
                }
            }
        }
    }
}

/// One job's change, answer and outcome inside a batch.
struct Slot {
    change: Option<Change>,
    reply: Option<oneshot::Sender<Reply>>,
    result: Option<Result<Stored, DomainError>>,
}

/// Gives back finished work's claims ([`Store::release_many`]), the
/// workers' that finish at the same time in one statement.
#[derive(Default)]
pub struct ReleaseBatcher {
    queue: Arc<Mutex<Releases>>,
}

/// One caller's release: `(owner, ids, reply)`.
type ReleaseJob = (String, Vec<String>, oneshot::Sender<Result<(), String>>);

#[derive(Default)]
struct Releases {
    jobs: Vec<ReleaseJob>,
    writing: bool,
}

impl ReleaseBatcher {
    /// Releases `owner`'s claims on `ids`, together with other callers'.
    /// Errors: the statement failed (the claims then lapse at their
    /// expiry).
    pub async fn release(
        &self,
        store: &Store,
        owner: &str,
        ids: Vec<String>,
    ) -> Result<(), String> {
        if ids.is_empty() {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        let start_writer = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.jobs.push((owner.to_string(), ids, tx));
            !std::mem::replace(&mut q.writing, true)
        };
        if start_writer {
            let queue = self.queue.clone();
            let store = store.clone();
            tokio::spawn(async move {
                loop {
                    let jobs = {
                        let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
                        if q.jobs.is_empty() {
                            q.writing = false;
                            return;
                        }
                        std::mem::take(&mut q.jobs)
                    };
                    let mut by_owner: HashMap<String, Vec<_>> = HashMap::new();
                    for job in jobs {
                        by_owner.entry(job.0.clone()).or_default().push(job);
                    }
                    for (owner, jobs) in by_owner {
                        let ids: Vec<String> = jobs
                            .iter()
                            .flat_map(|(_, ids, _)| ids.iter().cloned())
                            .collect();
                        let r = store
                            .release_many(ids, &owner)
                            .await
                            .map_err(|e| e.to_string());
                        for (_, _, tx) in jobs {
                            let _ = tx.send(r.clone());
                        }
                    }
                }
            });
        }
        rx.await
            .unwrap_or_else(|_| Err("the release task stopped".into()))
    }
}

/// What each caller of a batch that was not written hears: an outage stays
/// an outage ([`StoreError::Pool`], [`StoreError::TimedOut`]: logged and
/// answered as such, the work done again at a later pass), anything else
/// says the batch was not written.
fn not_written(e: &StoreError) -> StoreError {
    match e {
        StoreError::Pool(m) => StoreError::Pool(m.clone()),
        StoreError::TimedOut(s) => StoreError::TimedOut(*s),
        other => StoreError::Pg(format!("batch not written: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::not_written;
    use crate::store::StoreError;

    /// A batch lost to an outage tells its callers it was an outage (it
    /// said "corrupt row" before), anything else that it was not written.
    #[test]
    fn an_unwritten_batch_keeps_an_outage_an_outage() {
        assert!(matches!(
            not_written(&StoreError::Pool("connection closed".into())),
            StoreError::Pool(m) if m == "connection closed"
        ));
        assert!(matches!(
            not_written(&StoreError::TimedOut(10)),
            StoreError::TimedOut(10)
        ));
        let other = not_written(&StoreError::Pg("deadlock detected".into()));
        assert!(matches!(other, StoreError::Pg(_)));
        assert_eq!(
            other.to_string(),
            "database error: batch not written: database error: deadlock detected"
        );
    }
}
