//! A hook that sees every HTTP call jitd makes to Keycloak (the Admin REST
//! API, the service-account token, the JWKS), for metrics. It sees the
//! operation, the time taken and the kind of failure — never a URL with
//! ids, a token or a secret.

use std::sync::Arc;
use std::time::Duration;

/// One finished call to Keycloak.
#[derive(Debug, Clone)]
pub struct KeycloakCall {
    /// Low-cardinality name: `token` (service-account token), `jwks`, or the
    /// admin call as `<method> <resource>`, e.g. `post role-mappings`,
    /// `get users`, `delete user-groups`, `post logout`.
    pub operation: String,
    /// Wall time until the answer (or the failure).
    pub elapsed: Duration,
    /// `None` on success; else `unreachable` (connection refused, reset,
    /// timeout), `http_5xx`, `http_429`, `http_401`, `http_403`,
    /// `not_found`, `http_4xx`, `refused` (jitd would not send it), or
    /// `not_kept` (Keycloak dropped a written user attribute).
    pub error_kind: Option<&'static str>,
}

/// Receives every [`KeycloakCall`]. Must be quick and must not fail.
pub trait CallObserver: Send + Sync {
    fn observe(&self, call: &KeycloakCall);
}

/// A shared observer, or none.
pub type Observer = Option<Arc<dyn CallObserver>>;

/// The error kind of an HTTP status (see [`KeycloakCall::error_kind`]).
pub fn status_kind(status: u16) -> &'static str {
    match status {
        401 => "http_401",
        403 => "http_403",
        404 => "not_found",
        429 => "http_429",
        500..=599 => "http_5xx",
        _ => "http_4xx",
    }
}

/// `<resource>` of an admin path below `/admin/realms/{realm}`: the part
/// that names what is touched, with every id left out.
pub fn admin_resource(path: &str) -> &'static str {
    let rest = path.splitn(5, '/').nth(4).unwrap_or("");
    if rest.contains("/role-mappings") {
        "role-mappings"
    } else if rest.ends_with("/logout") {
        "logout"
    } else if rest.starts_with("users/") && rest.contains("/groups") {
        "user-groups"
    } else if rest.starts_with("users") {
        "users"
    } else if rest.starts_with("roles") {
        "roles"
    } else if rest.starts_with("clients") {
        "clients"
    } else if rest.starts_with("group-by-path") || rest.starts_with("groups") {
        "groups"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_leave_ids_out() {
        for (path, want) in [
            (
                "/admin/realms/jit/users/0f3a/role-mappings/realm",
                "role-mappings",
            ),
            (
                "/admin/realms/jit/users/0f3a/role-mappings/clients/9/composite",
                "role-mappings",
            ),
            ("/admin/realms/jit/users/0f3a/logout", "logout"),
            ("/admin/realms/jit/users/0f3a/groups/77", "user-groups"),
            ("/admin/realms/jit/users/0f3a", "users"),
            ("/admin/realms/jit/roles/prod-db-admin", "roles"),
            ("/admin/realms/jit/group-by-path/ops", "groups"),
            ("/admin/realms/jit/clients", "clients"),
        ] {
            assert_eq!(admin_resource(path), want, "{path}");
        }
    }
}
