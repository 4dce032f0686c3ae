//! An in-process Keycloak Admin API for tests of one piece (the scheduler,
//! the router): a small model of users, roles and groups behind the
//! [`KeycloakAdmin`] trait, with injectable faults — permanent 404 / 403 /
//! 400, transient 5xx / 429, refused connections, hung calls — and a record
//! of every call (to check concurrency and per-assignment ordering).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jit_core::EntitlementKind;
use jit_keycloak::{
    CurrentUser, KeycloakAdmin, KeycloakError, SessionsEnded, TargetStatus, UserParts,
};

/// Which trait method a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Holds,
    /// One read of all direct holders of a target (`user` is empty).
    Holders,
    Assign,
    Unassign,
    EndSessions,
    UserAccess,
    TargetStatus,
    Ready,
    /// A write of the grant-ends attribute.
    SetAttribute,
    /// One read of the realm's disabled users (`user` is empty).
    Disabled,
}

/// What a faulty call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    NotFound,
    Forbidden,
    BadRequest,
    /// 5xx with this status.
    Server(u16),
    TooMany,
    Refused,
    /// Never answers (until the caller gives up).
    Hang,
    /// Keycloak refuses the service account's login (a wrong secret).
    LoginRefused,
    /// Does what was asked, then never answers: the caller cannot know it
    /// landed (a lost answer, or jitd stopping right after sending).
    LandedThenHang,
}

impl Fault {
    fn error(self, what: &str) -> KeycloakError {
        let status = |s: u16| KeycloakError::Status {
            status: s,
            what: what.to_string(),
            body: String::new(),
        };
        match self {
            Fault::NotFound => KeycloakError::NotFound(what.to_string()),
            Fault::Forbidden => status(403),
            Fault::BadRequest => status(400),
            Fault::Server(s) => status(s),
            Fault::TooMany => status(429),
            Fault::Refused => KeycloakError::Unavailable("connection refused".into()),
            Fault::LoginRefused => KeycloakError::Login(
                "HTTP 401 Unauthorized: {\"error\":\"unauthorized_client\",\"error_description\":\"Invalid client or Invalid client credentials\"}".into(),
            ),
            Fault::Hang | Fault::LandedThenHang => unreachable!("hang is not an error"),
        }
    }
}

struct Rule {
    op: Option<Op>,
    user: Option<String>,
    fault: Fault,
    /// How many more calls it hits (None: until cleared).
    left: Option<usize>,
}

/// One user of the model.
#[derive(Debug, Clone, Default)]
pub struct FakeUser {
    pub enabled: bool,
    /// Realm roles held outside JIT (effective).
    pub roles: BTreeSet<String>,
    /// Group paths without the leading `/`.
    pub groups: BTreeSet<String>,
    /// Targets assigned directly (by JIT or standing).
    pub assigned: HashSet<EntitlementKind>,
    pub offline_sessions: usize,
    pub online_sessions: usize,
}

/// A finished or running call.
#[derive(Debug, Clone)]
pub struct Call {
    pub op: Op,
    pub user: String,
    pub target: Option<EntitlementKind>,
    pub start: Instant,
    pub end: Option<Instant>,
}

/// The fake. Cheap to share (`Arc`).
pub struct FakeKeycloak {
    users: Mutex<HashMap<String, FakeUser>>,
    targets: Mutex<HashMap<EntitlementKind, TargetStatus>>,
    rules: Mutex<Vec<Rule>>,
    calls: Mutex<Vec<Call>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    hanging: AtomicUsize,
    /// Each call takes this long (to make overlap observable).
    latency: Mutex<Duration>,
    /// Changes made right after the next answer of a call of an [`Op`]
    /// (see [`FakeKeycloak::after_next`]).
    after: Mutex<Vec<AfterHook>>,
}

type AfterHook = (Op, Box<dyn FnOnce(&FakeKeycloak) + Send>);

impl Default for FakeKeycloak {
    fn default() -> Self {
        FakeKeycloak {
            users: Mutex::new(HashMap::new()),
            targets: Mutex::new(HashMap::new()),
            rules: Mutex::new(Vec::new()),
            calls: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            hanging: AtomicUsize::new(0),
            latency: Mutex::new(Duration::ZERO),
            after: Mutex::new(Vec::new()),
        }
    }
}

fn user_missing(id: &str) -> KeycloakError {
    KeycloakError::NotFound(format!("user {id}"))
}

impl FakeKeycloak {
    /// Adds (or replaces) user `id`, enabled, with `roles` and `groups`.
    pub fn add_user(&self, id: &str, roles: &[&str], groups: &[&str]) {
        self.users.lock().unwrap().insert(
            id.to_string(),
            FakeUser {
                enabled: true,
                roles: roles.iter().map(|s| s.to_string()).collect(),
                groups: groups.iter().map(|s| s.to_string()).collect(),
                ..FakeUser::default()
            },
        );
    }

    /// Changes user `id` in place.
    pub fn edit_user(&self, id: &str, f: impl FnOnce(&mut FakeUser)) {
        f(self
            .users
            .lock()
            .unwrap()
            .get_mut(id)
            .expect("user in fake"));
    }

    /// Deletes user `id` (with everything assigned to them).
    pub fn delete_user(&self, id: &str) {
        self.users.lock().unwrap().remove(id);
    }

    /// A copy of user `id`, if they exist.
    pub fn user(&self, id: &str) -> Option<FakeUser> {
        self.users.lock().unwrap().get(id).cloned()
    }

    /// Whether user `id` holds `t` directly.
    pub fn has(&self, id: &str, t: &EntitlementKind) -> bool {
        self.user(id).is_some_and(|u| u.assigned.contains(t))
    }

    /// Declares a target and what Keycloak would say about it.
    pub fn set_target(&self, t: EntitlementKind, status: TargetStatus) {
        self.targets.lock().unwrap().insert(t, status);
    }

    /// Deletes a target: its assignments go with it.
    pub fn delete_target(&self, t: &EntitlementKind) {
        self.targets.lock().unwrap().insert(
            t.clone(),
            TargetStatus::Missing(format!("{t} does not exist")),
        );
        for u in self.users.lock().unwrap().values_mut() {
            u.assigned.remove(t);
        }
    }

    /// Every call of `op` (any user when `user` is None) fails with `fault`
    /// until [`clear_faults`](Self::clear_faults); `times` limits it.
    pub fn fail(&self, op: Option<Op>, user: Option<&str>, fault: Fault, times: Option<usize>) {
        self.rules.lock().unwrap().push(Rule {
            op,
            user: user.map(str::to_string),
            fault,
            left: times,
        });
    }

    pub fn clear_faults(&self) {
        self.rules.lock().unwrap().clear();
    }

    pub fn set_latency(&self, d: Duration) {
        *self.latency.lock().unwrap() = d;
    }

    /// All calls so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Calls of `op` so far.
    pub fn count(&self, op: Op) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.op == op)
            .count()
    }

    /// The most calls that were in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// Calls hanging right now.
    pub fn hanging(&self) -> usize {
        self.hanging.load(Ordering::SeqCst)
    }

    /// Runs `f` once, right after the next call of `op` has its answer
    /// (the model changing between two look-ups of the caller, e.g. a
    /// removal landing after a read).
    pub fn after_next(&self, op: Op, f: impl FnOnce(&FakeKeycloak) + Send + 'static) {
        self.after.lock().unwrap().push((op, Box::new(f)));
    }

    fn fault_for(&self, op: Op, user: &str) -> Option<Fault> {
        let mut rules = self.rules.lock().unwrap();
        let i = rules.iter().position(|r| {
            r.op.is_none_or(|o| o == op)
                && r.user.as_deref().is_none_or(|u| u == user)
                && r.left != Some(0)
        })?;
        let fault = rules[i].fault;
        if let Some(n) = rules[i].left.as_mut() {
            *n -= 1;
        }
        Some(fault)
    }

    async fn enter<T>(
        &self,
        op: Op,
        user: &str,
        target: Option<&EntitlementKind>,
        f: impl FnOnce(&FakeKeycloak) -> Result<T, KeycloakError>,
    ) -> Result<T, KeycloakError> {
        let idx = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(Call {
                op,
                user: user.to_string(),
                target: target.cloned(),
                start: Instant::now(),
                end: None,
            });
            calls.len() - 1
        };
        // The grant-ends writer's calls and the shared read of disabled
        // users are outside the scheduler's slots: not counted as Keycloak
        // work in flight.
        let counted = !matches!(op, Op::SetAttribute | Op::Disabled);
        if counted {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        }
        struct Leave<'a>(&'a FakeKeycloak, usize, bool, bool);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                if self.3 {
                    self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
                }
                if self.2 {
                    self.0.hanging.fetch_sub(1, Ordering::SeqCst);
                }
                self.0.calls.lock().unwrap()[self.1].end = Some(Instant::now());
            }
        }
        let mut leave = Leave(self, idx, false, counted);
        let latency = *self.latency.lock().unwrap();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match self.fault_for(op, user) {
            Some(fault @ (Fault::Hang | Fault::LandedThenHang)) => {
                if fault == Fault::LandedThenHang {
                    let _ = f(self);
                }
                self.hanging.fetch_add(1, Ordering::SeqCst);
                leave.2 = true;
                std::future::pending::<()>().await;
                unreachable!()
            }
            Some(fault) => Err(fault.error(&format!("{op:?}"))),
            None => {
                let answer = f(self);
                let hook = {
                    let mut after = self.after.lock().unwrap();
                    after
                        .iter()
                        .position(|(o, _)| *o == op)
                        .map(|i| after.remove(i).1)
                };
                if let Some(hook) = hook {
                    hook(self);
                }
                answer
            }
        }
    }

    fn target_state(&self, t: &EntitlementKind) -> TargetStatus {
        self.targets
            .lock()
            .unwrap()
            .get(t)
            .cloned()
            .unwrap_or(TargetStatus::Available)
    }
}

#[async_trait::async_trait]
impl KeycloakAdmin for FakeKeycloak {
    async fn holds(
        &self,
        user_id: &str,
        target: &EntitlementKind,
        _effective: bool,
    ) -> Result<bool, KeycloakError> {
        self.enter(Op::Holds, user_id, Some(target), |k| {
            if let TargetStatus::Missing(m) = k.target_state(target) {
                if matches!(target, EntitlementKind::ClientRole { .. }) {
                    return Err(KeycloakError::NotFound(m));
                }
            }
            let users = k.users.lock().unwrap();
            let u = users.get(user_id).ok_or_else(|| user_missing(user_id))?;
            Ok(u.assigned.contains(target))
        })
        .await
    }

    async fn direct_holders(
        &self,
        target: &EntitlementKind,
        max: usize,
    ) -> Result<Option<std::collections::HashSet<String>>, KeycloakError> {
        self.enter(Op::Holders, "", Some(target), |k| {
            if let TargetStatus::Missing(m) = k.target_state(target) {
                return Err(KeycloakError::NotFound(m));
            }
            let users = k.users.lock().unwrap();
            let held: std::collections::HashSet<String> = users
                .iter()
                .filter(|(_, u)| u.assigned.contains(target))
                .map(|(id, _)| id.clone())
                .collect();
            Ok((held.len() <= max).then_some(held))
        })
        .await
    }

    /// As Keycloak's user search by attribute: every disabled user,
    /// service accounts included.
    async fn disabled_users(
        &self,
        max: usize,
    ) -> Result<Option<std::collections::HashSet<String>>, KeycloakError> {
        self.enter(Op::Disabled, "", None, |k| {
            let users = k.users.lock().unwrap();
            let off: std::collections::HashSet<String> = users
                .iter()
                .filter(|(_, u)| !u.enabled)
                .map(|(id, _)| id.clone())
                .collect();
            Ok((off.len() <= max).then_some(off))
        })
        .await
    }

    async fn assign(&self, user_id: &str, target: &EntitlementKind) -> Result<(), KeycloakError> {
        self.enter(Op::Assign, user_id, Some(target), |k| {
            match k.target_state(target) {
                TargetStatus::Missing(m) => return Err(KeycloakError::NotFound(m)),
                TargetStatus::NotAssignable(_) => return Err(Fault::Forbidden.error("assign")),
                TargetStatus::Available => {}
            }
            let mut users = k.users.lock().unwrap();
            let u = users
                .get_mut(user_id)
                .ok_or_else(|| user_missing(user_id))?;
            u.assigned.insert(target.clone());
            Ok(())
        })
        .await
    }

    async fn unassign(&self, user_id: &str, target: &EntitlementKind) -> Result<(), KeycloakError> {
        self.enter(Op::Unassign, user_id, Some(target), |k| {
            match k.target_state(target) {
                TargetStatus::Missing(m) => return Err(KeycloakError::NotFound(m)),
                TargetStatus::NotAssignable(_) => return Err(Fault::Forbidden.error("unassign")),
                TargetStatus::Available => {}
            }
            let mut users = k.users.lock().unwrap();
            let u = users
                .get_mut(user_id)
                .ok_or_else(|| user_missing(user_id))?;
            u.assigned.remove(target);
            Ok(())
        })
        .await
    }

    async fn end_sessions(&self, user_id: &str) -> Result<SessionsEnded, KeycloakError> {
        self.enter(Op::EndSessions, user_id, None, |k| {
            let mut users = k.users.lock().unwrap();
            let u = users
                .get_mut(user_id)
                .ok_or_else(|| user_missing(user_id))?;
            let offline = std::mem::take(&mut u.offline_sessions);
            u.online_sessions = 0;
            Ok(SessionsEnded { offline })
        })
        .await
    }

    async fn current_user(&self, user_id: &str) -> Result<CurrentUser, KeycloakError> {
        self.enter(Op::UserAccess, user_id, None, |k| {
            let users = k.users.lock().unwrap();
            let u = users.get(user_id).ok_or_else(|| user_missing(user_id))?;
            // As Keycloak's effective roles and memberships: what is held
            // outside JIT and what is assigned (by JIT or standing).
            let mut realm_roles = u.roles.clone();
            let mut groups = u.groups.clone();
            for t in &u.assigned {
                match t {
                    EntitlementKind::RealmRole { role } => {
                        realm_roles.insert(role.clone());
                    }
                    EntitlementKind::Group { path } => {
                        groups.insert(path.trim_start_matches('/').to_string());
                    }
                    EntitlementKind::ClientRole { .. } => {}
                }
            }
            Ok(CurrentUser {
                username: user_id.to_string(),
                enabled: u.enabled,
                realm_roles,
                groups,
            })
        })
        .await
    }

    /// As Keycloak: a part not asked for is left empty, so a caller that
    /// forgets to ask for what it decides on decides wrongly here too.
    async fn current_user_parts(
        &self,
        user_id: &str,
        parts: UserParts,
    ) -> Result<CurrentUser, KeycloakError> {
        let mut u = self.current_user(user_id).await?;
        if !parts.realm_roles {
            u.realm_roles.clear();
        }
        if !parts.groups {
            u.groups.clear();
        }
        Ok(u)
    }

    async fn carries(
        &self,
        holder: &EntitlementKind,
        target: &EntitlementKind,
    ) -> Result<bool, KeycloakError> {
        Ok(holder == target)
    }

    async fn set_user_attribute(
        &self,
        user_id: &str,
        _name: &str,
        _values: &[String],
    ) -> Result<bool, KeycloakError> {
        self.enter(Op::SetAttribute, user_id, None, |k| {
            if k.user(user_id).is_none() {
                return Err(user_missing(user_id));
            }
            Ok(true)
        })
        .await
    }

    async fn target_status(&self, target: &EntitlementKind) -> Result<TargetStatus, KeycloakError> {
        self.enter(Op::TargetStatus, "", Some(target), |k| {
            Ok(k.target_state(target))
        })
        .await
    }

    async fn holders(&self, target: &EntitlementKind) -> Result<Vec<String>, KeycloakError> {
        let users = self.users.lock().unwrap();
        Ok(users
            .iter()
            .filter(|(_, u)| u.assigned.contains(target))
            .map(|(id, _)| id.clone())
            .collect())
    }

    async fn ready(&self) -> Result<(), KeycloakError> {
        self.enter(Op::Ready, "", None, |_| Ok(())).await
    }

    async fn approver_ids(
        &self,
        roles: &[String],
        groups: &[String],
        max: usize,
    ) -> Result<Option<std::collections::HashSet<String>>, KeycloakError> {
        let users = self.users.lock().unwrap();
        Ok(Some(
            users
                .iter()
                .filter(|(_, u)| {
                    u.enabled
                        && (roles.iter().any(|r| u.roles.contains(r))
                            || groups
                                .iter()
                                .any(|g| u.groups.contains(g.trim_start_matches('/'))))
                })
                .map(|(id, _)| id.clone())
                .take(max)
                .collect(),
        ))
    }
}
