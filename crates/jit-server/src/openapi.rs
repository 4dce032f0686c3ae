//! The OpenAPI 3.1 document of jitd: its frame (title, security scheme,
//! shared schemas) and the error responses every authenticated operation
//! can give. The operations themselves are described next to their
//! handlers (`#[utoipa::path]` in [`crate::api`] and [`crate::events`]).

use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, OpenApi as Doc, RefOr};
use utoipa::{OpenApi, ToSchema};

use jit_core::api::{EventData, Problem};
use jit_core::Status;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Keycloak JIT Access (jitd)",
        description = "Just-in-time Keycloak roles: request, approve, grant, expire; a hash-chained audit log. \
Bearer access tokens from Keycloak (audience `jit-api`). Errors are `application/problem+json` (RFC 9457) \
with a stable `code`. Every response carries `x-server-time` (RFC 3339, UTC) for countdown skew, and \
`x-request-id` (the caller's, or a new one).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(Problem, EventData, Status, AuditFormat)),
    tags(
        (name = "requests", description = "Requests, votes and grants"),
        (name = "audit", description = "The audit log and its event stream"),
        (name = "meta", description = "Health, metrics, login parameters, this document"),
    )
)]
struct Frame;

/// The document before the routes are added.
pub(crate) fn base() -> Doc {
    let mut doc = Frame::openapi();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "A Keycloak access token of the realm with audience `jit-api`.",
                ))
                .build(),
        ),
    );
    doc
}

fn problem(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/problem+json",
                Content::new(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    "Problem",
                )))),
            )
            .build(),
    )
}

/// Adds the errors any operation can give: 400 (malformed query, body or
/// header), 413 (body over the limit), 500 (store failure); and for
/// authenticated ones 401 (missing or invalid token) and 503 (Keycloak or
/// its JWKS unreachable).
pub(crate) fn finish(doc: &mut Doc) {
    for item in doc.paths.paths.values_mut() {
        let ops: [&mut Option<Operation>; 2] = [&mut item.get, &mut item.post];
        for op in ops.into_iter().flatten() {
            let authenticated = op.security.as_ref().is_some_and(|s| !s.is_empty());
            let r = &mut op.responses.responses;
            let mut add = |code: &str, text: &str| {
                r.entry(code.to_string()).or_insert_with(|| problem(text));
            };
            if authenticated {
                add("400", "Malformed query, body or header (`bad_request`)");
                add(
                    "401",
                    "Missing, expired or invalid access token (`unauthorized`)",
                );
                add(
                    "502",
                    "Keycloak refused jitd's own call for good (`keycloak_refused`, e.g. 403: jitd's service account lacks a right)",
                );
                add(
                    "503",
                    "Keycloak or its JWKS unreachable, or jitd's database (`keycloak_unavailable`, `jwks_unavailable`, `database_unavailable`); try again",
                );
            }
            if op.request_body.is_some() {
                add("413", "Request body too large (`too_large`)");
            }
            add(
                "500",
                "Internal error (`internal`); details in the server log",
            );
        }
    }
}

/// Export format of `GET /v1/audit`.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // only describes the `format` values
pub(crate) enum AuditFormat {
    Json,
    Jsonl,
    Csv,
}
