//! The operator console in a real browser (see `browser`), over a real
//! `herald` with seeded traffic, on both backends: sign-in, the overview's
//! charts, search by recipient, a message's retry events, pausing a
//! transport, a bulk replay by filter, a read-only key's view, and the
//! session, CSRF and header rules.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::browser::{Browser, scenario, screenshot_dir};
use super::common::Fixture;
use super::{Herald, client};

const ADMIN_KEY: &str = "console-admin-key-0123456789";
const READ_KEY: &str = "console-reader-key-0123456789";
const RETRIED_SMS_TO: &str = "+15550100";
const DEAD: usize = 5;
const EMAILS: usize = 30;

/// A config with an admin and a read-only key; emails to files, SMS to a
/// webhook that fails its first request, and a `broken` webhook whose
/// every delivery is refused for good.
fn write_config(dir: &Path, mock: &str) {
    let config = format!(
        r#"
[storage]
url = "sqlite://data/herald.db"

[[api_keys]]
key = "{ADMIN_KEY}"
roles = ["enqueue", "read", "admin"]

[[api_keys]]
key = "{READ_KEY}"
roles = ["read"]

[defaults]
retry_delay_ms = 200

[transports.outbox]
kind = "file"
path = "outbox"

[transports.hook]
kind = "webhook"
url = "{mock}/ok"

[transports.broken]
kind = "webhook"
url = "{mock}/broken"
max_retries = 0

[routes]
email = "outbox"
sms = "hook"
"#
    );
    std::fs::write(dir.join("config.toml"), config).expect("write config");
}

/// A running herald with its receiver, on the backend asked for.
struct Console {
    herald: Herald,
    _dir: tempfile::TempDir,
    _mock: MockServer,
    _fixture: Option<Fixture>,
    http: reqwest::Client,
}

impl Console {
    async fn start(postgres: bool) -> Console {
        let mock = MockServer::start().await;
        // The SMS endpoint fails once, so its message has retry events.
        Mock::given(method("POST"))
            .and(path("/ok"))
            .respond_with(ResponseTemplate::new(503))
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&mock)
            .await;
        Mock::given(method("POST"))
            .and(path("/ok"))
            .respond_with(ResponseTemplate::new(200))
            .with_priority(2)
            .mount(&mock)
            .await;
        Mock::given(method("POST"))
            .and(path("/broken"))
            .respond_with(ResponseTemplate::new(400).set_body_string("no such endpoint"))
            .mount(&mock)
            .await;
        let dir = tempfile::tempdir().expect("a temporary directory");
        write_config(dir.path(), &mock.uri());
        let fixture = if postgres {
            Some(Fixture::postgres().await)
        } else {
            None
        };
        let env: Vec<(&str, &str)> = match &fixture {
            Some(f) => vec![("HERALD_DATABASE_URL", f.options.url.as_str())],
            None => vec![],
        };
        let http = client();
        let mut herald = Herald::start(dir.path(), &env);
        herald.wait_until_live(&http).await;
        let console = Console {
            herald,
            _dir: dir,
            _mock: mock,
            _fixture: fixture,
            http,
        };
        console.seed().await;
        console
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.herald.base)
    }

    async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method, self.url(path))
            .bearer_auth(ADMIN_KEY);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    async fn get(&self, path: &str) -> Value {
        self.api(reqwest::Method::GET, path, None).await
    }

    /// Emails that are sent, one SMS that is sent on its second attempt,
    /// and dead letters on `broken`; waits until all have run their course.
    async fn seed(&self) {
        let mut messages: Vec<Value> = (0..EMAILS)
            .map(|i| {
                json!({"channel": "email", "category": "receipt", "metadata": {"order": i},
                       "email": {"from": "shop@example.com", "to": [format!("user{i}@example.com")],
                                 "subject": format!("Receipt {i}"), "text": "Thanks"}})
            })
            .collect();
        messages.push(
            json!({"channel": "sms", "sms": {"to": RETRIED_SMS_TO, "body": "Your code is 1234"}}),
        );
        for i in 0..DEAD {
            messages.push(json!({"channel": "webhook", "transport": "broken",
                                 "webhook": {"payload": {"n": i}}}));
        }
        self.api(
            reqwest::Method::POST,
            "/api/messages/batch",
            Some(json!({ "messages": messages })),
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let sent = self.get("/api/messages?status=sent&limit=1000").await;
            let dead = self.get("/api/queue/dead-letters?limit=1000").await;
            let sent = sent["items"].as_array().map_or(0, Vec::len);
            let dead = dead["items"].as_array().map_or(0, Vec::len);
            if sent == EMAILS + 1 && dead == DEAD {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "seeded traffic did not finish: {sent} sent, {dead} dead"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn transport(&self, name: &str) -> Value {
        let list = self.get("/api/transports").await;
        list["transports"]
            .as_array()
            .and_then(|all| all.iter().find(|t| t["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no transport {name}: {list}"))
    }
}

async fn sign_in(browser: &Browser, console: &Console, key: &str) {
    browser.goto(&console.url("/")).await;
    let input = browser.find("#sign-in input[name=key]").await;
    input.send_keys(key).await.expect("type the key");
    browser.click("#sign-in button[type=submit]").await;
    browser.find("#who #sign-out").await;
}

/// Confirms the open confirmation dialog.
async fn confirm(browser: &Browser) {
    browser.click("dialog[open] button[data-confirm=yes]").await;
}

/// What an admin does, on one backend.
async fn operator_flow(postgres: bool, name: &str) {
    let console = Console::start(postgres).await;
    scenario(name, 1280, 900, async |browser| {
        // A wrong key is refused in words, and nothing opens.
        browser.goto(&console.url("/")).await;
        let input = browser.find("#sign-in input[name=key]").await;
        input
            .send_keys("not-a-key-of-this-server")
            .await
            .expect("type");
        browser.click("#sign-in button[type=submit]").await;
        browser
            .wait_for_text("#sign-in", "That key is not valid")
            .await;
        assert!(!browser.has("#overview-cards").await);

        sign_in(browser, &console, ADMIN_KEY).await;

        // The overview: figures and non-empty charts.
        browser.wait_for_text("#overview-cards", "Queued").await;
        browser.find("#chart-throughput canvas").await;
        browser.find("#chart-failures canvas").await;
        let drawn = browser
            .find("#chart-throughput")
            .await
            .attr("data-total")
            .await
            .expect("read the chart's total");
        assert_eq!(
            drawn.as_deref(),
            Some((EMAILS + 1).to_string().as_str()),
            "the throughput chart draws every seeded message sent"
        );
        if !postgres {
            let shot = screenshot_dir().join("overview-1280.png");
            browser.screenshot(&shot).await;
            // The README's picture is made here, on request.
            if std::env::var_os("HERALD_UPDATE_SCREENSHOT").is_some() {
                let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
                std::fs::create_dir_all(&docs).expect("create docs/");
                std::fs::copy(&shot, docs.join("console-overview.png"))
                    .expect("copy the overview's screenshot");
            }
        }

        // Search by recipient finds the SMS, whose detail shows its retry.
        browser.goto(&console.url("/#/messages")).await;
        browser
            .find("#f-recipient")
            .await
            .send_keys(RETRIED_SMS_TO)
            .await
            .expect("type the recipient");
        browser.click("#message-search button[type=submit]").await;
        browser.wait_for_text("#message-results", "hook").await;
        let rows = browser
            .client
            .find_all(fantoccini::Locator::Css("#message-results tbody tr"))
            .await
            .expect("rows");
        assert_eq!(rows.len(), 1, "only the SMS has that recipient");
        browser.click("#message-results tbody a").await;
        browser.find("#timeline li[data-kind=attempt_failed]").await;
        assert!(browser.has("#timeline li[data-kind=retry_scheduled]").await);
        assert!(browser.has("#timeline li[data-kind=sent]").await);
        browser.wait_for_text("#timeline", "503").await;
        // The payload only on request.
        assert!(!browser.has("#payload-body").await);
        browser.click("#show-payload").await;
        browser
            .wait_for_text("#payload-body", "Your code is 1234")
            .await;

        // Pausing from the console pauses the transport.
        browser.goto(&console.url("/#/transports")).await;
        browser
            .click("button[data-action=pause][data-transport=hook]")
            .await;
        confirm(browser).await;
        browser
            .find("button[data-action=resume][data-transport=hook]")
            .await;
        assert_eq!(console.transport("hook").await["paused"], true);

        // Replay every dead letter of `broken`, by filter. Paused first,
        // so the replayed stay queued where the API can count them.
        console
            .api(reqwest::Method::POST, "/api/transports/broken/pause", None)
            .await;
        browser
            .goto(&console.url("/#/dead-letters?transport=broken"))
            .await;
        browser.wait_for_text("#dead-groups", "broken").await;
        browser.click("#replay-all").await;
        confirm(browser).await;
        browser
            .wait_for_text("#replay-count", &format!("Replayed {DEAD}"))
            .await;
        let dead = console
            .get("/api/queue/dead-letters?transport=broken&limit=100")
            .await;
        assert_eq!(dead["items"], json!([]), "{dead}");
        let queued = console
            .get("/api/messages?transport=broken&status=queued&limit=100")
            .await;
        let queued = queued["items"].as_array().expect("items");
        assert_eq!(queued.len(), DEAD);
        for message in queued {
            let id = message["id"].as_str().expect("an id");
            let detail = console.get(&format!("/api/messages/{id}")).await;
            assert!(
                detail["events"]
                    .as_array()
                    .expect("events")
                    .iter()
                    .any(|e| e["kind"] == "replayed"),
                "{detail}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn an_operator_works_through_the_console_on_sqlite() {
    operator_flow(false, "operator-sqlite").await;
}

#[tokio::test]
async fn an_operator_works_through_the_console_on_postgres() {
    operator_flow(true, "operator-postgres").await;
}

#[tokio::test]
async fn a_read_only_key_sees_no_actions_and_its_forged_post_is_refused() {
    let console = Console::start(false).await;
    scenario("read-only", 1280, 900, async |browser| {
        sign_in(browser, &console, READ_KEY).await;
        browser.goto(&console.url("/#/transports")).await;
        browser.wait_for_text("#transports", "hook").await;
        assert!(!browser.has("[data-action]").await, "no pause or resume");
        browser.goto(&console.url("/#/dead-letters")).await;
        browser.wait_for_text("#dead-list", "broken").await;
        assert!(!browser.has("#replay-all").await);
        assert!(!browser.has("#dead-list input[type=checkbox]").await);
        let id = console.get("/api/queue/dead-letters?limit=1").await["items"][0]["id"]
            .as_str()
            .expect("a dead letter")
            .to_owned();
        browser
            .goto(&console.url(&format!("/#/messages/{id}")))
            .await;
        browser.find("#timeline").await;
        assert!(!browser.has("#retry-message").await);
        assert!(!browser.has("#cancel-message").await);

        // The page's own session, with its CSRF token, still lacks the role.
        let status = browser
            .run(
                "const s = await (await fetch('/console/session')).json(); \
                 const r = await fetch('/api/transports/hook/pause', \
                   {method: 'POST', headers: {'X-CSRF-Token': s.csrf}}); \
                 return r.status;",
            )
            .await;
        assert_eq!(status, json!(403));
        assert_eq!(console.transport("hook").await["paused"], false);
    })
    .await;
}

#[tokio::test]
async fn the_session_cookie_and_csrf_rules_hold() {
    let console = Console::start(false).await;
    scenario("session", 1280, 900, async |browser| {
        sign_in(browser, &console, ADMIN_KEY).await;
        // Scripts cannot read the key.
        let cookies = browser.run("return document.cookie;").await;
        assert!(
            !cookies.as_str().unwrap_or("").contains("herald_session"),
            "{cookies}"
        );
        // A state change on the cookie alone is refused; with the token it is done.
        let without = browser
            .run("return (await fetch('/api/transports/hook/pause', {method: 'POST'})).status;")
            .await;
        assert_eq!(without, json!(403));
        let wrong = browser
            .run(
                "return (await fetch('/api/transports/hook/pause', \
                 {method: 'POST', headers: {'X-CSRF-Token': 'f'.repeat(64)}})).status;",
            )
            .await;
        assert_eq!(wrong, json!(403));
        assert_eq!(console.transport("hook").await["paused"], false);
        let with = browser
            .run(
                "const s = await (await fetch('/console/session')).json(); \
                 return (await fetch('/api/transports/hook/pause', \
                   {method: 'POST', headers: {'X-CSRF-Token': s.csrf}})).status;",
            )
            .await;
        assert_eq!(with, json!(200));
        assert_eq!(console.transport("hook").await["paused"], true);

        // Signing out ends the session: the API answers 401 again.
        browser.click("#sign-out").await;
        browser.find("#sign-in").await;
        let after = browser
            .run("return (await fetch('/api/transports')).status;")
            .await;
        assert_eq!(after, json!(401));

        // A phone-width window gets the menu, and the pages still work.
        browser
            .client
            .set_window_size(390, 844)
            .await
            .expect("resize");
        sign_in(browser, &console, ADMIN_KEY).await;
        browser.wait_for_text("#overview-cards", "Queued").await;
        browser.click(".menu-toggle").await;
        browser.click("nav a[data-page=transports]").await;
        browser.wait_for_text("#transports", "outbox").await;
        browser
            .screenshot(&screenshot_dir().join("transports-phone.png"))
            .await;
    })
    .await;

    // Outside a browser: the cookie with its token, but from another site.
    let session = console
        .http
        .post(console.url("/console/session"))
        .json(&json!({ "key": ADMIN_KEY }))
        .send()
        .await
        .expect("sign in");
    assert_eq!(session.status(), 200);
    let cookie = session
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().expect("ASCII").to_owned())
        .find(|c| c.starts_with("herald_session="))
        .expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let csrf = session.json::<Value>().await.expect("JSON")["csrf"]
        .as_str()
        .expect("a CSRF token")
        .to_owned();
    let pair = cookie.split(';').next().expect("name=value").to_owned();
    let cross = console
        .http
        .post(console.url("/api/transports/hook/resume"))
        .header("cookie", &pair)
        .header("x-csrf-token", &csrf)
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .expect("request");
    assert_eq!(cross.status(), 403);
    let same = console
        .http
        .post(console.url("/api/transports/hook/resume"))
        .header("cookie", &pair)
        .header("x-csrf-token", &csrf)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .expect("request");
    assert_eq!(same.status(), 200);

    // The page's security headers.
    let page = console
        .http
        .get(console.url("/"))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), 200);
    let header = |name: &str| {
        page.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let csp = header("content-security-policy");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(header("x-content-type-options"), "nosniff");
}
