//! A real browser for end-to-end tests: Debian's ChromeDriver driving
//! headless Chromium over WebDriver (the `fantoccini` client), against a
//! Herald started by the same harness as every other e2e test.
//!
//! The tests are `#[ignore]`d, so that `cargo test --workspace` passes on a
//! machine without Chromium; `.ci/run` installs `chromium` and
//! `chromium-driver` and runs them with
//! `cargo test --test e2e browser -- --ignored --test-threads=1`. Where
//! either program is missing they fail, saying how to install it.
//!
//! A scenario reads like what a person does: [`Browser::goto`] a page,
//! [`Browser::click_text`] a link or button by its visible text,
//! [`Browser::fill_labelled`] a field by its label, [`Browser::wait_for_text`]
//! what should appear, [`Browser::screenshot`] each page. Every wait has the
//! same deadline ([`DEADLINE`]); a wait that runs out fails the test with the
//! page's address and text, and leaves a screenshot named `failure`.
//! Screenshots land in `target/browser-screenshots/<test>/NN-<name>.png`
//! (under `CARGO_TARGET_DIR` when set).

#![allow(
    dead_code,
    reason = "helpers for the scenarios to come, like common.rs"
)]

mod portal;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fantoccini::cookies::Cookie;
use fantoccini::elements::Element;
use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value as Json, json};
use tokio::time::Instant;

/// How long any wait in a scenario may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A desktop window (width, height) in CSS pixels: the size a browser starts at.
pub const DESKTOP: (u32, u32) = (1280, 900);

/// A phone's window (width, height) in CSS pixels.
pub const PHONE: (u32, u32) = (390, 844);

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const INSTALL: &str = "DEBIAN_FRONTEND=noninteractive apt-get install -y \
                       --no-install-recommends chromium chromium-driver";

/// Headless Chromium with nothing that reaches the network by itself (the
/// machines have no internet) and nothing kept between runs.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
];

/// One browser for one test: its own ChromeDriver, Chromium and profile.
/// [`Browser::close`] ends the session; dropping it (a failed test) kills
/// ChromeDriver and the browser it started.
pub struct Browser {
    client: Client,
    screenshots: PathBuf,
    taken: AtomicUsize,
    // Dropped after the client: the browser's processes, then its profile.
    driver: ChromeDriver,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium at [`DESKTOP`] size; `test` names the folder its
    /// screenshots go to (emptied first).
    pub async fn start(test: &str) -> Browser {
        Browser::start_with(test, &[]).await
    }

    /// Starts Chromium as the reader's system asks for dark pages
    /// (`prefers-color-scheme: dark`).
    pub async fn start_dark(test: &str) -> Browser {
        Browser::start_with(
            test,
            &[
                "--force-dark-mode",
                "--blink-settings=preferredColorScheme=0",
            ],
        )
        .await
    }

    /// Starts Chromium with `extra` flags besides the usual ones.
    async fn start_with(test: &str, extra: &[&str]) -> Browser {
        for program in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(program).exists(),
                "{program} is missing: the browser tests need Debian's chromium and \
                 chromium-driver. Install them with `{INSTALL}` (the browser step of .ci/run does)."
            );
        }
        let profile = tempfile::tempdir().expect("a temp dir for the browser profile");
        let driver = ChromeDriver::start().await;
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|&flag| flag.into()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.push(format!("--window-size={},{}", DESKTOP.0, DESKTOP.1));
        args.extend(extra.iter().map(|&flag| flag.to_owned()));
        let capabilities: Capabilities = match json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
            "goog:loggingPrefs": { "browser": "ALL" },
        }) {
            Json::Object(map) => map,
            _ => unreachable!("an object"),
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url)
            .await
            .unwrap_or_else(|err| panic!("ChromeDriver could not start {CHROMIUM}: {err}"));
        let screenshots = target_dir().join("browser-screenshots").join(test);
        if screenshots.exists() {
            std::fs::remove_dir_all(&screenshots).expect("empty the screenshot folder");
        }
        std::fs::create_dir_all(&screenshots).expect("create the screenshot folder");
        let browser = Browser {
            client,
            screenshots,
            taken: AtomicUsize::new(0),
            driver,
            _profile: profile,
        };
        browser.resize(DESKTOP).await;
        browser
    }

    /// The WebDriver client, for what these helpers do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Opens `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|err| panic!("open {url}: {err}"));
    }

    /// The address in the address bar.
    pub async fn url(&self) -> url::Url {
        self.client.current_url().await.expect("the current URL")
    }

    /// Waits until the address's path is `path`.
    pub async fn wait_for_path(&self, path: &str) {
        let deadline = Deadline::start();
        while self.url().await.path() != path {
            deadline
                .tick(self, &format!("the address to be {path}"))
                .await;
        }
    }

    /// Resizes the window to (width, height) CSS pixels.
    pub async fn resize(&self, (width, height): (u32, u32)) {
        self.client
            .set_window_size(width, height)
            .await
            .unwrap_or_else(|err| panic!("resize the window to {width}x{height}: {err}"));
    }

    /// The page's width as its layout sees it (`window.innerWidth`).
    pub async fn inner_width(&self) -> u64 {
        self.script("return window.innerWidth")
            .await
            .as_u64()
            .expect("a width")
    }

    /// The elements whose box or content reaches past the window's right
    /// edge (tag, class, where they end, the start of their text), widest
    /// first: empty when the page needs no sideways scrolling.
    pub async fn wider_than_window(&self) -> Vec<String> {
        let found = self
            .script(
                "const width = document.documentElement.clientWidth;
                 return [...document.body.querySelectorAll('*')]
                   .map(e => {
                     const box = e.getBoundingClientRect();
                     return [e, Math.ceil(Math.max(box.right, box.left + e.scrollWidth))];
                   })
                   .filter(([, right]) => right > width)
                   .sort((a, b) => b[1] - a[1])
                   .map(([e, right]) => `<${e.localName}${e.className ? '.' + e.className : ''}>`
                     + ` to ${right}px of ${width}: ${e.textContent.trim().slice(0, 40)}`);",
            )
            .await;
        found
            .as_array()
            .expect("a list")
            .iter()
            .map(|line| line.as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Fails if the page needs sideways scrolling at the window's width.
    pub async fn assert_fits_width(&self) {
        let wider = self.wider_than_window().await;
        if !wider.is_empty() {
            let shot = self.screenshot("too-wide").await;
            panic!(
                "{} is wider than the window (see {}): {wider:#?}",
                self.url().await,
                shot.display()
            );
        }
    }

    /// Waits for an element matching the CSS selector `css`, and returns the first.
    pub async fn find(&self, css: &str) -> Element {
        self.wait_for_element(Locator::Css(css), &format!("an element {css}"))
            .await
    }

    /// Every element matching `css` now (no wait).
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        self.client
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_else(|err| panic!("find {css}: {err}"))
    }

    /// Clicks the first element matching `css`, once there.
    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        element
            .click()
            .await
            .unwrap_or_else(|err| panic!("click {css}: {err}"));
    }

    /// Clicks the link, button, disclosure (`summary`) or label whose
    /// visible text is `text` (spaces collapsed), once there.
    pub async fn click_text(&self, text: &str) {
        let literal = xpath_literal(text);
        let xpath = format!(
            "//*[self::a or self::button or self::summary or self::label]\
             [normalize-space(.)={literal}] | \
             //input[@type='submit' or @type='button'][@value={literal}]"
        );
        let element = self
            .wait_for_element(
                Locator::XPath(&xpath),
                &format!("a link or button {text:?}"),
            )
            .await;
        element
            .click()
            .await
            .unwrap_or_else(|err| panic!("click {text:?}: {err}"));
    }

    /// Replaces the value of the input or text area matching `css` with `text`.
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        type_into(&field, text, css).await;
    }

    /// Replaces the value of the field whose `<label>` reads `label` (by
    /// `for=` or wrapped in it; a label's own text before any markup in it
    /// counts) with `text`.
    pub async fn fill_labelled(&self, label: &str, text: &str) {
        let field = self.labelled(label).await;
        type_into(&field, text, label).await;
    }

    /// Chooses the option shown as `option` in the `<select>` matching `css`.
    pub async fn select(&self, css: &str, option: &str) {
        let select = self.find(css).await;
        select
            .select_by_label(option)
            .await
            .unwrap_or_else(|err| panic!("choose {option:?} in {css}: {err}"));
    }

    /// Chooses the option shown as `option` in the `<select>` labelled `label`.
    pub async fn select_labelled(&self, label: &str, option: &str) {
        let select = self.labelled(label).await;
        select
            .select_by_label(option)
            .await
            .unwrap_or_else(|err| panic!("choose {option:?} in {label:?}: {err}"));
    }

    /// The field (input, select, text area) labelled `label`, once there.
    pub async fn labelled(&self, label: &str) -> Element {
        let literal = xpath_literal(label);
        let fields = "self::input or self::select or self::textarea";
        // The whole label, or its own text before any markup in it
        // (`URL <small>(webhooks only)</small>` reads as "URL").
        let label =
            format!("label[normalize-space(.)={literal} or normalize-space(text())={literal}]");
        let xpath = format!("//*[{fields}][@id=//{label}/@for] | //{label}//*[{fields}]");
        self.wait_for_element(
            Locator::XPath(&xpath),
            &format!("a field labelled {label:?}"),
        )
        .await
    }

    /// The rendered text of the first element matching `css`, once there
    /// (empty while it is hidden, e.g. inside a closed `<details>`).
    pub async fn text_of(&self, css: &str) -> String {
        let element = self.find(css).await;
        element
            .text()
            .await
            .unwrap_or_else(|err| panic!("the text of {css}: {err}"))
    }

    /// Waits until an element matching `css` shows `text` (as part of its
    /// rendered text), and returns that element's whole text.
    pub async fn wait_for_text(&self, css: &str, text: &str) -> String {
        let deadline = Deadline::start();
        loop {
            for element in self
                .client
                .find_all(Locator::Css(css))
                .await
                .unwrap_or_default()
            {
                if let Ok(shown) = element.text().await
                    && shown.contains(text)
                {
                    return shown;
                }
            }
            deadline
                .tick(self, &format!("{css} to show {text:?}"))
                .await;
        }
    }

    /// The page's rendered text (what a reader sees; not hidden elements).
    pub async fn page_text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Whether the first element matching `css` is shown, once it exists.
    pub async fn is_visible(&self, css: &str) -> bool {
        let element = self.find(css).await;
        element
            .is_displayed()
            .await
            .unwrap_or_else(|err| panic!("whether {css} is shown: {err}"))
    }

    /// Runs `script` as a function body in the page and returns its result.
    pub async fn script(&self, script: &str) -> Json {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|err| panic!("run {script:?}: {err}"))
    }

    /// The cookie `name` of the current page's site, as the browser keeps it
    /// (with its HttpOnly, Secure and SameSite flags).
    pub async fn cookie(&self, name: &str) -> Option<Cookie<'static>> {
        self.client
            .get_all_cookies()
            .await
            .expect("the page's cookies")
            .into_iter()
            .find(|cookie| cookie.name() == name)
    }

    /// Saves what the window shows as `NN-<name>.png` and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        let number = self.taken.fetch_add(1, Ordering::Relaxed) + 1;
        let path = self.screenshots.join(format!("{number:02}-{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
        println!("screenshot: {}", path.display());
        path
    }

    /// The browser console's entries since the last call (level and
    /// message; CSP violations and failed loads are `SEVERE`), through
    /// ChromeDriver's log endpoint.
    pub async fn console(&self) -> Vec<(String, String)> {
        let answer = self
            .client
            .issue_cmd(BrowserLog)
            .await
            .unwrap_or_else(|err| panic!("ChromeDriver's browser log: {err}"));
        answer
            .as_array()
            .expect("a list of log entries")
            .iter()
            .map(|entry| {
                let field = |name: &str| entry[name].as_str().unwrap_or_default().to_owned();
                (field("level"), field("message"))
            })
            .collect()
    }

    /// Fails if the console has shown an error since the last look. The
    /// one error not counted: Chromium asks every site for `/favicon.ico`
    /// by itself, and a site without one answers 404.
    pub async fn assert_no_console_errors(&self) {
        let errors: Vec<String> = self
            .console()
            .await
            .into_iter()
            .filter(|(level, message)| {
                level == "SEVERE"
                    && !(message.contains("/favicon.ico ") && message.contains("status of 404"))
            })
            .map(|(_, message)| message)
            .collect();
        assert!(
            errors.is_empty(),
            "the browser console shows errors on {}: {errors:#?}",
            self.url().await
        );
    }

    /// Waits until the console shows an entry containing `needle`, and
    /// returns it (entries before it are passed over).
    pub async fn wait_for_console(&self, needle: &str) -> String {
        let deadline = Deadline::start();
        loop {
            if let Some((_, message)) = self
                .console()
                .await
                .into_iter()
                .find(|(_, message)| message.contains(needle))
            {
                return message;
            }
            deadline
                .tick(self, &format!("the console to show {needle:?}"))
                .await;
        }
    }

    /// Ends the session: Chromium quits, then ChromeDriver is stopped.
    pub async fn close(self) {
        let Browser { client, driver, .. } = self;
        if let Err(err) = client.close().await {
            eprintln!("closing the browser session: {err}");
        }
        drop(driver);
    }

    async fn wait_for_element(&self, locator: Locator<'_>, what: &str) -> Element {
        let deadline = Deadline::start();
        loop {
            if let Ok(element) = self.client.find(locator).await {
                return element;
            }
            deadline.tick(self, what).await;
        }
    }
}

async fn type_into(field: &Element, text: &str, what: &str) {
    field
        .clear()
        .await
        .unwrap_or_else(|err| panic!("clear {what}: {err}"));
    field
        .send_keys(text)
        .await
        .unwrap_or_else(|err| panic!("type into {what}: {err}"));
}

/// When a wait started; [`Deadline::tick`] pauses between two looks, and
/// fails the test once [`DEADLINE`] has passed.
struct Deadline(Instant);

impl Deadline {
    fn start() -> Deadline {
        Deadline(Instant::now())
    }

    async fn tick(&self, browser: &Browser, what: &str) {
        if self.0.elapsed() < DEADLINE {
            tokio::time::sleep(Duration::from_millis(50)).await;
            return;
        }
        let url = browser.url().await;
        let text = browser.page_text().await;
        let shot = browser.screenshot("failure").await;
        panic!(
            "waited {DEADLINE:?} for {what}; the page at {url} (see {}) reads:\n{text}",
            shot.display()
        );
    }
}

/// `text` as an XPath string literal (XPath 1 has no escapes: quotes that
/// appear in it are joined with `concat`).
fn xpath_literal(text: &str) -> String {
    if !text.contains('\'') {
        format!("'{text}'")
    } else if !text.contains('"') {
        format!("\"{text}\"")
    } else {
        let parts: Vec<String> = text.split('\'').map(|part| format!("'{part}'")).collect();
        format!("concat({})", parts.join(", \"'\", "))
    }
}

/// Where cargo builds: `CARGO_TARGET_DIR`, or `target` in the workspace.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// ChromeDriver's `POST /session/{id}/se/log` for the `browser` log (the
/// console), which the W3C protocol lacks and fantoccini has no call for.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({ "type": "browser" }).to_string()),
        )
    }
}

/// `chromedriver --port=0` in a process group of its own, so that killing
/// the group also ends the Chromium it started, whatever state it is in.
struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    /// Starts it, learns its port from what it prints, and waits until its
    /// `/status` says it is ready.
    async fn start() -> ChromeDriver {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(CHROMEDRIVER)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|err| panic!("start {CHROMEDRIVER}: {err}"));
        let stdout = child.stdout.take().expect("stdout piped");
        // Its banner is kept to explain a failed start; later lines are shown.
        let (found, port) = std::sync::mpsc::channel::<Result<u16, String>>();
        std::thread::spawn(move || {
            let mut banner = Some((found, Vec::new()));
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                match (banner.take(), started_on_port(&line)) {
                    (Some((found, _)), Some(port)) => {
                        let _ = found.send(Ok(port));
                    }
                    (Some((found, mut said)), None) => {
                        said.push(line);
                        banner = Some((found, said));
                    }
                    (None, _) => eprintln!("chromedriver: {line}"),
                }
            }
            if let Some((found, said)) = banner {
                let _ = found.send(Err(said.join("\n")));
            }
        });
        let mut driver = ChromeDriver {
            child,
            url: String::new(),
        };
        let port = match tokio::task::spawn_blocking(move || port.recv_timeout(DEADLINE))
            .await
            .expect("the wait for ChromeDriver's port")
        {
            Ok(Ok(port)) => port,
            Ok(Err(said)) => panic!("{CHROMEDRIVER} stopped before it served:\n{said}"),
            Err(_) => panic!("{CHROMEDRIVER} did not say which port it serves within {DEADLINE:?}"),
        };
        driver.url = format!("http://127.0.0.1:{port}");
        let status = format!("{}/status", driver.url);
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            let ready = match http.get(&status).send().await {
                Ok(response) => response.text().await.is_ok_and(|answer| {
                    serde_json::from_str::<Json>(&answer)
                        .is_ok_and(|answer| answer["value"]["ready"] == json!(true))
                }),
                Err(_) => false,
            };
            if ready {
                return driver;
            }
            if let Ok(Some(exit)) = driver.child.try_wait() {
                panic!("{CHROMEDRIVER} exited before it was ready: {exit}");
            }
            assert!(
                started.elapsed() < DEADLINE,
                "{status} did not say ready within {DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let group = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        let _ = self.child.wait();
    }
}

/// The port of ChromeDriver's "ChromeDriver was started successfully on port N." line.
fn started_on_port(line: &str) -> Option<u16> {
    line.split_once("started successfully on port ")?
        .1
        .trim_end_matches('.')
        .trim()
        .parse()
        .ok()
}
