//! A small WebDriver client for the console's browser tests: Debian's `chromium` driven through
//! `chromedriver` over plain HTTP on loopback (W3C WebDriver, with chromedriver's browser log
//! endpoint for console errors). A few dozen commands are all the tests need, so this costs no
//! dependency. `CONSENTRY_CHROMIUM` names the browser (unset: the tests skip, saying so);
//! `CONSENTRY_CHROMEDRIVER` the driver (default `chromedriver` on the PATH).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The W3C name of an element reference in JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A key as WebDriver spells it.
pub const TAB: &str = "\u{E004}";
pub const ENTER: &str = "\u{E007}";

/// One HTTP exchange with the driver.
fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
    let payload = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    );
    stream.write_all(request.as_bytes()).map_err(|e| format!("send: {e}"))?;
    // The driver keeps the connection open: read the head, then exactly the body it announces.
    let mut reader = std::io::BufReader::new(stream);
    let mut head = String::new();
    let mut line = String::new();
    while std::io::BufRead::read_line(&mut reader, &mut line).map_err(|e| format!("read: {e}"))? > 0 {
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
        line.clear();
    }
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or("no status")?;
    let lower = head.to_ascii_lowercase();
    let length = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)));
    let body = match length {
        Some(length) => {
            let mut bytes = vec![0u8; length];
            reader.read_exact(&mut bytes).map_err(|e| format!("read: {e}"))?;
            String::from_utf8_lossy(&bytes).into_owned()
        }
        None => {
            let mut rest = String::new();
            reader.read_to_string(&mut rest).map_err(|e| format!("read: {e}"))?;
            if lower.contains("transfer-encoding: chunked") {
                dechunk(&rest)
            } else {
                rest
            }
        }
    };
    let value = if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?
    };
    Ok((status, value))
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 {
            break;
        }
        out.push_str(after.get(..size).unwrap_or(after));
        rest = after.get(size + 2..).unwrap_or_default();
    }
    out
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(9515)
}

/// A browser session; the browser and its driver end when it is dropped.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    profile: PathBuf,
}

/// The browser to use, or `None` (with the reason printed) when the tests should skip.
pub fn chromium() -> Option<String> {
    match std::env::var("CONSENTRY_CHROMIUM") {
        Ok(path) if !path.is_empty() => Some(path),
        _ => {
            eprintln!("skipped: CONSENTRY_CHROMIUM is not set (CI sets it; see .ci/run)");
            None
        }
    }
}

impl Browser {
    /// Starts chromedriver and a fresh headless chromium with its own profile directory.
    pub fn start(chromium: &str) -> Result<Browser, String> {
        let driver_path = std::env::var("CONSENTRY_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let port = free_port();
        let driver = Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {driver_path}: {e}"))?;
        let profile = std::env::temp_dir().join(format!("consentry-chromium-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        let mut browser = Browser { driver, port, session: String::new(), profile };
        let started = Instant::now();
        while http(port, "GET", "/status", None)
            .map(|(_, v)| v["value"]["ready"] != json!(true))
            .unwrap_or(true)
        {
            if started.elapsed() > Duration::from_secs(20) {
                return Err("chromedriver did not become ready".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--no-first-run", "--no-default-browser-check", "--window-size=1280,1600",
                    format!("--user-data-dir={}", browser.profile.display()),
                ],
            },
        }}});
        let (status, value) = http(port, "POST", "/session", Some(&capabilities))?;
        if status != 200 {
            return Err(format!("no browser session ({status}): {value}"));
        }
        browser.session = value["value"]["sessionId"].as_str().unwrap_or_default().to_string();
        Ok(browser)
    }

    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let path = format!("/session/{}{path}", self.session);
        let (status, value) = http(self.port, method, &path, body.as_ref())?;
        if status != 200 {
            return Err(format!("{method} {path} answered {status}: {}", value["value"]));
        }
        Ok(value["value"].clone())
    }

    pub fn go(&self, url: &str) -> Result<(), String> {
        self.command("POST", "/url", Some(json!({ "url": url }))).map(|_| ())
    }

    pub fn url(&self) -> Result<String, String> {
        self.command("GET", "/url", None).map(|v| v.as_str().unwrap_or_default().to_string())
    }

    pub fn source(&self) -> Result<String, String> {
        self.command("GET", "/source", None).map(|v| v.as_str().unwrap_or_default().to_string())
    }

    /// The first element matching a CSS selector.
    pub fn find(&self, css: &str) -> Result<String, String> {
        let found = self.command("POST", "/element", Some(json!({"using": "css selector", "value": css})))?;
        found[ELEMENT].as_str().map(str::to_string).ok_or_else(|| format!("no element {css}"))
    }

    /// How many elements match a CSS selector.
    pub fn count(&self, css: &str) -> Result<usize, String> {
        let found =
            self.command("POST", "/elements", Some(json!({"using": "css selector", "value": css})))?;
        Ok(found.as_array().map(Vec::len).unwrap_or(0))
    }

    pub fn text(&self, css: &str) -> Result<String, String> {
        let element = self.find(css)?;
        self.command("GET", &format!("/element/{element}/text"), None)
            .map(|v| v.as_str().unwrap_or_default().to_string())
    }

    pub fn click(&self, css: &str) -> Result<(), String> {
        let element = self.find(css)?;
        self.command("POST", &format!("/element/{element}/click"), Some(json!({}))).map(|_| ())
    }

    pub fn type_into(&self, css: &str, text: &str) -> Result<(), String> {
        let element = self.find(css)?;
        self.command("POST", &format!("/element/{element}/clear"), Some(json!({})))?;
        self.command("POST", &format!("/element/{element}/value"), Some(json!({ "text": text }))).map(|_| ())
    }

    /// Presses keys on whatever has the focus, as a person at the keyboard would.
    pub fn keys(&self, keys: &[&str]) -> Result<(), String> {
        let mut actions = Vec::new();
        for key in keys {
            for c in key.chars() {
                actions.push(json!({"type": "keyDown", "value": c.to_string()}));
                actions.push(json!({"type": "keyUp", "value": c.to_string()}));
            }
        }
        self.command(
            "POST",
            "/actions",
            Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})),
        )?;
        self.command("DELETE", "/actions", None).map(|_| ())
    }

    /// Runs script in the page (WebDriver's own channel, which the page's CSP does not govern).
    pub fn script(&self, body: &str, args: Value) -> Result<Value, String> {
        self.command("POST", "/execute/sync", Some(json!({ "script": body, "args": args })))
    }

    /// The page as a PNG, written to `path`.
    pub fn screenshot(&self, path: &std::path::Path) -> Result<(), String> {
        use base64::Engine as _;
        let encoded = self.command("GET", "/screenshot", None)?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .map_err(|e| e.to_string())?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        std::fs::write(path, png).map_err(|e| e.to_string())
    }

    /// The browser's console messages since the last call: (level, message).
    pub fn console(&self) -> Result<Vec<(String, String)>, String> {
        let body = Some(json!({"type": "browser"}));
        let entries =
            self.command("POST", "/se/log", body.clone()).or_else(|_| self.command("POST", "/log", body))?;
        Ok(entries
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|e| {
                        (
                            e["level"].as_str().unwrap_or_default().to_string(),
                            e["message"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Waits until `check` holds (or fails after `limit`).
    pub fn wait(
        &self,
        what: &str,
        limit: Duration,
        check: impl Fn(&Browser) -> Result<bool, String>,
    ) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if check(self)? {
                return Ok(());
            }
            if started.elapsed() > limit {
                return Err(format!("timed out waiting for {what}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http(self.port, "DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
