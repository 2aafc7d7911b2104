//! A real browser for the console tests: Debian's `chromium`, driven
//! through `chromedriver` (WebDriver) by fantoccini. `.ci/run` installs
//! both when absent. A scenario that fails saves a screenshot of the page
//! under `target/tmp/console/` before the failure propagates.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use hyper_util::client::legacy::connect::HttpConnector;

use super::free_port;

const CHROMEDRIVER: &str = "chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// How long a page gets to show what a step waits for.
pub const WAIT: Duration = Duration::from_secs(15);

/// Where screenshots go: the target directory's scratch space.
pub fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console");
    std::fs::create_dir_all(&dir).expect("create the screenshot directory");
    dir
}

/// A headless chromium session of its own, with its own chromedriver.
pub struct Browser {
    pub client: Client,
    driver: Child,
}

impl Browser {
    /// Starts chromedriver and a headless chromium `width` px wide.
    pub async fn start(width: u32, height: u32) -> Browser {
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot run {CHROMEDRIVER} ({err}): the console tests need Debian's chromium and \
                     chromium-driver (`apt-get install chromium chromium-driver`; .ci/run installs them)"
                )
            });
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    // Tests run as root in CI, where chromium's sandbox cannot start.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--disable-extensions",
                    format!("--window-size={width},{height}"),
                ],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(err) if Instant::now() < deadline => {
                    let _ = err;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(err) => panic!("no WebDriver session from {CHROMEDRIVER}: {err}"),
            }
        };
        Browser { client, driver }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// The first element matching `css`, once it is there.
    pub async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|err| panic!("no element matches `{css}` within {WAIT:?}: {err}"))
    }

    /// Whether anything matches `css` now.
    pub async fn has(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .expect("query the page")
            .is_empty()
    }

    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.expect("click");
    }

    /// Waits until the element matching `css` holds `text`, whatever the
    /// case (a stylesheet may capitalise what it shows).
    pub async fn wait_for_text(&self, css: &str, text: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let seen = match self.client.find(Locator::Css(css)).await {
                Ok(element) => element.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if seen.to_lowercase().contains(&text.to_lowercase()) {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "`{css}` did not come to hold {text:?} within {WAIT:?}; it holds {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `script` as an async function in the page (it may `await`)
    /// and answers what it returns.
    pub async fn run(&self, script: &str) -> serde_json::Value {
        let wrapped = format!(
            "const done = arguments[arguments.length - 1]; \
             (async () => {{ {script} }})().then(done, (e) => done({{error: String(e)}}));"
        );
        self.client
            .execute_async(&wrapped, vec![])
            .await
            .expect("run an async script in the page")
    }

    pub async fn screenshot(&self, path: &std::path::Path) {
        let png = self.client.screenshot().await.expect("take a screenshot");
        std::fs::write(path, png).expect("write the screenshot");
    }

    async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}

/// Runs `steps` in a fresh browser; if they fail, saves
/// `target/tmp/console/<name>.png` and then fails with their panic.
pub async fn scenario<F>(name: &str, width: u32, height: u32, steps: F)
where
    F: AsyncFnOnce(&Browser),
{
    let browser = Browser::start(width, height).await;
    let outcome = AssertUnwindSafe(steps(&browser)).catch_unwind().await;
    if let Err(panic) = outcome {
        let path = screenshot_dir().join(format!("{name}.png"));
        // A screenshot that cannot be taken must not hide the failure.
        if let Ok(png) = browser.client.screenshot().await {
            let _ = std::fs::write(&path, png);
            eprintln!("console test {name} failed; screenshot: {}", path.display());
        }
        browser.close().await;
        std::panic::resume_unwind(panic);
    }
    browser.close().await;
}
