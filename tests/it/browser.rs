//! The login as a streamer does it, in a real headless Chromium driven over WebDriver:
//! the landing page's «Вход» link, the fake Twitch consent page, the redirect back to the
//! dashboard, and the logout. Unlike the reqwest-based login tests, this proves that a real
//! browser's cookie rules (SameSite, a redirect after a cross-origin POST), its headers
//! (the Origin a form POST carries, which the logout's same-site check reads), the
//! Content-Security-Policy (stylesheet, avatar from the fake's origin) and the forms work
//! together. A screenshot of the dashboard is kept in `test-artifacts/` for a person to
//! look at.

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use avatar_tests::{LocalServer, free_port};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long any one step (a process starting, a page or element appearing) may take.
const STEP: Duration = Duration::from_secs(20);

/// Panics with the way to get the browser when it is not installed.
fn require_browser() {
    for path in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: run scripts/test.sh, which installs chromium and chromium-driver"
        );
    }
}

/// A chromedriver on a free loopback port. It runs in a process group of its own so that
/// dropping it also kills the Chromium it started, even when the test failed before the
/// WebDriver session was closed.
struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    async fn start() -> Self {
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{CHROMEDRIVER} does not start ({e}): run scripts/test.sh"));
        let mut driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        driver.wait_until_ready().await;
        driver
    }

    /// Polls `/status` until it reports `ready`.
    async fn wait_until_ready(&mut self) {
        let http = reqwest::Client::builder()
            .timeout(STEP)
            .build()
            .expect("http client");
        let end = Instant::now() + STEP;
        loop {
            if let Ok(response) = http.get(format!("{}/status", self.url)).send().await
                && let Ok(status) = response.json::<serde_json::Value>().await
                && status["value"]["ready"] == true
            {
                return;
            }
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!("chromedriver exited before it was ready: {exit}");
            }
            assert!(
                Instant::now() < end,
                "chromedriver at {} was not ready within {STEP:?}",
                self.url
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group we created; it may already be gone.
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// A WebDriver session on a headless Chromium with its own empty profile in `profile`.
async fn open_browser(driver: &ChromeDriver, profile: &Path) -> Client {
    let capabilities = serde_json::json!({
        "browserName": "chrome",
        "timeouts": { "pageLoad": STEP.as_millis() as u64, "script": STEP.as_millis() as u64 },
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless=new",
                // Root in a container: Chromium's sandbox cannot start.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                // The machine's network is closed: no background connections to Google.
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1024,768",
                format!("--user-data-dir={}", profile.display()),
            ],
            // The pages speak Russian to browsers that ask for it, as a streamer's does.
            "prefs": { "intl.accept_languages": "ru-RU,ru" },
        },
    });
    let serde_json::Value::Object(capabilities) = capabilities else {
        unreachable!("a JSON object")
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("no WebDriver session with {CHROMIUM}: {e}"))
}

/// Where the dashboard screenshot is kept (`test-artifacts/` is ignored by git).
fn artifact(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("create test-artifacts/");
    dir.join(name)
}

/// Waits up to [`STEP`] for the element with `id`; on timeout the panic shows where the
/// browser is and what it shows.
async fn wait_for_id(client: &Client, id: &str, what: &str) -> Element {
    match client
        .wait()
        .at_most(STEP)
        .for_element(Locator::Id(id))
        .await
    {
        Ok(element) => element,
        Err(e) => {
            let url = client.current_url().await.map(|u| u.to_string());
            let source = client.source().await.unwrap_or_default();
            panic!("{what}: no #{id} ({e}) at {url:?}; the page:\n{source}");
        }
    }
}

/// An `avatar-local --demo` on free ports; returns it with the fake DonationAlerts' port.
async fn demo_server(vars: &[(String, String)]) -> (LocalServer, u16) {
    let donationalerts_port = free_port();
    let demo_ports = format!("{},{donationalerts_port}", free_port());
    let server = LocalServer::start(
        &["--demo", "--port", "0", "--demo-ports", &demo_ports],
        vars,
        "info",
    )
    .await;
    (server, donationalerts_port)
}

/// The landing page's «Вход», then Authorize on the fake Twitch's consent page: ends on the
/// dashboard, logged in.
async fn log_in_by_clicking(client: &Client, base: &str) {
    client
        .goto(&format!("{base}/"))
        .await
        .expect("landing page");
    let login = wait_for_id(client, "login", "the landing page").await;
    assert_eq!(login.text().await.unwrap(), "Вход");
    login.click().await.expect("click «Вход»");

    let authorize = wait_for_id(client, "authorize", "the consent page's Authorize button").await;
    let consent_url = client.current_url().await.unwrap();
    assert_eq!(consent_url.host_str(), Some("127.0.0.1"), "{consent_url}");
    assert_eq!(consent_url.path(), "/oauth2/authorize");
    authorize.click().await.expect("click Authorize");

    let name = wait_for_id(client, "display-name", "the dashboard").await;
    assert_eq!(name.text().await.unwrap(), "Demo Streamer");
}

#[tokio::test]
async fn a_streamer_logs_in_by_clicking_through_a_real_headless_chromium() {
    // Arrange. Declared in this order so that drops run in reverse: the browser process
    // group dies before its profile directory is removed.
    require_browser();
    let profile = tempfile::tempdir().expect("browser profile dir");
    let (server, _) = demo_server(&[]).await;
    let driver = ChromeDriver::start().await;
    let client = open_browser(&driver, profile.path()).await;
    // The app's public URL (cookies, the OAuth redirect) is on localhost, not 127.0.0.1.
    let base = server.base.clone();

    // Act: the landing page, «Вход», the fake Twitch's consent page.
    log_in_by_clicking(&client, &base).await;

    // Assert: back on the app's dashboard, logged in.
    let dashboard_url = client.current_url().await.unwrap();
    assert_eq!(
        dashboard_url.host_str(),
        Some("localhost"),
        "{dashboard_url}"
    );
    assert_eq!(dashboard_url.path(), "/success");
    // The avatar came from the fake's origin, which the CSP allows.
    let avatar = client.find(Locator::Css("img.avatar")).await.unwrap();
    // WebDriver's property command only returns strings; a script reads the number.
    let width = client
        .execute(
            "return arguments[0].complete ? arguments[0].naturalWidth : 0",
            vec![serde_json::to_value(&avatar).unwrap()],
        )
        .await
        .unwrap();
    let width = width.as_u64().unwrap_or(0);
    assert!(width > 0, "the avatar image did not load");
    // The stylesheet applied: the logout button is Twitch purple, not a grey default.
    let logout = client.find(Locator::Id("logout")).await.unwrap();
    assert_eq!(
        logout.css_value("background-color").await.unwrap(),
        "rgba(145, 70, 255, 1)"
    );

    let png = client.screenshot().await.expect("screenshot");
    let path = artifact("browser-login-dashboard.png");
    std::fs::write(&path, &png).expect("save the screenshot");
    let mut magic = [0u8; 8];
    std::fs::File::open(&path)
        .and_then(|mut file| file.read_exact(&mut magic))
        .expect("read the screenshot back");
    assert_eq!(&magic, b"\x89PNG\r\n\x1a\n", "{} is a PNG", path.display());
    assert!(
        png.len() > 10_000,
        "a near-empty screenshot: {} bytes",
        png.len()
    );

    // Act: log out.
    logout.click().await.expect("click logout");

    // Assert: the landing page with «Вход» again.
    let login = wait_for_id(&client, "login", "the landing page after logout").await;
    assert_eq!(login.text().await.unwrap(), "Вход");
    assert_eq!(client.current_url().await.unwrap().path(), "/");

    client.close().await.expect("end the WebDriver session");
}

/// Where a donation's text and amount are drawn in a row of the dashboard: the donor name's
/// box, and the box of the amount's own characters (found by text, whatever the markup).
const DONATION_LAYOUT: &str = r#"
const [row, donor, amount] = arguments;
const texts = [];
const walker = document.createTreeWalker(row, NodeFilter.SHOW_TEXT);
for (let node = walker.nextNode(); node; node = walker.nextNode()) texts.push(node);
const box = (text) => {
  const node = texts.find((n) => n.data.includes(text));
  const range = document.createRange();
  range.setStart(node, node.data.indexOf(text));
  range.setEnd(node, node.data.indexOf(text) + text.length);
  return { node, rect: range.getBoundingClientRect() };
};
const d = box(donor);
const a = box(amount);
return {
  donorRight: d.rect.right,
  amountLeft: a.rect.left,
  donorBidi: getComputedStyle(d.node.parentElement).unicodeBidi,
  amountBidi: getComputedStyle(a.node.parentElement).unicodeBidi,
  amountTag: a.node.parentElement.tagName,
};
"#;

#[tokio::test]
async fn a_donors_right_to_left_override_cannot_move_the_amount_beside_it() {
    // Arrange: logged in and DonationAlerts connected by clicking, in a real Chromium
    require_browser();
    let profile = tempfile::tempdir().expect("browser profile dir");
    let (server, donationalerts_port) =
        demo_server(&[("DA_POLL_INTERVAL_MS".into(), "300".into())]).await;
    let driver = ChromeDriver::start().await;
    let client = open_browser(&driver, profile.path()).await;
    let base = server.base.clone();
    log_in_by_clicking(&client, &base).await;
    let connect = wait_for_id(&client, "donationalerts-connect", "the dashboard").await;
    connect.click().await.expect("click connect");
    let authorize = wait_for_id(&client, "authorize", "DonationAlerts' consent page").await;
    authorize.click().await.expect("click Authorize");
    wait_for_id(&client, "no-donations", "the dashboard, connected").await;

    // Act: a donor whose name starts with U+202E RIGHT-TO-LEFT OVERRIDE, which reverses
    // the text after it until something ends or isolates it
    let donated = avatar_tests::donate_at_fake(
        donationalerts_port,
        serde_json::json!({"username": "\u{202E}evil", "message": "hi",
                           "amount": 987, "currency": "RUB"}),
    )
    .await;
    assert_eq!(donated, 201);
    let end = Instant::now() + STEP * 2;
    let row = loop {
        client
            .goto(&format!("{base}/success"))
            .await
            .expect("dashboard");
        if let Ok(row) = client.find(Locator::Css("#donations li")).await {
            break row;
        }
        assert!(
            Instant::now() < end,
            "the donation never reached the dashboard"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // Assert: the amount is drawn after (right of) the donor's name, as in any other row;
    // with the override leaking out of the name it would be drawn reversed, left of it.
    let layout = client
        .execute(
            DONATION_LAYOUT,
            vec![
                serde_json::to_value(&row).unwrap(),
                "evil".into(),
                "987".into(),
            ],
        )
        .await
        .expect("the layout script runs");
    let number = |key: &str| {
        layout[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} in {layout}"))
    };
    assert!(
        number("amountLeft") >= number("donorRight"),
        "the amount is drawn left of the donor's name: {layout}"
    );
    // Each piece of donor text, and the amount, sit in isolates of their own.
    assert_eq!(layout["donorBidi"], "isolate", "{layout}");
    assert_eq!(layout["amountBidi"], "isolate", "{layout}");
    assert_eq!(layout["amountTag"], "BDI", "{layout}");

    client.close().await.expect("end the WebDriver session");
}
