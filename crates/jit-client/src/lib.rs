//! Typed client of the jitd API: one method per endpoint, problem+json
//! errors as [`ClientError::Api`], server-sent events as a stream, and the
//! server's clock (for countdowns that are right under clock skew).
//!
//! Not for: logging in or storing tokens (callers give a [`TokenSource`];
//! see `jit-keycloak` for OIDC) or any rule about requests.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use jit_core::api::{
    AuditRecord, AuditVerification, CreateRequestBody, DecisionBody, EntitlementView, EventData,
    ExtendBody, MeView, Problem, RequestView, ServerConfigView, SERVER_TIME_HEADER,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Errors of API calls. `Display` is one line a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// jitd refused: HTTP status, stable `code`, the problem's `title`
    /// (one per code) and human `detail` (problem+json, RFC 9457).
    #[error("{detail} ({code})")]
    Api {
        status: u16,
        code: String,
        title: String,
        detail: String,
    },
    #[error("cannot reach jitd at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("unexpected response from jitd: {0}")]
    Protocol(String),
    #[error("not logged in: {0}")]
    Token(String),
    /// Keycloak could not be reached to refresh the token: an outage that
    /// may pass, not a reason to log in again.
    #[error("cannot reach Keycloak to refresh the login: {0}")]
    KeycloakUnreachable(String),
}

impl ClientError {
    /// The problem `code` if jitd refused, e.g. `self_approval`.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// Supplies a current access token (refreshing it when needed).
pub trait TokenSource: Send + Sync {
    fn token(&self) -> BoxFuture<'_, Result<String, ClientError>>;
}

/// A fixed token (pipelines: `JIT_TOKEN`; tests).
pub struct StaticToken(pub String);

impl TokenSource for StaticToken {
    fn token(&self) -> BoxFuture<'_, Result<String, ClientError>> {
        let t = self.0.clone();
        Box::pin(async move { Ok(t) })
    }
}

/// [`ClientError::Api`] `code` of an answer that is not jitd's (an HTTP
/// error without a problem+json body, e.g. from Keycloak or a proxy).
pub const NOT_JITD: &str = "not_jitd";

/// [`ClientError::Api`] `title` of a [`NOT_JITD`] answer.
pub const NOT_JITD_TITLE: &str = "Not a jitd";

/// Response header of `GET /v1/requests` with the next page's cursor.
pub const NEXT_AFTER_HEADER: &str = "x-next-after";

/// Query of `GET /v1/requests`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ListQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub mine: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub to_review: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub review_open: bool,
}

/// One server-sent event from `/v1/events`.
#[derive(Debug, Clone)]
pub struct ServerEvent {
    /// Audit sequence number; pass it back as `Last-Event-ID` to resume.
    pub id: i64,
    /// The SSE event's name as its kind (`request.created` is
    /// `EventKind::RequestCreated`; a newer jitd's unknown name is
    /// `EventKind::Other`).
    pub event: jit_core::api::EventKind,
    pub data: EventData,
}

/// Client of one jitd.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<Arc<dyn TokenSource>>,
    /// Server time minus local time, milliseconds (from `x-server-time`).
    skew_ms: Arc<AtomicI64>,
}

impl Client {
    /// `base` is jitd's URL, e.g. `http://127.0.0.1:8787`.
    pub fn new(base: &str, token: Option<Arc<dyn TokenSource>>) -> Client {
        Client {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("reqwest client builds"),
            token,
            skew_ms: Arc::new(AtomicI64::new(0)),
        }
    }

    /// jitd's URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The server's current time, estimated from the last response's
    /// `x-server-time` header. Countdowns use this, not the local clock.
    pub fn server_now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.skew_ms.load(Ordering::Relaxed))
    }

    fn note_time(&self, resp: &reqwest::Response) {
        if let Some(t) = resp
            .headers()
            .get(SERVER_TIME_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        {
            let skew = (t.with_timezone(&Utc) - Utc::now()).num_milliseconds();
            self.skew_ms.store(skew, Ordering::Relaxed);
        }
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        auth: bool,
    ) -> Result<reqwest::Response, ClientError> {
        let req = if auth {
            let src = self
                .token
                .as_ref()
                .ok_or_else(|| ClientError::Token("no token; run `jit login`".into()))?;
            req.bearer_auth(src.token().await?)
        } else {
            req
        };
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            reason: transport_reason(&e.without_url(), &self.base),
        })?;
        self.note_time(&resp);
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        match serde_json::from_str::<Problem>(&text) {
            // jitd has no such route: the server URL carries a path
            // (`--server http://host:8787/v1`), or this jitd is older than
            // this client. Not "no such request" (a 404 of a real route).
            Ok(p) if p.code == "no_route" => Err(ClientError::Api {
                status,
                code: NOT_JITD.into(),
                title: NOT_JITD_TITLE.into(),
                detail: format!(
                    "{} answered that it has no such route: give jitd's root URL without a path (e.g. http://127.0.0.1:8787), or this jitd is older than this client",
                    self.base
                ),
            }),
            Ok(p) => Err(ClientError::Api {
                status,
                code: p.code,
                title: p.title,
                detail: p.detail,
            }),
            Err(_) => Err(ClientError::Api {
                status,
                code: NOT_JITD.into(),
                title: NOT_JITD_TITLE.into(),
                detail: format!(
                    "{} answered HTTP {status} without a problem report: it does not look like a jitd (is the server URL jitd's, not Keycloak's?)",
                    self.base
                ),
            }),
        }
    }

    async fn json<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        auth: bool,
    ) -> Result<T, ClientError> {
        // Whole-request limit for ordinary calls (the event stream has none).
        self.send(req.timeout(std::time::Duration::from_secs(30)), auth)
            .await?
            .json()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `GET /v1/config` (no token needed): where to log in.
    pub async fn server_config(&self) -> Result<ServerConfigView, ClientError> {
        self.json(self.http.get(self.url("/v1/config")), false)
            .await
    }

    /// `GET /v1/me`.
    pub async fn me(&self) -> Result<MeView, ClientError> {
        self.json(self.http.get(self.url("/v1/me")), true).await
    }

    /// `GET /v1/entitlements`: what the caller may request.
    pub async fn entitlements(&self) -> Result<Vec<EntitlementView>, ClientError> {
        self.json(self.http.get(self.url("/v1/entitlements")), true)
            .await
    }

    /// `POST /v1/requests`.
    pub async fn create(&self, body: &CreateRequestBody) -> Result<RequestView, ClientError> {
        self.json(self.http.post(self.url("/v1/requests")).json(body), true)
            .await
    }

    /// `GET /v1/requests`, every page: follows the server's next-page
    /// cursor until the list is complete, so the result is exact however
    /// many requests the server stores.
    pub async fn list(&self, q: &ListQuery) -> Result<Vec<RequestView>, ClientError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (page, next) = self.list_page(q, after.as_deref(), None).await?;
            out.extend(page);
            match next {
                // A server repeating a cursor would loop: stop instead.
                Some(n) if after.as_deref() != Some(n.as_str()) => after = Some(n),
                _ => return Ok(out),
            }
        }
    }

    /// One page of `GET /v1/requests`: rows after cursor `after` (none:
    /// from the newest), at most `limit` (server default 500), and the
    /// cursor of the next page when more follow (header `x-next-after`).
    pub async fn list_page(
        &self,
        q: &ListQuery,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<(Vec<RequestView>, Option<String>), ClientError> {
        let mut req = self.http.get(self.url("/v1/requests")).query(q);
        if let Some(a) = after {
            req = req.query(&[("after", a)]);
        }
        if let Some(l) = limit {
            req = req.query(&[("limit", l)]);
        }
        let resp = self
            .send(req.timeout(std::time::Duration::from_secs(30)), true)
            .await?;
        let next = resp
            .headers()
            .get(NEXT_AFTER_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let rows = resp
            .json()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok((rows, next))
    }

    /// `GET /v1/requests?id_prefix=`: requests whose id starts with `prefix`.
    pub async fn find_by_prefix(&self, prefix: &str) -> Result<Vec<RequestView>, ClientError> {
        self.json(
            self.http
                .get(self.url("/v1/requests"))
                .query(&[("id_prefix", prefix)]),
            true,
        )
        .await
    }

    /// `GET /v1/requests/{id}`.
    pub async fn get(&self, id: &str) -> Result<RequestView, ClientError> {
        self.json(
            self.http
                .get(self.url(&format!("/v1/requests/{}", seg(id)))),
            true,
        )
        .await
    }

    async fn post_decision(
        &self,
        path: String,
        body: &DecisionBody,
    ) -> Result<RequestView, ClientError> {
        self.json(self.http.post(self.url(&path)).json(body), true)
            .await
    }

    /// `POST /v1/requests/{id}/approve`; `duration` (human) shortens.
    pub async fn approve(
        &self,
        id: &str,
        comment: Option<String>,
        duration: Option<String>,
    ) -> Result<RequestView, ClientError> {
        self.post_decision(
            format!("/v1/requests/{}/approve", seg(id)),
            &DecisionBody { comment, duration },
        )
        .await
    }

    /// `POST /v1/requests/{id}/deny` (comment required).
    pub async fn deny(&self, id: &str, comment: &str) -> Result<RequestView, ClientError> {
        self.post_decision(
            format!("/v1/requests/{}/deny", seg(id)),
            &DecisionBody {
                comment: Some(comment.to_string()),
                duration: None,
            },
        )
        .await
    }

    /// `POST /v1/requests/{id}/cancel`.
    pub async fn cancel(&self, id: &str) -> Result<RequestView, ClientError> {
        self.json(
            self.http
                .post(self.url(&format!("/v1/requests/{}/cancel", seg(id)))),
            true,
        )
        .await
    }

    /// `POST /v1/requests/{id}/extend`: a linked request for more time.
    pub async fn extend(
        &self,
        id: &str,
        duration: &str,
        justification: &str,
    ) -> Result<RequestView, ClientError> {
        let body = ExtendBody {
            duration: duration.into(),
            justification: justification.into(),
        };
        self.json(
            self.http
                .post(self.url(&format!("/v1/requests/{}/extend", seg(id))))
                .json(&body),
            true,
        )
        .await
    }

    /// `POST /v1/requests/{id}/review` (break-glass after-the-fact review).
    pub async fn review(&self, id: &str, comment: &str) -> Result<RequestView, ClientError> {
        self.post_decision(
            format!("/v1/requests/{}/review", seg(id)),
            &DecisionBody {
                comment: Some(comment.into()),
                duration: None,
            },
        )
        .await
    }

    /// `POST /v1/grants/{id}/drop` (requester ends their own grant).
    pub async fn drop_grant(&self, id: &str) -> Result<RequestView, ClientError> {
        self.json(
            self.http
                .post(self.url(&format!("/v1/grants/{}/drop", seg(id)))),
            true,
        )
        .await
    }

    /// `POST /v1/grants/{id}/revoke` (approver; comment required).
    pub async fn revoke(&self, id: &str, comment: &str) -> Result<RequestView, ClientError> {
        self.post_decision(
            format!("/v1/grants/{}/revoke", seg(id)),
            &DecisionBody {
                comment: Some(comment.into()),
                duration: None,
            },
        )
        .await
    }

    /// `POST /v1/grants/{id}/retry-removal` (an approver of the
    /// entitlement, or the requester): jitd tries a given-up removal
    /// (`removal_failed`) again. Errors: `removal_not_failed` (409) when
    /// there is nothing to retry, `not_an_approver` (403).
    pub async fn retry_removal(
        &self,
        id: &str,
        comment: Option<&str>,
    ) -> Result<RequestView, ClientError> {
        self.post_decision(
            format!("/v1/grants/{}/retry-removal", seg(id)),
            &DecisionBody {
                comment: comment.map(str::to_string),
                duration: None,
            },
        )
        .await
    }

    /// `GET /v1/audit?since=` as rows.
    pub async fn audit(&self, since: i64) -> Result<Vec<AuditRecord>, ClientError> {
        self.json(
            self.http
                .get(self.url("/v1/audit"))
                .query(&[("since", since)]),
            true,
        )
        .await
    }

    /// `GET /v1/audit?format=jsonl|csv` as text, for export.
    pub async fn audit_export(&self, since: i64, format: &str) -> Result<String, ClientError> {
        self.send(
            self.http
                .get(self.url("/v1/audit"))
                .query(&[("since", since.to_string()), ("format", format.to_string())]),
            true,
        )
        .await?
        .text()
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// `GET /v1/audit/verify` (auditors).
    pub async fn audit_verify(&self) -> Result<AuditVerification, ClientError> {
        self.json(self.http.get(self.url("/v1/audit/verify")), true)
            .await
    }

    /// `GET /v1/events`, resuming after `last_event_id` if given. The stream
    /// ends when the server closes it (token expiry, shutdown); reconnect
    /// with the last id seen to lose nothing.
    pub async fn events(
        &self,
        last_event_id: Option<i64>,
    ) -> Result<impl Stream<Item = Result<ServerEvent, ClientError>> + Send + 'static, ClientError>
    {
        Ok(self.events_from(last_event_id).await?.1)
    }

    /// [`Client::events`] with where the stream starts: the event id it
    /// begins after (response header `JIT-Events-After`; `None` from a
    /// jitd that does not send it). A follower that has seen no event yet
    /// resumes from that id after a cut, so nothing written while it
    /// reconnects is lost.
    pub async fn events_from(
        &self,
        last_event_id: Option<i64>,
    ) -> Result<
        (
            Option<i64>,
            impl Stream<Item = Result<ServerEvent, ClientError>> + Send + 'static,
        ),
        ClientError,
    > {
        let mut req = self
            .http
            .get(self.url("/v1/events"))
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let resp = self.send(req, true).await?;
        let after = resp
            .headers()
            .get("jit-events-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok());
        use eventsource_stream::Eventsource;
        let stream = resp
            .bytes_stream()
            .eventsource()
            .filter_map(|item| async move {
                match item {
                    Err(e) => Some(Err(ClientError::Protocol(e.to_string()))),
                    Ok(ev) if ev.data.is_empty() => None,
                    Ok(ev) => Some(
                        serde_json::from_str::<EventData>(&ev.data)
                            .map_err(|e| ClientError::Protocol(e.to_string()))
                            .map(|data| ServerEvent {
                                id: ev.id.parse().unwrap_or(data.record.seq),
                                event: jit_core::api::EventKind::from_name(&ev.event),
                                data,
                            }),
                    ),
                }
            });
        Ok((after, stream))
    }
}

/// Why a request to `base` got no answer, in words a person can act on
/// ("connection refused: is jitd running there?"); the error chain when it
/// is none of the usual cases. A scheme that does not match the port is
/// said as such: `https://` to a plain-HTTP port (rustls reads an HTTP
/// answer as a corrupt TLS record) is "it does not answer TLS (is it
/// http://…?)", `http://` to a TLS port (hyper cannot parse a TLS alert as
/// HTTP) is "it answers TLS, not plain HTTP (is it https://…?)".
fn transport_reason(e: &reqwest::Error, base: &str) -> String {
    let swapped = |to: &str| match base.split_once("://") {
        Some((_, rest)) => format!("{to}://{rest}"),
        None => to.to_string(),
    };
    let tls = base.starts_with("https://");
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cur {
        let rustls_err = c
            .downcast_ref::<rustls::Error>()
            .or_else(|| c.downcast_ref::<std::io::Error>().and_then(rustls_inside));
        if let Some(rustls::Error::InvalidMessage(_)) = rustls_err {
            if tls {
                return format!("it does not answer TLS (is it {}?)", swapped("http"));
            }
        }
        if let Some(h) = c.downcast_ref::<hyper::Error>() {
            if h.is_parse() && !tls {
                return format!(
                    "it does not answer plain HTTP, perhaps TLS (is it {}?)",
                    swapped("https")
                );
            }
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            match io.kind() {
                ConnectionRefused => return "connection refused: is jitd running there?".into(),
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => {
                    return "the connection was cut (jitd restarting?)".into()
                }
                TimedOut => return "no answer in time".into(),
                _ => {}
            }
        }
        cur = c.source();
    }
    if e.is_timeout() {
        return "no answer in time".into();
    }
    let chain = error_chain(e);
    if chain.contains("dns error") || chain.contains("failed to lookup address") {
        return format!("unknown host ({chain})");
    }
    chain
}

/// The rustls error wrapped in `io` (hyper-util wraps tokio-rustls's
/// `io::Error` in another one), which `source` skips: read through
/// `get_ref`, at most a few levels.
fn rustls_inside(io: &std::io::Error) -> Option<&rustls::Error> {
    let mut inner: &(dyn std::error::Error + Send + Sync + 'static) = io.get_ref()?;
    for _ in 0..4 {
        if let Some(r) = inner.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        inner = inner.downcast_ref::<std::io::Error>()?.get_ref()?;
    }
    None
}

/// An error and its causes on one line ("error sending request: … :
/// Connection refused (os error 111)").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = c.source();
    }
    parts.join(": ")
}

fn seg(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener that answers every connection with `answer` and closes.
    fn answering(answer: &'static [u8]) -> u16 {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { continue };
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = s.write_all(answer);
            }
        });
        port
    }

    /// `https://` to a plain-HTTP port is said as such, not as rustls's
    /// "corrupt message … InvalidContentType".
    #[tokio::test]
    async fn https_to_a_plain_http_port_says_it_does_not_answer_tls() {
        let port = answering(
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
        let c = Client::new(&format!("https://127.0.0.1:{port}"), None);
        let text = c.server_config().await.unwrap_err().to_string();
        assert_eq!(
            text,
            format!(
                "cannot reach jitd at https://127.0.0.1:{port}: it does not answer TLS (is it http://127.0.0.1:{port}?)"
            )
        );
    }

    /// `http://` to a TLS port (here: a TLS alert record, as a TLS
    /// server sends to a client that does not speak TLS) is said as such.
    #[tokio::test]
    async fn http_to_a_tls_port_says_it_does_not_answer_plain_http() {
        // A TLS record: content type 21 (alert), TLS 1.2, length 2,
        // fatal (2) protocol_version (70).
        let port = answering(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46]);
        let c = Client::new(&format!("http://127.0.0.1:{port}"), None);
        let text = c.server_config().await.unwrap_err().to_string();
        assert_eq!(
            text,
            format!(
                "cannot reach jitd at http://127.0.0.1:{port}: it does not answer plain HTTP, perhaps TLS (is it https://127.0.0.1:{port}?)"
            )
        );
    }

    /// A jitd that is not running is said in words, not as a socket error.
    #[tokio::test]
    async fn a_closed_port_is_connection_refused_in_words() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let c = Client::new(&format!("http://127.0.0.1:{port}"), None);
        let e = c.server_config().await.unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("connection refused: is jitd running there?"),
            "{text}"
        );
        assert!(!text.contains("os error"), "{text}");
    }
}
