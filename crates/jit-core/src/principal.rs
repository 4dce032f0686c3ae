//! Who is calling: [`Principal`]. Its own module so that `policy` (which
//! matches principals against approver and requester rules) and `model`
//! (which uses both) depend one way: model → policy → principal.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// An authenticated caller: Keycloak subject id, username, and the realm
/// roles and groups (names, no leading `/`) from the validated access token.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Principal {
    pub id: String,
    pub username: String,
    pub roles: BTreeSet<String>,
    pub groups: BTreeSet<String>,
    /// Set when the caller is an OAuth client acting for itself — its
    /// Keycloak service account, through the client-credentials grant (RFC
    /// 6749 §4.4), e.g. a CI pipeline: the client's id. `None` for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

impl Principal {
    /// A principal with no roles or groups.
    pub fn new(id: impl Into<String>, username: impl Into<String>) -> Principal {
        Principal {
            id: id.into(),
            username: username.into(),
            ..Principal::default()
        }
    }
}
