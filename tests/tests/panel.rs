//! The control panel in a real headless Chromium (issue 4): what a person
//! sees and does in the page, checked against the API, the upstream's hit
//! counter and the files on disk.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian packages
//! `chromium` and `chromium-driver`); without them every test here fails and
//! says so. Screenshots go to `target/screenshots/`.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cacheow_tests::{Cacheow, Upstream, Wrapped, eventually, json_reply, outcome_files};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const DESKTOP: (u32, u32) = (1280, 900);
const NARROW: (u32, u32) = (400, 860);

// === the browser ===

/// A headless Chromium driven through its own chromedriver. Chromedriver
/// runs in its own process group, and dropping this kills the whole group,
/// so no Chromium outlives a failed test.
struct Browser {
    client: Client,
    base: String,
    // Dropped in this order: the driver group dies before its profile dir goes.
    _driver: DriverGuard,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Opens a browser on `cacheow` with every host but loopback unresolvable,
    /// so the page can only reach cacheow itself.
    async fn open(cacheow: &Cacheow) -> Browser {
        Self::open_at(cacheow.url(), &[]).await
    }

    /// Opens a browser on the panel at `base` (`http://HOST:PORT`).
    async fn open_at(base: String, extra_args: &[&str]) -> Browser {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(binary).exists(),
                "{binary} is missing: the panel tests drive a real headless Chromium. \
                 Install it with `apt-get install -y chromium chromium-driver`."
            );
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("starting chromedriver");
        let driver = DriverGuard(driver);
        let profile = tempfile::tempdir().expect("browser profile dir");
        let webdriver = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not start listening on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1".to_owned(),
            format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        args.extend(extra_args.iter().map(|a| (*a).to_owned()));
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        });
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities.as_object().expect("object").clone())
            .connect(&webdriver)
            .await
            .expect("a WebDriver session with headless Chromium");
        Browser {
            client,
            base,
            _driver: driver,
            _profile: profile,
        }
    }

    /// Ends the session (Chromium quits) before the driver is killed.
    async fn close(self) {
        let Browser { client, .. } = self;
        let _ = client.close().await;
    }

    async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .expect("navigate");
    }

    async fn find(&self, css: &str) -> Element {
        let found = self
            .client
            .wait()
            .at_most(Duration::from_secs(10))
            .every(Duration::from_millis(20))
            .for_element(Locator::Css(css))
            .await;
        match found {
            Ok(element) => element,
            Err(e) => {
                let alerts = self
                    .js("return [...document.querySelectorAll('[role=alert]')].map(e => e.innerText)")
                    .await;
                panic!("no element {css} after 10 s ({e}); alerts on the page: {alerts}")
            }
        }
    }

    async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map_or(0, |all| all.len())
    }

    /// The element's visible text, or "" when it is not there (yet).
    async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    async fn click(&self, css: &str) {
        self.find(css).await.click().await.expect("click");
    }

    async fn select(&self, css: &str, value: &str) {
        self.find(css)
            .await
            .select_by_value(value)
            .await
            .expect("choose option");
    }

    /// Replaces an input's content as a person would: select all, delete,
    /// type. (WebDriver's "clear" fires no `input` event.)
    async fn type_into(&self, css: &str, text: &str) {
        const CONTROL: char = '\u{E009}';
        const RELEASE_ALL: char = '\u{E000}';
        const BACKSPACE: char = '\u{E003}';
        let input = self.find(css).await;
        input
            .send_keys(&format!("{CONTROL}a{RELEASE_ALL}{BACKSPACE}{text}"))
            .await
            .expect("type");
    }

    async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .expect("run script")
    }

    /// Waits until the element's text is `expected`.
    async fn wait_text(&self, css: &str, expected: &str) {
        eventually(&format!("{css} shows {expected:?}"), || async {
            self.text(css).await == expected
        })
        .await;
    }

    /// A full-page PNG at `width`: the window grows to the document height.
    async fn screenshot(&self, name: &str, (width, height): (u32, u32)) -> PathBuf {
        self.client
            .set_window_size(width, height)
            .await
            .expect("resize");
        // The window is taller than the page area by the browser's frame.
        let full = self
            .js("return document.documentElement.scrollHeight + outerHeight - innerHeight")
            .await
            .as_u64()
            .unwrap_or(u64::from(height));
        let full = u32::try_from(full).unwrap_or(height).clamp(height, 8000);
        self.client
            .set_window_size(width, full)
            .await
            .expect("resize");
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        self.client
            .set_window_size(width, height)
            .await
            .expect("resize");
        path
    }
}

/// Kills chromedriver's process group (chromedriver and the Chromium it
/// started) when dropped, also when a test panics.
struct DriverGuard(Child);

impl Drop for DriverGuard {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

// === fixtures ===

/// An upstream answering `{"path": …}` plus a per-path body, so different
/// paths of one route become different outcomes.
async fn items_upstream() -> Upstream {
    Upstream::start(Arc::new(|parts, _body| {
        json_reply(&json!({"path": parts.uri.path(), "ok": true}))
    }))
    .await
}

/// `GET /things/<n>` through the proxy for each n: one outcome each.
async fn get_things(cacheow: &Cacheow, upstream: &Upstream, ns: impl IntoIterator<Item = u32>) {
    let client = cacheow.proxied_client();
    for n in ns {
        client
            .get(format!("{}/things/{n}", upstream.url()))
            .send()
            .await
            .expect("GET");
    }
}

async fn id_of(cacheow: &Cacheow, needle: &str) -> String {
    cacheow.function(needle).await["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

/// The function's outcomes as (id, preview).
async fn outcomes(cacheow: &Cacheow, function_id: &str) -> Vec<(String, String)> {
    cacheow.get(&format!("/api/functions/{function_id}")).await["outcomes"]
        .as_array()
        .expect("outcomes")
        .iter()
        .map(|o| {
            (
                o["id"].as_str().expect("id").to_owned(),
                o["preview"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn function_row(id: &str) -> String {
    format!("[data-testid=function-row][data-function-id='{id}']")
}

fn outcome_row(id: &str) -> String {
    format!("[data-testid=outcome-row][data-outcome-id='{id}']")
}

fn weight_row(id: &str) -> String {
    format!("[data-testid=weight-row][data-outcome-id='{id}']")
}

async fn mode_of(cacheow: &Cacheow, id: &str) -> String {
    cacheow.get(&format!("/api/functions/{id}")).await["mode"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

// === the functions page ===

#[tokio::test(flavor = "multi_thread")]
async fn functions_page_lists_both_functions_and_switching_one_to_cache_makes_the_next_call_a_hit()
{
    let upstream = Upstream::echo().await;
    let cacheow = Cacheow::start(&[]);
    let client = cacheow.proxied_client();
    for _ in 0..2 {
        client
            .get(format!("{}/users/1", upstream.url()))
            .send()
            .await
            .expect("GET");
    }
    client
        .post(format!("{}/orders", upstream.url()))
        .body("{}")
        .send()
        .await
        .expect("POST");
    let users = id_of(&cacheow, "/users/").await;
    let orders = id_of(&cacheow, "/orders").await;

    let browser = Browser::open(&cacheow).await;
    browser.goto("/").await;
    browser
        .wait_text(
            &format!("{} [data-testid=calls]", function_row(&users)),
            "2",
        )
        .await;
    browser
        .wait_text(
            &format!("{} [data-testid=calls]", function_row(&orders)),
            "1",
        )
        .await;
    assert_eq!(browser.count("[data-testid=function-row]").await, 2);
    for (id, method, route) in [(&users, "GET", "/users/{id}"), (&orders, "POST", "/orders")] {
        let row = function_row(id);
        let label = browser.text(&format!("{row} .fn-name")).await;
        assert!(label.contains(method), "{label}");
        assert!(label.contains(&upstream.addr.to_string()), "{label}");
        assert!(
            label.contains(route.split('{').next().unwrap_or(route)),
            "{label}"
        );
        for counter in ["hits", "misses", "mocks", "errors"] {
            assert_eq!(
                browser
                    .text(&format!("{row} [data-testid={counter}]"))
                    .await,
                "0",
                "{counter}"
            );
        }
    }

    browser
        .select(
            &format!("{} [data-testid=mode-select]", function_row(&users)),
            "cache",
        )
        .await;
    eventually("the API reports cache mode", || async {
        mode_of(&cacheow, &users).await == "cache"
    })
    .await;
    assert_eq!(mode_of(&cacheow, &orders).await, "default");

    let hits_before = upstream.hits();
    let reply = client
        .get(format!("{}/users/1", upstream.url()))
        .send()
        .await
        .expect("GET");
    assert_eq!(reply.headers()["x-cacheow-source"], "cache");
    assert_eq!(
        upstream.hits(),
        hits_before,
        "a cache hit must not reach upstream"
    );
    // The page follows without a reload.
    browser
        .wait_text(&format!("{} [data-testid=hits]", function_row(&users)), "1")
        .await;
    browser
        .wait_text(
            &format!("{} [data-testid=calls]", function_row(&users)),
            "3",
        )
        .await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_function_recorded_while_the_page_is_open_appears_without_a_reload() {
    let upstream = Upstream::echo().await;
    let cacheow = Cacheow::start(&[]);
    let client = cacheow.proxied_client();
    client
        .get(format!("{}/first", upstream.url()))
        .send()
        .await
        .expect("GET");

    let browser = Browser::open(&cacheow).await;
    browser.goto("/ui/").await;
    browser.find("[data-testid=function-row]").await;
    // Survives only as long as the document does.
    browser
        .js("window.__cacheowSamePage = true; return null")
        .await;

    client
        .get(format!("{}/second", upstream.url()))
        .send()
        .await
        .expect("GET");
    let second = id_of(&cacheow, "/second").await;
    browser.find(&function_row(&second)).await;
    assert_eq!(browser.count("[data-testid=function-row]").await, 2);
    assert_eq!(
        browser.js("return window.__cacheowSamePage === true").await,
        json!(true),
        "the page reloaded"
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_filters_narrow_the_list_by_text_and_by_mode() {
    let upstream = Upstream::echo().await;
    let cacheow = Cacheow::start(&[]);
    let client = cacheow.proxied_client();
    for path in ["/alpha", "/beta"] {
        client
            .get(format!("{}{path}", upstream.url()))
            .send()
            .await
            .expect("GET");
    }
    let beta = id_of(&cacheow, "/beta").await;
    cacheow.set_mode(&beta, "mock").await;

    let browser = Browser::open(&cacheow).await;
    browser.goto("/ui/").await;
    eventually("both rows", || async {
        browser.count("[data-testid=function-row]").await == 2
    })
    .await;
    browser.type_into("#filter-text", "alp").await;
    eventually("only alpha", || async {
        browser.count("[data-testid=function-row]").await == 1
    })
    .await;
    assert!(
        browser
            .text("[data-testid=function-row]")
            .await
            .contains("/alpha")
    );
    browser.type_into("#filter-text", "").await;
    browser.select("#filter-mode", "mock").await;
    eventually("only the mock one", || async {
        browser.count("[data-testid=function-row]").await == 1
            && browser.count(&function_row(&beta)).await == 1
    })
    .await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_functions_page_works_from_the_keyboard_with_a_visible_focus() {
    const TAB: &str = "\u{E004}";
    const SHIFT_TAB: &str = "\u{E008}\u{E004}\u{E000}";
    const ENTER: &str = "\u{E007}";
    const ARROW_DOWN: &str = "\u{E015}";
    let upstream = Upstream::echo().await;
    let cacheow = Cacheow::start(&[]);
    cacheow
        .proxied_client()
        .get(format!("{}/keys", upstream.url()))
        .send()
        .await
        .expect("GET");
    let id = id_of(&cacheow, "/keys").await;

    let browser = Browser::open(&cacheow).await;
    browser.goto("/").await;
    browser.find(&function_row(&id)).await;
    let press = |keys: &'static str| async {
        let focused = browser.client.active_element().await.expect("focus");
        focused.send_keys(keys).await.expect("keys");
    };
    let focused_testid = || async {
        browser
            .js("return document.activeElement.dataset.testid || null")
            .await
    };
    // From the top of the page, Tab reaches the row's mode menu.
    let mut tabs = 0;
    while focused_testid().await != json!("mode-select") {
        tabs += 1;
        assert!(tabs <= 12, "Tab never reached the mode menu");
        press(TAB).await;
    }
    let outline = browser
        .js("return getComputedStyle(document.activeElement).outlineStyle")
        .await;
    assert_eq!(
        outline,
        json!("solid"),
        "the focused control shows no focus ring"
    );
    press(ARROW_DOWN).await;
    eventually("cache mode from the keyboard", || async {
        mode_of(&cacheow, &id).await == "cache"
    })
    .await;
    // One step back is the function's link; Enter opens its page.
    press(SHIFT_TAB).await;
    assert_eq!(focused_testid().await, json!("function-link"));
    press(ENTER).await;
    browser
        .find("[data-testid=function-page] #function-mode")
        .await;
    let url = browser.client.current_url().await.expect("url");
    assert_eq!(url.path(), format!("/ui/functions/{id}"));
    browser.close().await;
}

// === the function page ===

#[tokio::test(flavor = "multi_thread")]
async fn weights_3_to_1_set_in_the_editor_make_mock_replies_follow_them() {
    let upstream = items_upstream().await;
    let cacheow = Cacheow::start(&[]);
    let client = cacheow.proxied_client();
    for n in [1, 2] {
        client
            .get(format!("{}/items/{n}", upstream.url()))
            .send()
            .await
            .expect("GET");
    }
    let id = id_of(&cacheow, "/items/").await;
    let all = outcomes(&cacheow, &id).await;
    assert_eq!(all.len(), 2, "{all:?}");
    let first = all
        .iter()
        .find(|(_, p)| p.contains("/items/1"))
        .expect("outcome of /items/1")
        .0
        .clone();
    let second = all
        .iter()
        .find(|(_, p)| p.contains("/items/2"))
        .expect("outcome of /items/2")
        .0
        .clone();

    let browser = Browser::open(&cacheow).await;
    browser.goto(&format!("/ui/functions/{id}")).await;
    browser
        .type_into(&format!("{} [data-testid=weight]", weight_row(&first)), "3")
        .await;
    browser
        .type_into(
            &format!("{} [data-testid=weight]", weight_row(&second)),
            "1",
        )
        .await;
    browser
        .wait_text(
            &format!("{} [data-testid=share]", weight_row(&first)),
            "75.0 %",
        )
        .await;
    browser
        .wait_text(
            &format!("{} [data-testid=share]", weight_row(&second)),
            "25.0 %",
        )
        .await;
    browser.click("#weights-save").await;
    browser.find("[data-testid=weights-ok]").await;
    let entries = cacheow.get(&format!("/api/functions/{id}")).await["mock_outcomes"].clone();
    let weight_of = |outcome: &str| {
        entries
            .as_array()
            .expect("entries")
            .iter()
            .find(|e| e["outcome_id"] == outcome)
            .map(|e| e["weight"].as_f64().expect("weight"))
    };
    assert_eq!(
        (weight_of(&first), weight_of(&second)),
        (Some(3.0), Some(1.0)),
        "{entries}"
    );

    browser.select("#function-mode", "mock").await;
    eventually("mock mode", || async {
        mode_of(&cacheow, &id).await == "mock"
    })
    .await;
    let hits_before = upstream.hits();
    let calls = 400;
    let mut firsts = 0;
    for _ in 0..calls {
        let reply = client
            .get(format!("{}/items/1", upstream.url()))
            .send()
            .await
            .expect("GET");
        assert_eq!(reply.headers()["x-cacheow-source"], "mock");
        let body: Value = reply.json().await.expect("JSON body");
        if body["path"] == "/items/1" {
            firsts += 1;
        }
    }
    let share = f64::from(firsts) / f64::from(calls);
    assert!(
        (0.68..=0.82).contains(&share),
        "{firsts} of {calls} mock replies were outcome 1, expected 75 % ± 7 %"
    );
    assert_eq!(
        upstream.hits(),
        hits_before,
        "mock mode must not reach upstream"
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manual_failure_added_in_the_form_makes_the_next_mock_call_fail_that_way() {
    let upstream = Upstream::echo().await;
    let cacheow = Cacheow::start(&[]);
    let client = cacheow.proxied_client();
    client
        .get(format!("{}/flaky", upstream.url()))
        .send()
        .await
        .expect("GET");
    let id = id_of(&cacheow, "/flaky").await;
    let recorded = outcomes(&cacheow, &id).await[0].0.clone();

    let browser = Browser::open(&cacheow).await;
    browser.goto(&format!("/ui/functions/{id}")).await;
    browser.click("#manual-kind-failure").await;
    browser
        .select("#manual-failure-kind", "connection_refused")
        .await;
    browser
        .type_into("#manual-message", "injected from the panel")
        .await;
    browser.click("#manual-mock-only").await;
    browser.click("#manual-submit").await;
    browser.find("[data-testid=manual-ok]").await;

    let manual = eventually_outcome_other_than(&cacheow, &id, &recorded).await;
    let row = outcome_row(&manual);
    browser
        .find(&format!("{row} [data-testid=flag-manual]"))
        .await;
    browser
        .find(&format!("{row} [data-testid=flag-mock-only]"))
        .await;
    assert!(browser.text(&row).await.contains("connection_refused"));

    // Only the failure may answer: the recorded outcome gets weight 0.
    browser
        .type_into(
            &format!("{} [data-testid=weight]", weight_row(&recorded)),
            "0",
        )
        .await;
    browser
        .wait_text(
            &format!("{} [data-testid=share]", weight_row(&manual)),
            "100.0 %",
        )
        .await;
    browser.click("#weights-save").await;
    browser.find("[data-testid=weights-ok]").await;
    browser.select("#function-mode", "mock").await;
    eventually("mock mode", || async {
        mode_of(&cacheow, &id).await == "mock"
    })
    .await;

    let hits_before = upstream.hits();
    let reply = client
        .get(format!("{}/flaky", upstream.url()))
        .send()
        .await
        .expect("GET");
    assert_eq!(reply.status(), 502);
    assert_eq!(reply.headers()["x-cacheow-error"], "connection_refused");
    assert_eq!(upstream.hits(), hits_before);
    browser.close().await;
}

async fn eventually_outcome_other_than(cacheow: &Cacheow, id: &str, known: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some((new, _)) = outcomes(cacheow, id)
            .await
            .into_iter()
            .find(|(o, _)| o != known)
        {
            return new;
        }
        assert!(Instant::now() < deadline, "no new outcome appeared");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_an_outcome_removes_it_from_the_page_and_the_store() {
    let upstream = items_upstream().await;
    let cacheow = Cacheow::start(&[]);
    get_things(&cacheow, &upstream, [1, 2]).await;
    let id = id_of(&cacheow, "/things/").await;
    let all = outcomes(&cacheow, &id).await;
    let (gone, kept) = (all[0].0.clone(), all[1].0.clone());
    let file_of = |outcome: &str| {
        cacheow
            .data_dir()
            .join("functions")
            .join(&id)
            .join("outcomes")
            .join(format!("{outcome}.json"))
    };
    eventually("both outcome files on disk", || async {
        file_of(&gone).exists() && file_of(&kept).exists()
    })
    .await;

    let browser = Browser::open(&cacheow).await;
    browser.goto(&format!("/ui/functions/{id}")).await;
    browser
        .click(&format!(
            "{} [data-testid=delete-outcome]",
            outcome_row(&gone)
        ))
        .await;
    browser
        .click(&format!(
            "{} [data-testid=confirm-delete]",
            outcome_row(&gone)
        ))
        .await;
    eventually("the row is gone", || async {
        browser.count(&outcome_row(&gone)).await == 0
    })
    .await;
    assert_eq!(browser.count(&outcome_row(&kept)).await, 1);
    let left: Vec<String> = outcomes(&cacheow, &id)
        .await
        .into_iter()
        .map(|(o, _)| o)
        .collect();
    assert_eq!(left, vec![kept.clone()]);
    eventually("its file is gone", || async { !file_of(&gone).exists() }).await;
    assert!(file_of(&kept).exists());
    assert_eq!(outcome_files(cacheow.data_dir(), &id), vec![file_of(&kept)]);

    // Rebuilding the index from the files finds just the one left.
    browser.click("#rebuild-index").await;
    let report = browser
        .find("[data-testid=rebuild-result]")
        .await
        .text()
        .await
        .expect("text");
    assert!(report.starts_with("Indexed 1 outcome file;"), "{report}");
    assert_eq!(browser.count(&outcome_row(&kept)).await, 1);
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_function_with_many_outcomes_shows_a_page_and_loads_more_on_request() {
    let upstream = items_upstream().await;
    let cacheow = Cacheow::start(&[]);
    get_things(&cacheow, &upstream, 0..230).await;
    let id = id_of(&cacheow, "/things/").await;
    let detail = cacheow.get(&format!("/api/functions/{id}")).await;
    assert_eq!(detail["outcome_count"], 230);
    assert_eq!(detail["outcomes"].as_array().map(Vec::len), Some(100));
    assert_eq!(detail["outcomes_truncated"], true);

    let browser = Browser::open(&cacheow).await;
    browser.goto(&format!("/ui/functions/{id}")).await;
    let rows = "[data-testid=outcome-row]";
    eventually("the first page of rows", || async {
        browser.count(rows).await == 100
    })
    .await;
    let count = browser
        .find("[data-testid=outcome-count]")
        .await
        .text()
        .await
        .expect("text");
    assert_eq!(
        count, "230",
        "the heading counts every outcome, not the rows shown"
    );
    browser.click("[data-testid=show-more-outcomes]").await;
    eventually("a second page of rows", || async {
        browser.count(rows).await == 200
    })
    .await;
    browser.click("[data-testid=show-more-outcomes]").await;
    eventually("every row", || async { browser.count(rows).await == 230 }).await;
    eventually("no more to show", || async {
        browser.count("[data-testid=show-more-outcomes]").await == 0
    })
    .await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_outcome_viewer_pretty_prints_a_json_body_and_redacts_authorization() {
    let body =
        json!({"id": 1, "name": "Ada", "roles": ["admin", "dev"], "address": {"city": "London"}});
    let reply = body.clone();
    let upstream = Upstream::start(Arc::new(move |_, _| json_reply(&reply))).await;
    let cacheow = Cacheow::start(&[]);
    let secret = "sk-live-do-not-show";
    cacheow
        .proxied_client()
        .get(format!("{}/users/1", upstream.url()))
        .header("authorization", format!("Bearer {secret}"))
        .send()
        .await
        .expect("GET");
    let id = id_of(&cacheow, "/users/").await;
    let outcome = outcomes(&cacheow, &id).await[0].0.clone();

    let browser = Browser::open(&cacheow).await;
    browser.goto(&format!("/ui/functions/{id}")).await;
    browser
        .click(&format!(
            "{} [data-testid=view-outcome]",
            outcome_row(&outcome)
        ))
        .await;
    let shown = browser
        .find("[data-testid=outcome-viewer] [data-testid=response-body] pre")
        .await;
    assert_eq!(
        shown.text().await.expect("text"),
        serde_json::to_string_pretty(&body).expect("pretty")
    );
    let authorization = browser
        .text("[data-testid=request-headers] tr[data-header=authorization] [data-testid=redacted]")
        .await;
    assert_eq!(authorization, "[redacted]");
    let page = browser.js("return document.body.innerText").await;
    assert!(
        !page.as_str().unwrap_or_default().contains(secret),
        "the secret reached the page"
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn api_errors_are_shown_in_words() {
    let upstream = Upstream::echo().await;
    let cacheow = Cacheow::start(&[]);
    cacheow
        .proxied_client()
        .get(format!("{}/slow", upstream.url()))
        .send()
        .await
        .expect("GET");
    let id = id_of(&cacheow, "/slow").await;

    let browser = Browser::open(&cacheow).await;
    browser.goto(&format!("/ui/functions/{id}")).await;
    // More than the API accepts: the server's reason must reach the page.
    browser.type_into("#latency-input", "99999999").await;
    browser.click("#latency-save").await;
    let error = browser
        .find("[data-testid=latency-error]")
        .await
        .text()
        .await
        .expect("text");
    assert!(error.starts_with("Latency not saved: "), "{error}");
    assert!(
        error.contains("latency_ms") && error.contains("HTTP 400"),
        "{error}"
    );

    browser.goto("/ui/functions/0123456789abcdef").await;
    let missing = browser
        .find("[data-testid=load-error]")
        .await
        .text()
        .await
        .expect("text");
    assert!(missing.contains("HTTP 404"), "{missing}");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_replay_duration_box_turns_recorded_durations_on() {
    let upstream = Upstream::echo().await;
    let cacheow = Cacheow::start(&[]);
    cacheow
        .proxied_client()
        .get(format!("{}/timed", upstream.url()))
        .send()
        .await
        .expect("GET");
    let id = id_of(&cacheow, "/timed").await;
    let browser = Browser::open(&cacheow).await;
    browser.goto(&format!("/ui/functions/{id}")).await;
    browser.click("#replay-duration").await;
    cacheow_tests::eventually("replay_duration set through the page", || async {
        cacheow.function("/timed").await["config"]["replay_duration"] == true
    })
    .await;
    browser.click("#replay-duration").await;
    cacheow_tests::eventually("and cleared again", || async {
        cacheow.function("/timed").await["config"]["replay_duration"] == false
    })
    .await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cache_policy_edited_in_the_page_changes_the_next_proxied_calls() {
    let upstream = Upstream::echo().await;
    let cacheow = Cacheow::start(&[]);
    let client = cacheow.proxied_client();
    let url = format!("{}/budgeted", upstream.url());
    client.get(&url).send().await.expect("GET");
    let id = id_of(&cacheow, "/budgeted").await;
    let browser = Browser::open(&cacheow).await;
    browser.goto(&format!("/ui/functions/{id}")).await;

    browser.type_into("#policy-ttl", "soon").await;
    browser.click("#policy-save").await;
    let error = browser.text("[data-testid=policy-error]").await;
    assert!(
        error.contains("`ttl`") && error.contains("HTTP 400"),
        "{error}"
    );

    browser.type_into("#policy-ttl", "1h").await;
    browser
        .type_into("#policy-max_upstream_calls", "1/1h")
        .await;
    browser.type_into("#policy-tags", "llm, paid").await;
    browser.type_into("#policy-breaker-failures", "3").await;
    browser.type_into("#policy-breaker-window", "30s").await;
    browser.type_into("#policy-breaker-open_for", "1m").await;
    browser.click("#policy-save").await;
    browser.wait_text("[data-testid=policy-ok]", "Saved").await;
    let config = cacheow.function("/budgeted").await["config"].clone();
    assert_eq!(config["ttl"], "1h");
    assert_eq!(config["max_upstream_calls"], "1/1h");
    assert_eq!(config["tags"], json!(["llm", "paid"]));
    assert_eq!(
        config["circuit_breaker"],
        json!({"failures": 3, "window": "30s", "open_for": "1m"})
    );

    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.push(
            client
                .get(&url)
                .send()
                .await
                .expect("GET")
                .status()
                .as_u16(),
        );
    }
    assert_eq!(
        statuses,
        [200, 429],
        "the budget set in the page guards the upstream"
    );
    browser.wait_text("[data-testid=stat-budget]", "1").await;
    browser
        .wait_text("[data-testid=guard-budget_exceeded]", "over budget")
        .await;
    assert_eq!(
        cacheow.function("/budgeted").await["guards"],
        json!(["budget_exceeded"])
    );
    browser.goto("/ui/").await;
    browser
        .wait_text("[data-testid=guard-budget_exceeded]", "over budget")
        .await;
    browser.goto(&format!("/ui/functions/{id}")).await;

    browser.click("#policy-invalidate").await;
    let ok = browser.text("[data-testid=policy-ok]").await;
    assert!(ok.contains("stale"), "{ok}");
    cacheow_tests::eventually("the invalidation mark", || async {
        cacheow.function("/budgeted").await["config"]["invalidated"]["before"]
            .as_u64()
            .is_some_and(|before| before > 0)
    })
    .await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cacheow_started_with_a_token_gets_it_from_the_page_once() {
    let upstream = Upstream::echo().await;
    let cacheow = Cacheow::start(&["--token", "let-me-in"]);
    cacheow
        .proxied_client()
        .get(format!("{}/guarded", upstream.url()))
        .send()
        .await
        .expect("GET");

    let browser = Browser::open(&cacheow).await;
    browser.goto("/").await;
    let alert = browser
        .find("[data-testid=poll-error]")
        .await
        .text()
        .await
        .expect("text");
    assert!(alert.contains("HTTP 401"), "{alert}");
    browser.type_into("#api-token", "let-me-in").await;
    browser.click("[data-testid=token-form] button").await;
    browser.find("[data-testid=function-row]").await;
    assert_eq!(browser.count("[data-testid=token-form]").await, 0);
    // Kept for the tab: a deep link works without asking again.
    browser.goto("/ui/").await;
    browser.find("[data-testid=function-row]").await;
    assert_eq!(browser.count("[data-testid=token-form]").await, 0);
    browser.close().await;
}

// === whole pages ===

#[tokio::test(flavor = "multi_thread")]
async fn the_panel_loads_with_every_other_host_blocked() {
    let upstream = Upstream::echo().await;
    let cacheow = Cacheow::start(&[]);
    cacheow
        .proxied_client()
        .get(format!("{}/ping", upstream.url()))
        .send()
        .await
        .expect("GET");

    let browser = Browser::open(&cacheow).await;
    let started = Instant::now();
    browser.goto("/").await;
    browser.find("[data-testid=function-row]").await;
    let first_render = started.elapsed();
    assert_eq!(
        browser.count("#boot").await,
        0,
        "the boot message is still there"
    );

    let resources = browser
        .js("return performance.getEntriesByType('resource').map(e => [e.name, e.responseStatus, e.responseEnd])")
        .await;
    let resources = resources.as_array().expect("resource list");
    assert!(resources.len() >= 4, "{resources:?}");
    for entry in resources {
        let url = entry[0].as_str().unwrap_or_default();
        assert!(url.starts_with(&cacheow.url()), "the page loaded {url}");
        assert_eq!(entry[1], json!(200), "{url} failed: {entry}");
    }
    // Outside hosts are unreachable from the page (and the panel's CSP
    // forbids them anyway); the panel above rendered regardless.
    let outside = browser
        .client
        .execute_async(
            "const done = arguments[0]; fetch('http://example.com/').then(() => done('reached'), () => done('blocked'))",
            vec![],
        )
        .await
        .expect("script");
    assert_eq!(outside, json!("blocked"));

    // The table renders as soon as the first list arrives, so its arrival
    // (ms after navigation start, by the page's own clock) is the time to
    // first meaningful render; the WebDriver round trips add to the other.
    let list_arrived = resources
        .iter()
        .find(|e| e[0].as_str().is_some_and(|u| u.ends_with("/api/functions")))
        .and_then(|e| e[2].as_f64())
        .unwrap_or_default();
    eprintln!(
        "panel: first list of functions arrived {list_arrived:.0} ms after navigation start; \
         row seen through WebDriver after {} ms",
        first_render.as_millis(),
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn screenshots_of_both_pages_at_desktop_and_narrow_widths() {
    let body =
        json!({"id": 1, "name": "Ada Lovelace", "email": "ada@example.com", "roles": ["admin"]});
    let reply = body.clone();
    let upstream = Upstream::start(Arc::new(move |parts, _| {
        if parts.uri.path().starts_with("/users/") {
            json_reply(&reply)
        } else {
            json_reply(&json!({"ok": true, "path": parts.uri.path()}))
        }
    }))
    .await;
    let cacheow = Cacheow::start(&[]);
    let client = cacheow.proxied_client();
    for n in [1, 2, 1, 1] {
        client
            .get(format!("{}/users/{n}", upstream.url()))
            .header("authorization", "Bearer secret")
            .send()
            .await
            .expect("GET");
    }
    client
        .post(format!("{}/orders", upstream.url()))
        .body("{\"qty\":2}")
        .send()
        .await
        .expect("POST");
    client
        .get(format!("{}/health", upstream.url()))
        .send()
        .await
        .expect("GET");
    let users = id_of(&cacheow, "/users/").await;
    cacheow.set_mode(&users, "cache").await;
    client
        .get(format!("{}/users/1", upstream.url()))
        .send()
        .await
        .expect("GET");
    cacheow
        .post(
            &format!("/api/functions/{users}/outcomes/manual"),
            json!({"outcome_type": "exception", "exception_type": "timeout", "exception_message": "injected", "is_mock_only": true}),
        )
        .await;
    let orders = id_of(&cacheow, "/orders").await;
    cacheow.set_mode(&orders, "mock").await;
    let first = outcomes(&cacheow, &users)
        .await
        .into_iter()
        .find(|(_, preview)| preview.contains("Ada"))
        .expect("a recorded response")
        .0;

    let browser = Browser::open(&cacheow).await;
    for (label, size) in [("desktop", DESKTOP), ("narrow", NARROW)] {
        browser
            .client
            .set_window_size(size.0, size.1)
            .await
            .expect("resize");
        browser.goto("/").await;
        eventually("three rows", || async {
            browser.count("[data-testid=function-row]").await == 3
        })
        .await;
        assert_no_sideways_scroll(&browser, label).await;
        let shot = browser
            .screenshot(&format!("functions-{label}"), size)
            .await;
        eprintln!("screenshot: {}", shot.display());

        browser.goto(&format!("/ui/functions/{users}")).await;
        browser
            .click(&format!(
                "{} [data-testid=view-outcome]",
                outcome_row(&first)
            ))
            .await;
        browser
            .find("[data-testid=outcome-viewer] [data-testid=response-body]")
            .await;
        assert_no_sideways_scroll(&browser, label).await;
        let shot = browser.screenshot(&format!("function-{label}"), size).await;
        eprintln!("screenshot: {}", shot.display());
    }
    browser.close().await;

    // The same two pages with the system in dark mode.
    let dark = Browser::open_at(cacheow.url(), &["--force-dark-mode"]).await;
    assert_eq!(
        dark.js("return matchMedia('(prefers-color-scheme: dark)').matches")
            .await,
        json!(true)
    );
    dark.goto("/").await;
    eventually("three rows", || async {
        dark.count("[data-testid=function-row]").await == 3
    })
    .await;
    dark.screenshot("functions-dark", DESKTOP).await;
    dark.goto(&format!("/ui/functions/{users}")).await;
    dark.click(&format!(
        "{} [data-testid=view-outcome]",
        outcome_row(&first)
    ))
    .await;
    dark.find("[data-testid=outcome-viewer] [data-testid=response-body]")
        .await;
    dark.screenshot("function-dark", DESKTOP).await;
    dark.close().await;
}

/// Readable means no page-wide horizontal scrolling at this width.
async fn assert_no_sideways_scroll(browser: &Browser, label: &str) {
    let overflow = browser
        .js("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        .await;
    assert_eq!(
        overflow,
        json!(0),
        "{label}: the page scrolls sideways by {overflow} px"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_functions_recorded_by_the_library_are_listed_with_their_outcomes() {
    let data_dir = tempfile::tempdir().expect("data dir");
    let output = Command::new(cacheow_tests::complete_example_bin())
        .env("CACHEOW_ENABLE", "1")
        .env("CACHEOW_DATA_DIR", data_dir.path())
        .env("CACHEOW_START_SERVER", "0")
        .output()
        .expect("running the complete example");
    assert!(output.status.success(), "{output:?}");
    let cacheow = Cacheow::start_on(data_dir, &[]);
    let compute = id_of(&cacheow, "complete::expensive_computation").await;
    let forecast = id_of(&cacheow, "complete::fetch_forecast").await;

    let browser = Browser::open(&cacheow).await;
    browser.goto("/").await;
    for (id, name) in [
        (&compute, "complete::expensive_computation"),
        (&forecast, "complete::fetch_forecast"),
    ] {
        let row = function_row(id);
        browser.find(&row).await;
        let label = browser.text(&format!("{row} .fn-name")).await;
        assert!(label.contains(name), "{label}");
    }
    browser.goto(&format!("/ui/functions/{forecast}")).await;
    browser.find("[data-testid=outcome-row]").await;
    eventually("both outcomes are listed", || async {
        browser.count("[data-testid=outcome-row]").await == 2
    })
    .await;
    let table = browser.text("[data-testid=outcomes-table]").await;
    assert!(table.contains("no forecast for Atlantis"), "{table}");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_error_added_in_the_in_process_panel_replays_as_the_functions_err() {
    let data_dir = tempfile::tempdir().expect("data dir");
    let mut program = Wrapped::start(env!("CARGO_BIN_EXE_wrapped"), data_dir.path());
    let url = program.url.clone().expect("the in-process panel");
    assert_eq!(program.quote("ACME").1, 1);
    let list: Value = reqwest::get(format!("{url}/api/functions"))
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    let id = list[0]["id"].as_str().expect("id").to_owned();

    let browser = Browser::open_at(url.clone(), &[]).await;
    browser.goto(&format!("/ui/functions/{id}")).await;
    // Internal: the header fills in once /api/info answers.
    eventually("the header says the panel runs in process", || async {
        browser
            .text("[data-testid=proxy-info]")
            .await
            .starts_with("in process")
    })
    .await;
    // An error the function's error type has no variant for is refused.
    browser.click("#manual-kind-failure").await;
    browser.type_into("#manual-error-type", "Exploded").await;
    browser.type_into("#manual-message", "boom").await;
    browser.click("#manual-submit").await;
    let refused = browser.find("[data-testid=manual-error]").await;
    let refused = refused.text().await.expect("text");
    assert!(refused.contains("cannot build the error type"), "{refused}");
    // One it has, with the message as its data.
    browser
        .type_into("#manual-error-type", "UnknownSymbol")
        .await;
    browser.type_into("#manual-message", "XYZ").await;
    browser.click("#manual-submit").await;
    browser.find("[data-testid=manual-ok]").await;
    browser.select("#function-mode", "mock").await;
    eventually("the outcome is the only enabled mock", || async {
        let detail: Value = reqwest::get(format!("{url}/api/functions/{id}"))
            .await
            .expect("GET")
            .json()
            .await
            .expect("JSON");
        detail["mode"] == "mock" && detail["outcome_count"] == 2
    })
    .await;
    let replies: Vec<_> = (0..20).map(|_| program.quote("NEW").0).collect();
    assert!(
        replies.contains(&json!({"Err": {"UnknownSymbol": "XYZ"}})),
        "{replies:?}"
    );
    browser.close().await;
    program.finish();
}
