//! Domain of Keycloak JIT Access: entitlements and the policy that defines
//! them, access requests with their votes, grants, and the one state machine
//! that moves a request through its life.
//!
//! What it is for: every rule of *who may ask for what, who may decide, and
//! when access starts and ends* lives here, so the server, the CLI and the
//! desktop app can never disagree about it.
//!
//! What it is not for: I/O. This crate reads no files, opens no sockets, and
//! never looks at the system clock — callers pass `now` in. Talking to
//! Keycloak is `jit-keycloak`'s job; persisting state is `jit-server`'s.

pub mod api;
pub mod duration;
pub mod error;
pub mod event;
pub mod lateness;
pub mod model;
pub mod policy;
pub mod principal;

pub use duration::{format_duration, parse_duration};
pub use error::DomainError;
pub use model::{check_free_text, MAX_FREE_TEXT_CHARS};
pub use model::{
    AccessRequest, Action, AppliedExtension, Decision, NewRequest, Principal, RequestKind, Status,
    StoredRequest, Transition, Vote,
};
pub use policy::{Entitlement, EntitlementKind, Policy, PolicyError};
