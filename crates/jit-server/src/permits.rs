//! Slots for Keycloak work, handed out removals first.
//!
//! The scheduler lets at most `keycloak_concurrency` grants and removals
//! talk to Keycloak at once. When more are waiting, a free slot goes to the
//! oldest waiting removal; when none waits, to work that is half done (a
//! grant between its Keycloak calls); then to the oldest other work (new
//! grants, target checks). Taking access away matters most, so a burst of
//! grants — or a queue of grants that waited out a Keycloak outage — never
//! holds up a removal that is due; and a started grant finishes before new
//! ones start.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Which queue a waiter joins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// Work that takes access away.
    Removal,
    /// Work that already made a Keycloak call and needs another.
    Resume,
    /// Everything else.
    Other,
}

#[derive(Default)]
struct State {
    /// Slots in all.
    total: usize,
    free: usize,
    removals: VecDeque<oneshot::Sender<()>>,
    resumed: VecDeque<oneshot::Sender<()>>,
    others: VecDeque<oneshot::Sender<()>>,
}

/// A fixed number of slots, removals served first (FIFO within each kind).
pub struct Permits {
    state: Mutex<State>,
    /// Notified whenever a slot is given back (to a waiter or the pool):
    /// the scheduler then claims more due work ([`Permits::load`]).
    freed: tokio::sync::Notify,
}

/// One slot, given back when dropped.
pub struct Permit {
    owner: Arc<Permits>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.owner.release();
    }
}

/// Waits for a slot; if dropped after the slot was handed over but before
/// it was taken, gives it back.
pub struct Waiting {
    rx: Option<oneshot::Receiver<()>>,
    owner: Arc<Permits>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if rx.try_recv().is_ok() {
                self.owner.release();
            }
        }
    }
}

/// A place taken by [`Permits::ticket`]: a slot already, or a place in a
/// queue (given back if dropped).
pub enum Ticket {
    Ready(Permit),
    Queued(Waiting, Priority),
}

impl Ticket {
    /// The slot, once it is this ticket's turn.
    pub async fn wait(self) -> Permit {
        match self {
            Ticket::Ready(p) => p,
            Ticket::Queued(mut w, p) => {
                let owner = w.owner.clone();
                let got = w.rx.as_mut().expect("set at creation").await;
                w.rx = None;
                match got {
                    Ok(()) => Permit { owner },
                    // Never happens: senders are only dropped after a send or
                    // on a closed receiver. Take a slot the ordinary way.
                    Err(_) => Box::pin(owner.acquire(p)).await,
                }
            }
        }
    }
}

impl Permits {
    /// `n` slots (at least 1).
    pub fn new(n: usize) -> Arc<Permits> {
        Arc::new(Permits {
            state: Mutex::new(State {
                total: n.max(1),
                free: n.max(1),
                ..State::default()
            }),
            freed: tokio::sync::Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for work of kind `p`: at once if one is free and nobody who
    /// comes first is waiting, else when one is handed over.
    pub async fn acquire(self: &Arc<Self>, p: Priority) -> Permit {
        self.ticket(p).wait().await
    }

    /// Takes a place for work of kind `p` now (a free slot, or a place in
    /// its queue), without waiting: the order of places is the order of
    /// these calls, whatever order the tasks holding them run in.
    /// [`Ticket::wait`] then waits for the slot.
    pub fn ticket(self: &Arc<Self>, p: Priority) -> Ticket {
        let rx = {
            let mut s = self.lock();
            let ahead = match p {
                Priority::Removal => !s.removals.is_empty(),
                Priority::Resume => !s.removals.is_empty() || !s.resumed.is_empty(),
                Priority::Other => {
                    !s.removals.is_empty() || !s.resumed.is_empty() || !s.others.is_empty()
                }
            };
            if s.free > 0 && !ahead {
                s.free -= 1;
                return Ticket::Ready(Permit {
                    owner: self.clone(),
                });
            }
            let (tx, rx) = oneshot::channel();
            match p {
                Priority::Removal => s.removals.push_back(tx),
                Priority::Resume => s.resumed.push_back(tx),
                Priority::Other => s.others.push_back(tx),
            }
            rx
        };
        Ticket::Queued(
            Waiting {
                rx: Some(rx),
                owner: self.clone(),
            },
            p,
        )
    }

    /// Gives a slot back: to the oldest waiting removal, else the oldest
    /// resumed work, else the oldest other waiter, else to the free pool.
    fn release(&self) {
        self.hand_over();
        self.freed.notify_one();
    }

    fn hand_over(&self) {
        let mut s = self.lock();
        loop {
            let next = s
                .removals
                .pop_front()
                .or_else(|| s.resumed.pop_front())
                .or_else(|| s.others.pop_front());
            match next {
                Some(tx) => {
                    if tx.send(()).is_ok() {
                        return;
                    }
                    // That waiter gave up; try the next.
                }
                None => {
                    s.free += 1;
                    return;
                }
            }
        }
    }

    /// Slots free right now.
    pub fn available(&self) -> usize {
        self.lock().free
    }

    /// Work that holds a slot or waits for one right now (places taken by
    /// [`Permits::ticket`] included): what this process will send to
    /// Keycloak soon.
    pub fn load(&self) -> usize {
        let s = self.lock();
        let waiting =
            |q: &VecDeque<oneshot::Sender<()>>| q.iter().filter(|tx| !tx.is_closed()).count();
        (s.total - s.free) + waiting(&s.removals) + waiting(&s.resumed) + waiting(&s.others)
    }

    /// Resolves once a slot was given back since the last such wake-up
    /// (a permit is kept if nobody waits: none is missed).
    pub async fn freed(&self) {
        self.freed.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn freed_slots_go_to_removals_then_resumed_then_other_work() {
        let p = Permits::new(1);
        let held = p.acquire(Priority::Other).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, prio) in [
            (0, Priority::Other),
            (1, Priority::Other),
            (2, Priority::Resume),
            (3, Priority::Removal),
            (4, Priority::Removal),
        ] {
            let slots = p.clone();
            let order = order.clone();
            tasks.push(tokio::spawn(async move {
                let _slot = slots.acquire(prio).await;
                order.lock().unwrap().push(i);
            }));
            // Each one queued before the next is started.
            let want = i + 1;
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                let queued = {
                    let s = p.lock();
                    s.removals.len() + s.resumed.len() + s.others.len()
                };
                if queued == want {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "waiter {i} not queued"
                );
                tokio::task::yield_now().await;
            }
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [3, 4, 2, 0, 1]);
        assert_eq!(p.available(), 1);
    }

    #[tokio::test]
    async fn tickets_are_served_in_the_order_they_were_taken_not_the_order_tasks_run() {
        let p = Permits::new(1);
        let first = p.ticket(Priority::Other);
        let second = p.ticket(Priority::Removal);
        let third = p.ticket(Priority::Other);
        // The second ticket's task runs first: it still waits for the
        // first (which took the free slot), and the third for the second.
        let order = Arc::new(Mutex::new(Vec::new()));
        let (o2, o3) = (order.clone(), order.clone());
        let t2 = tokio::spawn(async move {
            let _s = second.wait().await;
            o2.lock().unwrap().push(2);
        });
        let t3 = tokio::spawn(async move {
            let _s = third.wait().await;
            o3.lock().unwrap().push(3);
        });
        tokio::task::yield_now().await;
        assert!(order.lock().unwrap().is_empty(), "no slot was free");
        let s1 = first.wait().await;
        order.lock().unwrap().push(1);
        drop(s1);
        t2.await.unwrap();
        t3.await.unwrap();
        assert_eq!(*order.lock().unwrap(), [1, 2, 3]);
        assert_eq!(p.available(), 1);
        // A dropped ticket gives its place (and a slot handed to it) back.
        let held = p.acquire(Priority::Other).await;
        let dropped = p.ticket(Priority::Removal);
        drop(held);
        drop(dropped);
        assert_eq!(p.available(), 1);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_does_not_lose_the_slot() {
        let p = Permits::new(1);
        let held = p.acquire(Priority::Other).await;
        let waiting = tokio::spawn({
            let p = p.clone();
            async move {
                let _slot = p.acquire(Priority::Removal).await;
            }
        });
        while p.lock().removals.is_empty() {
            tokio::task::yield_now().await;
        }
        waiting.abort();
        let _ = waiting.await;
        drop(held);
        assert_eq!(p.available(), 1);
        let _again = p.acquire(Priority::Other).await;
        assert_eq!(p.available(), 0);
    }
}
