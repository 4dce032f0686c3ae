//! The event kinds: one enum, [`EventKind`], serialized to the names jitd
//! has always written (`request.created`, `grant.kept` …). Its own module
//! so that `model` (whose actions name their event) and `api` (whose audit
//! rows carry it; re-exported there as `jit_core::api::EventKind`) both use
//! it without depending on each other.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Declares [`EventKind`]: each variant with its wire name, written once.
macro_rules! event_kinds {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal,)+) => {
        /// What an audit row (and the server-sent event of the same id)
        /// records, serialized as its name, `family.what` (e.g.
        /// `request.created`). The one list of names: jitd writes only
        /// these; webhooks filter on them; the CLI, the app and the UI
        /// match this enum (the UI through its generated type), never a
        /// string of their own.
        ///
        /// A name this version does not know (a newer jitd's) is read as
        /// [`EventKind::Other`] with the name kept verbatim, so an older
        /// client still reads, shows and re-serializes the row unchanged
        /// (its hash stays valid) instead of failing on it.
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventKind {
            $($(#[doc = $doc])* $variant,)+
            /// A kind this version does not know, as the server named it
            /// (written by a newer jitd). jitd itself never writes one.
            Other(String),
        }

        impl EventKind {
            /// Every kind this version knows, in declaration order
            /// ([`EventKind::Other`] is not among them).
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant,)+];

            /// The wire name, e.g. `grant.granted` (an `Other`'s name as
            /// written).
            pub fn as_str(&self) -> &str {
                match self {
                    $(EventKind::$variant => $name,)+
                    EventKind::Other(name) => name,
                }
            }
        }
    };
}

event_kinds! {
    /// A request was made (or a break-glass activation, or an extension asked).
    RequestCreated = "request.created",
    /// An approver voted and more approvals are needed.
    RequestVoted = "request.voted",
    /// Enough approvals (or a policy rule): approved.
    RequestApproved = "request.approved",
    /// An approver denied it.
    RequestDenied = "request.denied",
    /// Withdrawn by its requester, or ended by jitd (no longer eligible).
    RequestCancelled = "request.cancelled",
    /// Nobody decided within the pending TTL.
    RequestLapsed = "request.lapsed",
    /// The after-the-fact review of a break-glass activation was closed.
    RequestReviewed = "request.reviewed",
    /// The grant started: the target is assigned in Keycloak.
    GrantGranted = "grant.granted",
    /// At activation the user already held the target directly: standing,
    /// never removed by JIT.
    GrantStanding = "grant.standing",
    /// An approved extension moved the grant's end.
    GrantExtended = "grant.extended",
    /// The grant's time ran out.
    GrantExpired = "grant.expired",
    /// The requester gave the grant up.
    GrantDropped = "grant.dropped",
    /// An approver ended the grant, or jitd did (its entitlement left the
    /// policy, or its requester was disabled in Keycloak).
    GrantRevoked = "grant.revoked",
    /// Keycloak refused the grant for good; it ended `failed`.
    GrantFailed = "grant.failed",
    /// The target left Keycloak after the grant ended.
    GrantRemoved = "grant.removed",
    /// The grant ended but the target stays (another grant, or standing).
    GrantKept = "grant.kept",
    /// Keycloak refused the removal for good; an administrator must act.
    GrantRemovalFailed = "grant.removal_failed",
    /// Someone who may (an approver of the entitlement, or the requester)
    /// asked jitd to try a given-up removal again, e.g. after an
    /// administrator fixed what Keycloak refused; jitd then removes it (or
    /// finds it gone) and ends the grant the usual way.
    GrantRemovalRetried = "grant.removal_retried",
    /// Nothing was assigned, so nothing had to be removed.
    GrantNothingToRemove = "grant.nothing_to_remove",
    /// An approved extension's time was added to its grant.
    ExtensionApplied = "extension.applied",
}

impl EventKind {
    /// The family: the name's part before the dot (`request`, `grant`,
    /// `extension`), as webhook filters (`grant.*`) name it.
    pub fn family(&self) -> &str {
        self.as_str()
            .split_once('.')
            .map(|(f, _)| f)
            .unwrap_or_default()
    }

    /// The kind named `name`: a known one, else [`EventKind::Other`] with
    /// the name kept (how rows are read; never fails). Use `parse` to
    /// refuse unknown names (e.g. in configuration).
    pub fn from_name(name: &str) -> EventKind {
        name.parse()
            .unwrap_or_else(|_| EventKind::Other(name.to_string()))
    }

    /// Whether this version knows the kind (it is not `Other`).
    pub fn is_known(&self) -> bool {
        !matches!(self, EventKind::Other(_))
    }
}

/// Serialized as its name (a JSON string), exactly as jitd has always
/// written the audit's `event`.
impl Serialize for EventKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Any string: a known name gives its variant, any other name
/// [`EventKind::Other`] (see [`EventKind::from_name`]).
impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<EventKind, D::Error> {
        let name = std::borrow::Cow::<str>::deserialize(d)?;
        Ok(EventKind::from_name(&name))
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EventKind {
    type Err = String;

    /// The known kind named `s`. Errors: `unknown event kind '…'` (for a
    /// name this version does not know; [`EventKind::from_name`] keeps it
    /// as `Other` instead).
    fn from_str(s: &str) -> Result<EventKind, String> {
        EventKind::ALL
            .iter()
            .find(|k| k.as_str() == s)
            .cloned()
            .ok_or_else(|| format!("unknown event kind '{s}'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_serialize_as_written() {
        let mut seen = std::collections::BTreeSet::new();
        for k in EventKind::ALL {
            assert!(seen.insert(k.as_str()), "{k} twice");
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                serde_json::Value::String(k.as_str().into())
            );
            assert_eq!(k.as_str().parse::<EventKind>().as_ref(), Ok(k));
            assert!(k.is_known());
            assert_eq!(format!("{k}"), k.as_str());
            assert!(
                ["request", "grant", "extension"].contains(&k.family()),
                "{k}"
            );
        }
        assert!("grant.bogus".parse::<EventKind>().is_err());
    }

    #[test]
    fn an_unknown_name_reads_as_other_and_writes_back_unchanged() {
        let k: EventKind = serde_json::from_str(r#""grant.teleported""#).unwrap();
        assert_eq!(k, EventKind::Other("grant.teleported".into()));
        assert!(!k.is_known());
        assert_eq!(k.family(), "grant");
        assert_eq!(serde_json::to_string(&k).unwrap(), r#""grant.teleported""#);
        let known: EventKind = serde_json::from_str(r#""grant.kept""#).unwrap();
        assert_eq!(known, EventKind::GrantKept);
    }

    #[test]
    fn every_transition_names_a_kind() {
        use crate::model::Action::*;
        for a in [
            Create, Approve, Deny, Cancel, Lapse, Activate, Expire, Drop, Revoke, Extend, Review,
            Apply, Fail,
        ] {
            assert!(EventKind::ALL.contains(&a.event()), "{a}");
        }
        assert_eq!(Activate.event().as_str(), "grant.granted");
    }
}
