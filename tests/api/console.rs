//! The console's server side, in process: the embedded page and assets
//! with their headers, the session routes, and the rules for state
//! changes made from a browser. Its pages are tested in a real browser in
//! `tests/server/console.rs`.

use actix_web::http::header;
use actix_web::{App, test};
use herald::http;
use regex::Regex;
use serde_json::{Value, json};

use super::common::Fixture;
use super::{ALL_KEY, READ_KEY, settings, state};

struct Answer {
    status: u16,
    headers: actix_web::http::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A state change that needs the admin role and no engine.
fn suppress(address: &str) -> test::TestRequest {
    test::TestRequest::post()
        .uri("/api/suppressions")
        .set_json(json!({"channel": "email", "address": address}))
}

macro_rules! app {
    ($fixture:expr, $keys:expr) => {{
        let (state, _clock) = state(&$fixture, settings($keys));
        test::init_service(App::new().app_data(state).configure(http::configure)).await
    }};
}

async fn send<S, B>(app: &S, request: test::TestRequest) -> Answer
where
    S: actix_web::dev::Service<
            actix_http::Request,
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
        >,
    B: actix_web::body::MessageBody,
{
    let response = test::call_service(app, request.to_request()).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = test::read_body(response).await.to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

#[actix_web::test]
async fn the_page_and_every_asset_it_names_are_served_from_the_binary() {
    let fixture = Fixture::sqlite().await;
    let app = app!(fixture, true);
    let page = send(&app, test::TestRequest::get().uri("/")).await;
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").starts_with("text/html"));
    let csp = page.header("content-security-policy").to_owned();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(page.header("x-content-type-options"), "nosniff");
    assert_eq!(page.header("x-frame-options"), "DENY");

    // Everything the page loads comes from this server, and exists; so
    // does every module the scripts import.
    let html = page.text();
    assert!(!html.contains("<script>"), "no inline script");
    assert!(!html.contains(" style="), "no inline style");
    let attribute = Regex::new(r##"(?:src|href)="([^"#]+)""##).expect("a regex");
    let import = Regex::new(r#"from '(\.{1,2}/[^']+)'"#).expect("a regex");
    let mut pending: Vec<String> = attribute
        .captures_iter(&html)
        .map(|c| c[1].to_owned())
        .collect();
    let mut seen = Vec::new();
    while let Some(path) = pending.pop() {
        assert!(
            path.starts_with("/console/assets/"),
            "{path} is not served by Herald"
        );
        if seen.contains(&path) {
            continue;
        }
        let asset = send(&app, test::TestRequest::get().uri(&path)).await;
        assert_eq!(asset.status, 200, "{path}");
        assert_eq!(asset.header("x-content-type-options"), "nosniff");
        if path.ends_with(".js") {
            assert!(asset.header("content-type").starts_with("text/javascript"));
            let base = path.rsplit_once('/').expect("a directory").0.to_owned();
            for found in import.captures_iter(&asset.text()) {
                let mut dir = base.clone();
                let mut relative = found[1].to_owned();
                while let Some(rest) = relative.strip_prefix("../") {
                    dir = dir.rsplit_once('/').expect("a parent").0.to_owned();
                    relative = rest.to_owned();
                }
                let relative = relative.trim_start_matches("./");
                pending.push(format!("{dir}/{relative}"));
            }
        }
        seen.push(path);
    }
    assert!(seen.len() >= 10, "{seen:?}");

    // Revalidation: an unchanged asset costs a 304.
    let first = send(
        &app,
        test::TestRequest::get().uri("/console/assets/js/main.js"),
    )
    .await;
    let etag = first.header("etag").to_owned();
    assert!(!etag.is_empty());
    let again = send(
        &app,
        test::TestRequest::get()
            .uri("/console/assets/js/main.js")
            .insert_header((header::IF_NONE_MATCH, etag)),
    )
    .await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());

    let missing = send(
        &app,
        test::TestRequest::get().uri("/console/assets/no-such.js"),
    )
    .await;
    assert_eq!(missing.status, 404);
}

#[actix_web::test]
async fn signing_in_sets_an_http_only_strict_cookie_that_carries_the_key_s_roles() {
    let fixture = Fixture::sqlite().await;
    let app = app!(fixture, true);
    let before = send(&app, test::TestRequest::get().uri("/console/session")).await;
    assert_eq!(
        before.json(),
        json!({"open": false, "signed_in": false, "roles": []})
    );
    assert_eq!(before.header("cache-control"), "no-store");

    let wrong = send(
        &app,
        test::TestRequest::post()
            .uri("/console/session")
            .set_json(json!({"key": "not-a-configured-key"})),
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.headers.get("set-cookie").is_none());
    let blank = send(
        &app,
        test::TestRequest::post()
            .uri("/console/session")
            .set_json(json!({"key": " "})),
    )
    .await;
    assert_eq!(blank.status, 400);
    assert_eq!(blank.json()["error"]["field"], "key");
    let unknown_field = send(
        &app,
        test::TestRequest::post()
            .uri("/console/session")
            .set_json(json!({"key": READ_KEY, "role": "admin"})),
    )
    .await;
    assert_eq!(unknown_field.status, 422);

    let signed = send(
        &app,
        test::TestRequest::post()
            .uri("/console/session")
            .set_json(json!({ "key": READ_KEY })),
    )
    .await;
    assert_eq!(signed.status, 200);
    let cookie = signed.header("set-cookie").to_owned();
    for attribute in ["herald_session=", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains(READ_KEY), "the key is not in the clear");
    let body = signed.json();
    assert_eq!(body["roles"], json!(["read"]));
    let csrf = body["csrf"].as_str().expect("a token").to_owned();
    let pair = cookie.split(';').next().expect("name=value").to_owned();

    let session = send(
        &app,
        test::TestRequest::get()
            .uri("/console/session")
            .insert_header((header::COOKIE, pair.clone())),
    )
    .await;
    assert_eq!(session.json()["signed_in"], true);
    assert_eq!(session.json()["csrf"], csrf.as_str());

    // The cookie reads, within its key's roles.
    let read = send(
        &app,
        test::TestRequest::get()
            .uri("/api/suppressions")
            .insert_header((header::COOKIE, pair.clone())),
    )
    .await;
    assert_eq!(read.status, 200);
    let add = send(
        &app,
        suppress("reader@example.com")
            .insert_header((header::COOKIE, pair.clone()))
            .insert_header(("x-csrf-token", csrf.clone())),
    )
    .await;
    assert_eq!(add.status, 403, "a read key cannot change the list");

    let out = send(
        &app,
        test::TestRequest::delete()
            .uri("/console/session")
            .insert_header((header::COOKIE, pair)),
    )
    .await;
    assert_eq!(out.status, 200);
    let removal = out.header("set-cookie");
    assert!(
        removal.contains("herald_session=;") && removal.contains("Max-Age=0"),
        "{removal}"
    );
}

#[actix_web::test]
async fn a_cookie_state_change_needs_the_csrf_token_and_the_same_site() {
    let fixture = Fixture::sqlite().await;
    let app = app!(fixture, true);
    let signed = send(
        &app,
        test::TestRequest::post()
            .uri("/console/session")
            .set_json(json!({ "key": ALL_KEY })),
    )
    .await;
    let pair = signed
        .header("set-cookie")
        .split(';')
        .next()
        .expect("name=value")
        .to_owned();
    let csrf = signed.json()["csrf"].as_str().expect("a token").to_owned();
    let change = |token: Option<&str>, site: Option<&str>| {
        let mut request =
            suppress("someone@example.com").insert_header((header::COOKIE, pair.clone()));
        if let Some(token) = token {
            request = request.insert_header(("x-csrf-token", token.to_owned()));
        }
        if let Some(site) = site {
            request = request.insert_header(("sec-fetch-site", site.to_owned()));
        }
        request
    };
    assert_eq!(send(&app, change(None, None)).await.status, 403);
    assert_eq!(send(&app, change(Some("0"), None)).await.status, 403);
    assert_eq!(
        send(&app, change(Some(&csrf), Some("cross-site")))
            .await
            .status,
        403
    );
    let done = send(&app, change(Some(&csrf), Some("same-origin"))).await;
    assert!(done.status < 300, "{}: {}", done.status, done.text());
    // Reading needs no token.
    let read = send(
        &app,
        test::TestRequest::get()
            .uri("/api/suppressions")
            .insert_header((header::COOKIE, pair)),
    )
    .await;
    assert_eq!(read.status, 200);
    // A bearer key needs none either: a browser never sends one by itself.
    let bearer = send(
        &app,
        suppress("other@example.com")
            .insert_header((header::AUTHORIZATION, format!("Bearer {ALL_KEY}")))
            .insert_header(("sec-fetch-site", "cross-site")),
    )
    .await;
    assert!(bearer.status < 300, "{}", bearer.status);
}

#[actix_web::test]
async fn without_keys_the_console_is_open_but_other_sites_cannot_change_state() {
    let fixture = Fixture::sqlite().await;
    let app = app!(fixture, false);
    let session = send(&app, test::TestRequest::get().uri("/console/session")).await;
    assert_eq!(session.json()["open"], true);
    assert_eq!(session.json()["signed_in"], true);
    assert_eq!(session.json()["roles"], json!(["enqueue", "read", "admin"]));

    let change = || suppress("open@example.com");
    let cross = send(
        &app,
        change().insert_header(("sec-fetch-site", "cross-site")),
    )
    .await;
    assert_eq!(cross.status, 403);
    let other_origin = send(
        &app,
        change().insert_header((header::ORIGIN, "http://evil.example")),
    )
    .await;
    assert_eq!(other_origin.status, 403);
    let same_origin = send(
        &app,
        change()
            .insert_header((header::HOST, "127.0.0.1:8080"))
            .insert_header((header::ORIGIN, "http://127.0.0.1:8080")),
    )
    .await;
    assert!(same_origin.status < 300, "{}", same_origin.text());
    // A client that is no browser (curl) says nothing of sites.
    let plain = send(&app, suppress("curl@example.com")).await;
    assert!(plain.status < 300, "{}", plain.text());
}
