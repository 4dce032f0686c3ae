//! A scripted browser for Keycloak's login page.

use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use regex::Regex;
use url::Url;

use crate::snippet;

const MAX_STEPS: usize = 12;

/// Sign in through Keycloak's real login page and return the final redirect
/// to the loopback `redirect_uri` (with `code` and `state`), without
/// contacting it.
///
/// Follows Keycloak's own redirects by hand (cookies kept), fills
/// `<form id="kc-form-login">` with `username` / `password` and stops at the
/// first `Location` that points at the `redirect_uri` of `authorize_url` (or,
/// when it has none, leaves Keycloak's origin).
///
/// Errors: wrong credentials (with the message the page shows), a page
/// without the login form (with its title and message, e.g. a required
/// action or "Invalid parameter: redirect_uri"), an `error=` redirect.
pub async fn browser_login(authorize_url: &str, username: &str, password: &str) -> Result<Url> {
    let start = Url::parse(authorize_url).context("invalid authorize URL")?;
    let keycloak_origin = start.origin();
    let redirect_uri = start
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .and_then(|(_, v)| Url::parse(&v).ok());
    let is_final = |loc: &Url| -> bool {
        match &redirect_uri {
            Some(r) => {
                loc.origin() == r.origin() && loc.path() == r.path()
                    || loc.origin() != keycloak_origin
            }
            None => loc.origin() != keycloak_origin,
        }
    };

    let client = page_client(reqwest::header::HeaderMap::new())?;

    let mut resp = client
        .get(start.clone())
        .send()
        .await
        .with_context(|| format!("GET {}", redact_query(&start)))?;
    let mut posted = false;
    for _ in 0..MAX_STEPS {
        let status = resp.status();
        let here = resp.url().clone();
        if status.is_redirection() {
            let next = redirect_target(&resp)?;
            if is_final(&next) {
                return check_callback(next);
            }
            resp = client
                .get(next.clone())
                .send()
                .await
                .with_context(|| format!("GET {}", redact_query(&next)))?;
            continue;
        }
        let body = resp.text().await.context("reading a Keycloak page")?;
        if let Some(action) = login_form_action(&body) {
            if posted {
                let msg = page_message(&body).unwrap_or_else(|| "no message on the page".into());
                bail!("login as {username:?} failed: Keycloak says: {msg}");
            }
            let action = here
                .join(&action)
                .with_context(|| format!("invalid form action {action:?}"))?;
            resp = client
                .post(action)
                .form(&[
                    ("username", username),
                    ("password", password),
                    ("credentialId", ""),
                ])
                .send()
                .await
                .context("POST of the login form")?;
            posted = true;
            continue;
        }
        let title = page_title(&body).unwrap_or_else(|| "(no title)".into());
        let msg = page_message(&body)
            .map(|m| format!(", message {m:?}"))
            .unwrap_or_default();
        if posted {
            bail!(
                "after the login form Keycloak showed page {title:?} (HTTP {status}{msg}) instead of \
                 redirecting to the client: a required action (update profile, verify email...), a login \
                 gate or an error. Page text: {}",
                page_text(&body)
            );
        }
        bail!(
            "no login form (form#kc-form-login) at {}: page {title:?} (HTTP {status}{msg}): {}",
            redact_query(&here),
            if msg.is_empty() {
                snippet(&body)
            } else {
                String::new()
            }
        );
    }
    bail!("too many redirects/pages (> {MAX_STEPS}) during login")
}

/// Approve a device login (RFC 8628) on Keycloak's real device pages, as a
/// person with a browser would: open `verification_uri_complete` (or the
/// plain verification URI, then the code is typed into the user-code
/// form), sign in on `<form id="kc-form-login">`, and confirm the grant
/// page (`name="accept"`), until Keycloak says the device login succeeded.
///
/// Errors: wrong credentials, an unknown or expired code (with the page's
/// message), an unexpected page (with its title and message).
pub async fn device_login(
    verification_uri: &str,
    user_code: &str,
    username: &str,
    password: &str,
) -> Result<()> {
    let start = Url::parse(verification_uri).context("invalid verification URI")?;
    // What a browser sends. Keycloak serves two POST handlers at
    // `/realms/R/device` and picks by `Accept`: with `text/html` the typed
    // user code is verified; with `*/*` (curl's, reqwest's default) the
    // POST is taken as a device authorization request and answered
    // `401 invalid_client`.
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::ACCEPT,
        reqwest::header::HeaderValue::from_static(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
    );
    let client = page_client(headers)?;
    let mut resp = client
        .get(start.clone())
        .send()
        .await
        .context("GET device page")?;
    let (mut code_sent, mut login_sent, mut accepted) = (false, false, false);
    for _ in 0..MAX_STEPS {
        let status = resp.status();
        let here = resp.url().clone();
        if status.is_redirection() {
            let next = redirect_target(&resp)?;
            resp = client
                .get(next)
                .send()
                .await
                .context("following a redirect")?;
            continue;
        }
        let body = resp.text().await.context("reading a Keycloak page")?;
        let title = page_title(&body).unwrap_or_default();
        let msg = page_message(&body);
        if let Some(action) = login_form_action(&body) {
            if login_sent {
                bail!(
                    "device login as {username:?} failed: Keycloak says: {}",
                    msg.unwrap_or_else(|| "no message".into())
                );
            }
            login_sent = true;
            resp = client
                .post(here.join(&action).context("form action")?)
                .form(&[
                    ("username", username),
                    ("password", password),
                    ("credentialId", ""),
                ])
                .send()
                .await
                .context("POST of the login form")?;
            continue;
        }
        if let Some(form) = form_with_field(&body, "device_user_code") {
            if code_sent {
                bail!(
                    "Keycloak refused the user code: {}",
                    msg.unwrap_or_else(|| title.clone())
                );
            }
            code_sent = true;
            let mut fields = form.hidden;
            fields.push(("device_user_code".into(), user_code.into()));
            resp = client
                .post(here.join(&form.action).context("form action")?)
                .form(&fields)
                .send()
                .await
                .context("POST of the user code")?;
            continue;
        }
        if let Some(form) = form_with_field(&body, "accept") {
            if accepted {
                bail!("the grant page came back after it was accepted ({title:?})");
            }
            accepted = true;
            let mut fields = form.hidden;
            fields.push(("accept".into(), "Yes".into()));
            resp = client
                .post(here.join(&form.action).context("form action")?)
                .form(&fields)
                .send()
                .await
                .context("POST of the grant page")?;
            continue;
        }
        let heading = page_heading(&body).unwrap_or_default();
        // Keycloak's last page: "Device Login Successful".
        if status.is_success() && accepted && heading.to_lowercase().contains("success") {
            return Ok(());
        }
        bail!(
            "unexpected device page {heading:?} / {title:?} (HTTP {status}{}): {}",
            msg.map(|m| format!(", message {m:?}")).unwrap_or_default(),
            snippet(&body)
        );
    }
    bail!("too many pages (> {MAX_STEPS}) during the device login")
}

/// A form's action and its hidden inputs.
struct Form {
    action: String,
    hidden: Vec<(String, String)>,
}

/// The first `<form>` that contains an input or button named `field`.
fn form_with_field(html: &str, field: &str) -> Option<Form> {
    static FORMS: OnceLock<Regex> = OnceLock::new();
    static ACTION: OnceLock<Regex> = OnceLock::new();
    static INPUT: OnceLock<Regex> = OnceLock::new();
    static ATTR: OnceLock<Regex> = OnceLock::new();
    let forms = re(&FORMS, r"(?is)<form\b([^>]*)>(.*?)</form>");
    let action = re(&ACTION, r#"(?is)\baction\s*=\s*(?:"([^"]*)"|'([^']*)')"#);
    let input = re(&INPUT, r"(?is)<(?:input|button)\b[^>]*>");
    let attr = re(
        &ATTR,
        r#"(?is)\b(name|value|type)\s*=\s*(?:"([^"]*)"|'([^']*)')"#,
    );
    for f in forms.captures_iter(html) {
        let (open, inner) = (f.get(1)?.as_str(), f.get(2)?.as_str());
        let mut has = false;
        let mut hidden = Vec::new();
        for i in input.find_iter(inner) {
            let (mut name, mut value, mut kind) = (None, String::new(), String::new());
            for a in attr.captures_iter(i.as_str()) {
                let v = a.get(2).or_else(|| a.get(3)).map_or("", |m| m.as_str());
                match a.get(1)?.as_str().to_ascii_lowercase().as_str() {
                    "name" => name = Some(html_unescape(v)),
                    "value" => value = html_unescape(v),
                    _ => kind = v.to_ascii_lowercase(),
                }
            }
            if name.as_deref() == Some(field) {
                has = true;
            } else if let (Some(n), "hidden") = (name, kind.as_str()) {
                hidden.push((n, value));
            }
        }
        if has {
            let caps = action.captures(open)?;
            let raw = caps.get(1).or_else(|| caps.get(2))?.as_str();
            return Some(Form {
                action: html_unescape(raw),
                hidden,
            });
        }
    }
    None
}

/// An HTTP client that walks Keycloak's pages as a browser does: cookies
/// kept, no redirect followed on its own (each step is looked at), 30 s per
/// call, `headers` on every request.
fn page_client(headers: reqwest::header::HeaderMap) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .default_headers(headers)
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .context("building the HTTP client")
}

/// Where the redirect `resp` points, made absolute against its URL.
/// Errors: no (or unreadable) `Location`, or one that is no URL.
fn redirect_target(resp: &reqwest::Response) -> Result<Url> {
    let here = resp.url();
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            anyhow!(
                "HTTP {} without Location from {}",
                resp.status(),
                redact_query(here)
            )
        })?;
    here.join(location)
        .with_context(|| format!("invalid Location {location:?}"))
}

fn check_callback(url: Url) -> Result<Url> {
    let get = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    if let Some(err) = get("error") {
        let desc = get("error_description").unwrap_or_default();
        bail!("authorization failed: {err}: {desc}");
    }
    if get("code").is_none() {
        bail!(
            "redirect to the client carries no code: {}",
            redact_query(&url)
        );
    }
    Ok(url)
}

/// The URL without its query (which may hold a code).
fn redact_query(url: &Url) -> String {
    let mut u = url.clone();
    if u.query().is_some() {
        u.set_query(Some("…"));
    }
    u.to_string()
}

fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("valid regex"))
}

/// The (unescaped) `action` of `<form id="kc-form-login" ...>`.
fn login_form_action(html: &str) -> Option<String> {
    static FORM: OnceLock<Regex> = OnceLock::new();
    static ACTION: OnceLock<Regex> = OnceLock::new();
    let form = re(
        &FORM,
        r#"(?is)<form\b[^>]*\bid\s*=\s*["']kc-form-login["'][^>]*>"#,
    );
    let action = re(&ACTION, r#"(?is)\baction\s*=\s*(?:"([^"]*)"|'([^']*)')"#);
    let tag = form.find(html)?.as_str();
    let caps = action.captures(tag)?;
    let raw = caps.get(1).or_else(|| caps.get(2))?.as_str();
    Some(html_unescape(raw))
}

/// The text of the page's heading (`id="kc-page-title"`), tags removed.
fn page_heading(html: &str) -> Option<String> {
    static HEADING: OnceLock<Regex> = OnceLock::new();
    static TAG: OnceLock<Regex> = OnceLock::new();
    let heading = re(
        &HEADING,
        r#"(?is)<[a-z0-9]+\b[^>]*\bid\s*=\s*"kc-page-title"[^>]*>(.*?)</h[1-6]>"#,
    );
    let tag = re(&TAG, r"(?s)<[^>]*>");
    let inner = heading.captures(html)?.get(1)?.as_str();
    Some(collapse(&html_unescape(&tag.replace_all(inner, " "))))
}

fn page_title(html: &str) -> Option<String> {
    static TITLE: OnceLock<Regex> = OnceLock::new();
    let title = re(&TITLE, r"(?is)<title[^>]*>(.*?)</title>");
    let t = title.captures(html)?.get(1)?.as_str();
    Some(collapse(&html_unescape(t)))
}

/// The feedback / error message a Keycloak page shows, if any.
fn page_message(html: &str) -> Option<String> {
    static FEEDBACK: OnceLock<Regex> = OnceLock::new();
    static ERROR_PAGE: OnceLock<Regex> = OnceLock::new();
    let feedback = re(
        &FEEDBACK,
        r#"(?is)<[a-z]+\b[^>]*class\s*=\s*"[^"]*\bkc-feedback-text\b[^"]*"[^>]*>(.*?)</"#,
    );
    let error_page = re(
        &ERROR_PAGE,
        r#"(?is)id\s*=\s*"kc-error-message"[^>]*>.*?<p\b[^>]*>(.*?)</p>"#,
    );
    [feedback, error_page]
        .iter()
        .filter_map(|r| r.captures(html))
        .filter_map(|c| c.get(1))
        .map(|m| collapse(&html_unescape(m.as_str())))
        .find(|s| !s.is_empty())
}

/// The visible text of a page's body (tags, scripts and styles removed,
/// entities unescaped, whitespace collapsed), at most 2000 characters.
pub fn page_text(html: &str) -> String {
    static BODY: OnceLock<Regex> = OnceLock::new();
    static HIDDEN: OnceLock<Regex> = OnceLock::new();
    static TAG: OnceLock<Regex> = OnceLock::new();
    let body = re(&BODY, r"(?is)<body\b[^>]*>(.*)</body>")
        .captures(html)
        .and_then(|c| c.get(1))
        .map_or(html, |m| m.as_str());
    let visible =
        re(&HIDDEN, r"(?is)<(script|style)\b.*?</(script|style)\s*>").replace_all(body, " ");
    let text = re(&TAG, r"(?s)<[^>]*>").replace_all(&visible, " ");
    collapse(&html_unescape(&text)).chars().take(2000).collect()
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Unescape the HTML entities Keycloak's templates produce.
pub(crate) fn html_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp..];
        let Some(semi) = tail.find(';').filter(|&i| i <= 12) else {
            out.push('&');
            rest = &tail[1..];
            continue;
        };
        let entity = &tail[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some('\u{a0}'),
            e if e.starts_with("#x") || e.starts_with("#X") => u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse::<u32>().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &tail[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_form_action_and_unescapes() {
        let html = r#"<html><head><title>Sign in to JIT</title></head><body>
            <form id="kc-form-login" class="pf-v5-c-form" onsubmit="login.disabled = true; return true;"
              action="http://127.0.0.1:18080/realms/jit/login-actions/authenticate?session_code=a&amp;execution=b&amp;client_id=jit-cli" method="post">
            </form></body></html>"#;
        assert_eq!(
            login_form_action(html).as_deref(),
            Some("http://127.0.0.1:18080/realms/jit/login-actions/authenticate?session_code=a&execution=b&client_id=jit-cli")
        );
        assert_eq!(page_title(html).as_deref(), Some("Sign in to JIT"));
        assert_eq!(page_message(html), None);
    }

    #[test]
    fn finds_the_grant_form_and_its_hidden_fields() {
        let html = r#"<form class="form-actions" action="/realms/jit/login-actions/consent?client_id=jit-cli&amp;tab_id=t" method="POST">
            <input type="hidden" name="code" value="c-1">
            <input class="btn" name="accept" id="kc-login" type="submit" value="Yes"/>
            <input class="btn" name="cancel" id="kc-cancel" type="submit" value="No"/>
            </form>"#;
        let f = form_with_field(html, "accept").unwrap();
        assert_eq!(
            f.action,
            "/realms/jit/login-actions/consent?client_id=jit-cli&tab_id=t"
        );
        assert_eq!(f.hidden, vec![("code".to_string(), "c-1".to_string())]);
        assert!(form_with_field(html, "device_user_code").is_none());
    }

    #[test]
    fn reads_the_page_heading() {
        let html = r#"<h1 class="pf-v5-c-title" id="kc-page-title">  <!-- template: x.ftl -->
            <p>Device Login Successful</p>
</h1>"#;
        assert_eq!(
            page_heading(html).as_deref(),
            Some("Device Login Successful")
        );
    }

    #[test]
    fn no_form() {
        assert_eq!(
            login_form_action("<form id=\"other\" action=\"/x\"></form>"),
            None
        );
    }

    #[test]
    fn feedback_and_error_page_messages() {
        let wrong = r#"<div class="pf-v5-c-helper-text__item pf-m-error" id="input-error-username">
            <span class="pf-v5-c-helper-text__item-text pf-m-error kc-feedback-text">
                Invalid username or password.
            </span></div>"#;
        assert_eq!(
            page_message(wrong).as_deref(),
            Some("Invalid username or password.")
        );
        let error_page = r#"<div id="kc-error-message">
            <p class="instruction">Invalid parameter: redirect_uri</p></div>"#;
        assert_eq!(
            page_message(error_page).as_deref(),
            Some("Invalid parameter: redirect_uri")
        );
    }

    #[test]
    fn visible_text_of_a_page() {
        let html = r#"<html><head><title>T</title><script>var x = "<b>";</script></head>
            <body><style>p { color: red }</style><h1>Just-in-time access required</h1>
            <pre id="jit-command">jit request prod-db-admin --reason &quot;&lt;why&gt;&quot;</pre></body></html>"#;
        assert_eq!(
            page_text(html),
            "Just-in-time access required jit request prod-db-admin --reason \"<why>\""
        );
    }

    #[test]
    fn unescape() {
        assert_eq!(html_unescape("a&amp;b&#x3d;c&#61;d&quot;"), "a&b=c=d\"");
        assert_eq!(html_unescape("a & b &unknown; c"), "a & b &unknown; c");
        assert_eq!(html_unescape("tail&"), "tail&");
    }
}
