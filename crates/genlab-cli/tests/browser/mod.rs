//! Opens a page in headless Chromium (Debian's `chromium` package) over the
//! Chrome DevTools Protocol and reports every console error, uncaught
//! exception and failed resource load, with screenshots.
//!
//! A small client over `tungstenite` rather than the `headless_chrome`
//! crate: that crate's build script downloads the protocol definition, which
//! cannot work on our offline machines.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// The Chromium binary: `$GENLAB_CHROMIUM`, else the first of Debian's names on PATH.
pub fn chromium() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("GENLAB_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// What a page load showed.
#[derive(Debug, Default)]
pub struct PageReport {
    /// Console errors, exceptions and failed loads, one line each.
    pub problems: Vec<String>,
    /// `<img>` elements on the page, and those that did not decode.
    pub images: usize,
    pub broken_images: Vec<String>,
    /// Pixels the page is wider than the viewport, at desktop and phone width.
    pub overflow_desktop: i64,
    pub overflow_phone: i64,
    /// Digit grids (`img.px`) whose computed `image-rendering` is not `pixelated`.
    pub blurry_grids: usize,
}

struct Browser {
    child: Child,
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    events: Vec<Value>,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn launch(binary: &Path) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        // The flags keep Chromium from reaching for a network this machine does not have.
        let mut child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("Chromium did not print its DevTools address within 60 s");
        let (socket, _) = tungstenite::connect(url.as_str()).expect("connect to DevTools");
        if let MaybeTlsStream::Plain(s) = socket.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        }
        let mut browser = Browser {
            child,
            socket,
            session: String::new(),
            next_id: 0,
            events: Vec::new(),
            _profile: profile,
        };
        let target = browser.call("Target.createTarget", json!({"url": "about:blank"}));
        let attached = browser.call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        browser.session = attached["sessionId"].as_str().unwrap().to_string();
        browser
    }

    fn read(&mut self) -> Value {
        loop {
            match self.socket.read().expect("DevTools connection") {
                Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
                Message::Close(_) => panic!("Chromium closed the DevTools connection"),
                _ => continue,
            }
        }
    }

    /// Sends a command to the page (or to the browser before a page is attached) and waits for its answer.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.socket
            .send(Message::Text(msg.to_string().into()))
            .unwrap();
        loop {
            let reply = self.read();
            if reply["id"].as_u64() == Some(id) {
                assert!(
                    reply["error"].is_null(),
                    "{method} failed: {}",
                    reply["error"]
                );
                return reply["result"].clone();
            }
            if reply["method"].is_string() {
                self.events.push(reply);
            }
        }
    }

    fn wait_for_event(&mut self, method: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.events.iter().any(|e| e["method"] == method) {
            assert!(Instant::now() < deadline, "no {method} within {timeout:?}");
            let event = self.read();
            if event["method"].is_string() {
                self.events.push(event);
            }
        }
    }

    fn evaluate(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(
            r["exceptionDetails"].is_null(),
            "{expression}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        );
    }

    fn screenshot(&mut self, params: Value) -> Vec<u8> {
        let shot = self.call("Page.captureScreenshot", params);
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap()
    }
}

/// The problems the browser reported in `events`.
fn problems(events: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for e in events {
        let p = &e["params"];
        match e["method"].as_str().unwrap_or("") {
            "Runtime.consoleAPICalled"
                if matches!(p["type"].as_str(), Some("error") | Some("assert")) =>
            {
                out.push(format!("console.{}: {}", p["type"], p["args"]))
            }
            "Runtime.exceptionThrown" => out.push(format!(
                "uncaught exception: {}",
                p["exceptionDetails"]["exception"]["description"]
            )),
            "Log.entryAdded" if p["entry"]["level"] == "error" => out.push(format!(
                "console: {} ({})",
                p["entry"]["text"], p["entry"]["url"]
            )),
            "Network.loadingFailed" => out.push(format!(
                "failed load: {} ({})",
                p["errorText"], p["requestId"]
            )),
            "Network.responseReceived"
                if p["response"]["status"].as_i64().is_some_and(|s| s >= 400) =>
            {
                out.push(format!(
                    "HTTP {} for {}",
                    p["response"]["status"], p["response"]["url"]
                ))
            }
            _ => {}
        }
    }
    out
}

const IMAGE_CHECK: &str = r#"JSON.stringify({
  images: document.images.length,
  broken: Array.from(document.images)
    .filter(i => !(i.complete && i.naturalWidth > 0))
    .map(i => i.getAttribute('src')),
  overflow: document.documentElement.scrollWidth - window.innerWidth,
  blurry: Array.from(document.querySelectorAll('img.px'))
    .filter(i => getComputedStyle(i).imageRendering !== 'pixelated').length
})"#;

/// Loads `url`, checks it at desktop and phone width, and writes a screenshot
/// of the first screen to `screenshot` and of the whole page to `full_page`.
pub fn check_page(
    binary: &Path,
    url: &str,
    screenshot: &Path,
    full_page: Option<&Path>,
) -> PageReport {
    let mut b = Browser::launch(binary);
    for domain in ["Runtime", "Log", "Network", "Page"] {
        b.call(&format!("{domain}.enable"), json!({}));
    }
    b.viewport(1280, 1000, false);
    let nav = b.call("Page.navigate", json!({"url": url}));
    if let Some(error) = nav["errorText"].as_str() {
        panic!("cannot open {url}: {error}");
    }
    b.wait_for_event("Page.loadEventFired", Duration::from_secs(60));
    // Wait until every image has settled, then let late events arrive.
    b.evaluate("Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null)))");
    std::thread::sleep(Duration::from_millis(300));
    let desktop: Value = serde_json::from_str(b.evaluate(IMAGE_CHECK).as_str().unwrap()).unwrap();
    std::fs::write(screenshot, b.screenshot(json!({"format": "png"}))).unwrap();
    if let Some(path) = full_page {
        let metrics = b.call("Page.getLayoutMetrics", json!({}));
        let height = metrics["cssContentSize"]["height"]
            .as_f64()
            .unwrap_or(1000.0)
            .min(16_000.0);
        let shot = b.screenshot(json!({
            "format": "png",
            "captureBeyondViewport": true,
            "clip": {"x": 0, "y": 0, "width": 1280, "height": height, "scale": 1}
        }));
        std::fs::write(path, shot).unwrap();
    }
    b.viewport(390, 844, true);
    std::thread::sleep(Duration::from_millis(200));
    let phone: Value = serde_json::from_str(b.evaluate(IMAGE_CHECK).as_str().unwrap()).unwrap();
    // A last read of anything that arrived while we looked.
    b.call("Runtime.evaluate", json!({"expression": "1"}));
    PageReport {
        problems: problems(&b.events),
        images: desktop["images"].as_u64().unwrap_or(0) as usize,
        broken_images: desktop["broken"]
            .as_array()
            .map(|a| a.iter().map(|v| v.to_string()).collect())
            .unwrap_or_default(),
        overflow_desktop: desktop["overflow"].as_i64().unwrap_or(i64::MAX),
        overflow_phone: phone["overflow"].as_i64().unwrap_or(i64::MAX),
        blurry_grids: desktop["blurry"].as_u64().unwrap_or(u64::MAX) as usize,
    }
}
