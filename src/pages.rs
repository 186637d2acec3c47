//! Every body portcullis writes itself: the token/claims dump page, error pages, the
//! signed-out page and small JSON bodies. Every value that came from outside is escaped.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS};
use http::{HeaderValue, Response, StatusCode};
use serde_json::{json, Value};

use crate::ResponseBody;

/// No scripts, no external resources, no framing: the pages are static text.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub fn full_body(bytes: impl Into<Bytes>) -> ResponseBody {
    ResponseBody::full(bytes)
}

pub fn empty_body() -> ResponseBody {
    full_body(Bytes::new())
}

/// Escapes text for HTML element content and double-quoted attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A response built here: status, content type, the no-store/CSP headers on every page.
fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<ResponseBody> {
    let mut response = Response::new(full_body(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

pub fn json_response(status: StatusCode, body: &Value) -> Response<ResponseBody> {
    respond(status, "application/json", body.to_string())
}

pub fn text_response(status: StatusCode, body: &'static str) -> Response<ResponseBody> {
    respond(status, "text/plain; charset=utf-8", body.to_owned())
}

fn html_document(title: &str, content: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>{STYLE}</style></head>\n<body><main>\n{content}\n</main></body></html>\n",
        title = escape_html(title),
    )
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#222;background:#fafafa}\
main{max-width:60rem}h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.6rem}\
pre{background:#fff;border:1px solid #ddd;padding:.8rem;overflow-x:auto;white-space:pre-wrap;word-break:break-all}\
.muted{color:#666}a,button{font-size:1rem}";

/// A page explaining what went wrong, for a person; `detail` is escaped.
pub fn error_page(
    status: StatusCode,
    title: &str,
    detail: &str,
    action: Option<(&str, &str)>,
) -> Response<ResponseBody> {
    let action = action
        .map(|(href, label)| format!("<p><a href=\"{}\">{}</a></p>", escape_html(href), escape_html(label)))
        .unwrap_or_default();
    let content = format!(
        "<h1>{}</h1>\n<p>{}</p>\n{action}<p class=\"muted\">HTTP {}</p>",
        escape_html(title),
        escape_html(detail),
        status.as_u16()
    );
    respond(status, "text/html; charset=utf-8", html_document(title, &content))
}

/// The same condition for a program: `{"error": code, "message": …}` plus extra fields.
pub fn error_json(
    status: StatusCode,
    code: &str,
    message: &str,
    extra: Option<(&str, &str)>,
) -> Response<ResponseBody> {
    let mut body = json!({ "error": code, "message": message });
    if let (Some((key, value)), Some(map)) = (extra, body.as_object_mut()) {
        map.insert(key.to_owned(), Value::String(value.to_owned()));
    }
    json_response(status, &body)
}

pub fn signed_out_page(login_url: &str) -> Response<ResponseBody> {
    let content = format!(
        "<h1>Signed out</h1>\n<p>You have been signed out of this application.</p>\n<p><a href=\"{}\">Sign in again</a></p>",
        escape_html(login_url)
    );
    respond(
        StatusCode::OK,
        "text/html; charset=utf-8",
        html_document("Signed out", &content),
    )
}

/// The fields of the dump page, named as the seed's page named them.
pub struct DumpFields {
    /// `accessToken`, `refreshToken`, `idToken`; `None` when tokens are hidden by configuration.
    pub tokens: Option<(String, Option<String>, Option<String>)>,
    pub claims: Value,
    pub scopes: Vec<String>,
    /// Fresh userinfo, or the reason it could not be fetched.
    pub userinfo: Result<Value, String>,
}

impl DumpFields {
    pub fn to_json(&self) -> Value {
        let (access, refresh, id) = match &self.tokens {
            Some((a, r, i)) => (json!(a), json!(r), json!(i)),
            None => (Value::Null, Value::Null, Value::Null),
        };
        let mut body = json!({
            "accessToken": access,
            "refreshToken": refresh,
            "idToken": id,
            "claims": self.claims,
            "scopes": self.scopes,
            "userInfo": self.userinfo.as_ref().unwrap_or(&Value::Null),
        });
        if let Some(map) = body.as_object_mut() {
            if self.tokens.is_none() {
                map.insert("tokensHidden".into(), Value::Bool(true));
            }
            if let Err(reason) = &self.userinfo {
                map.insert("userInfoError".into(), Value::String(reason.clone()));
            }
        }
        body
    }
}

pub fn dump_json(fields: &DumpFields) -> Response<ResponseBody> {
    json_response(StatusCode::OK, &fields.to_json())
}

pub fn dump_html(fields: &DumpFields, logout_url: &str) -> Response<ResponseBody> {
    let pretty = |value: &Value| escape_html(&serde_json::to_string_pretty(value).unwrap_or_default());
    let token = |label: &str, value: &Option<String>| {
        format!(
            "<h2>{label}</h2>\n<pre>{}</pre>\n",
            escape_html(value.as_deref().unwrap_or("(none)"))
        )
    };
    let mut content = String::from("<h1>Your session</h1>\n");
    match &fields.tokens {
        Some((access, refresh, id)) => {
            content.push_str(&token("Access token", &Some(access.clone())));
            content.push_str(&token("Refresh token", refresh));
            content.push_str(&token("ID token", id));
        }
        None => {
            content.push_str("<p class=\"muted\">Raw tokens are hidden by configuration (pages.show_tokens).</p>\n")
        }
    }
    content.push_str(&format!("<h2>Claims</h2>\n<pre>{}</pre>\n", pretty(&fields.claims)));
    content.push_str(&format!(
        "<h2>Scopes</h2>\n<pre>{}</pre>\n",
        escape_html(&fields.scopes.join(" "))
    ));
    match &fields.userinfo {
        Ok(userinfo) => content.push_str(&format!("<h2>User info</h2>\n<pre>{}</pre>\n", pretty(userinfo))),
        Err(reason) => content.push_str(&format!(
            "<h2>User info</h2>\n<p>Could not be fetched: {}</p>\n",
            escape_html(reason)
        )),
    }
    content.push_str(&format!(
        "<form method=\"post\" action=\"{}\"><button type=\"submit\">Sign out</button></form>",
        escape_html(logout_url)
    ));
    respond(
        StatusCode::OK,
        "text/html; charset=utf-8",
        html_document("Your session", &content),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_text(response: Response<ResponseBody>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn escaping_covers_the_five_html_specials() {
        assert_eq!(
            escape_html(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    fn hostile_fields() -> DumpFields {
        DumpFields {
            tokens: Some(("at<script>".into(), None, Some("id\"><img>".into()))),
            claims: json!({"name": "<script>alert(\"pwned\")</script>", "groups": ["<b>bold</b>"]}),
            scopes: vec!["openid".into(), "<i>".into()],
            userinfo: Err("<b>down</b>".into()),
        }
    }

    #[tokio::test]
    async fn the_dump_page_renders_hostile_claims_as_text() {
        let response = dump_html(&hostile_fields(), "/.auth/logout");
        assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
        assert!(response.headers()[CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("default-src 'none'"));
        let html = body_text(response).await;
        assert!(
            !html.contains("<script>") && !html.contains("<b>") && !html.contains("<img>") && !html.contains("<i>")
        );
        assert!(
            html.contains("&lt;script&gt;alert(\\&quot;pwned\\&quot;)&lt;/script&gt;"),
            "{html}"
        );
    }

    #[tokio::test]
    async fn the_dump_json_has_the_seed_field_names() {
        let body: Value = serde_json::from_str(&body_text(dump_json(&hostile_fields())).await).unwrap();
        for field in ["accessToken", "refreshToken", "idToken", "claims", "scopes", "userInfo"] {
            assert!(body.get(field).is_some(), "{field} missing");
        }
        assert_eq!(body["userInfoError"], "<b>down</b>");
    }

    #[tokio::test]
    async fn hidden_tokens_are_absent_from_the_dump() {
        let mut fields = hostile_fields();
        fields.tokens = None;
        let body: Value = serde_json::from_str(&body_text(dump_json(&fields)).await).unwrap();
        assert_eq!(body["accessToken"], Value::Null);
        assert_eq!(body["tokensHidden"], true);
    }

    #[tokio::test]
    async fn error_pages_escape_their_detail() {
        let response = error_page(
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "<script>x</script>",
            Some(("/.auth/login?rd=/\"a", "Try again")),
        );
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let html = body_text(response).await;
        assert!(html.contains("&lt;script&gt;x&lt;/script&gt;") && !html.contains("<script>"));
        assert!(html.contains("href=\"/.auth/login?rd=/&quot;a\""));
    }
}
