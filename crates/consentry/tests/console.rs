//! The privacy team's console in a real browser: `consentry serve` on the small demo world,
//! Debian's headless chromium driven through chromedriver. Every role signs in; an audit run
//! from the console finds exactly what `consentry audit` finds; a draft is approved by a
//! second officer and refused to its author; an app is revoked; a dead webhook is retried and
//! delivered; a member is looked up; the console works from the keyboard. Any error in the
//! browser's console fails the test, and every page is saved as a screenshot under
//! `target/console-screenshots/`. Skipped (saying so) when `CONSENTRY_CHROMIUM` is unset.

#![allow(clippy::indexing_slicing)] // serde_json indexing returns Null, it never panics

#[allow(dead_code)] // the shared helpers: this binary starts its server with an environment
mod support;
#[path = "support/webdriver.rs"]
mod webdriver;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use consentry_service::{ServerKey, Service, ServiceConfig, SystemClock, WebhookTargets};
use consentry_store::{DeliveryStatus, Store};
use consentry_store_sqlite::SqliteStore;
use consentry_types::DeveloperId;
use serde_json::{json, Value};
use support::{consentry, start_server_with};
use webdriver::{chromium, Browser, ENTER, TAB};

const GROUPS_2018: &str = include_str!("../../../policies/groups-2018.cedar");
const HOSTILE_APP: &str = "<script>alert(1)</script>";
const QUOTED_DEVELOPER: &str = "Dev \"Quoted\" O'Brien";

/// One browser test at a time: two cores do not run several chromiums well.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn ok<T, E: std::fmt::Display>(result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| unreachable!("{e}"))
}

fn run(args: &[&str]) -> Output {
    ok(consentry().args(args).output())
}

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(relative)
}

fn screenshots() -> PathBuf {
    repo_file("target/console-screenshots")
}

/// A stand-in for a developer's endpoint: answers 200 to every delivery and keeps the
/// `Consentry-Delivery` ids it saw.
struct Receiver {
    addr: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = ok(TcpListener::bind("127.0.0.1:0"));
        let addr = ok(listener.local_addr()).to_string();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let mut reader = BufReader::new(stream);
                let mut length = 0usize;
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    if let Some(v) = lower.strip_prefix("consentry-delivery:") {
                        if let Ok(mut seen) = record.lock() {
                            seen.push(v.trim().to_string());
                        }
                    }
                    line.clear();
                }
                let mut body = vec![0u8; length];
                let _ = std::io::Read::read_exact(&mut reader, &mut body);
                let _ = reader
                    .get_mut()
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
        Receiver { addr, seen }
    }
}

/// The small demo world served, with an officer who will author a draft, a developer with a
/// quoted name whose app is named like a script (revoked, its webhook delivery dead), and a
/// browser.
/// The server, stopped however the test ends (even if it fails while starting).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Console {
    /// Dropped first: the server stops before its directory goes.
    server: Server,
    base: String,
    dir: PathBuf,
    operator: String,
    officer: String,
    auditor: String,
    author: String,
    dead_delivery: u64,
    receiver: Receiver,
    browser: Browser,
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

impl Drop for Console {
    fn drop(&mut self) {
        let Server(server) = &mut self.server;
        let _ = server.kill();
        let _ = server.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn key_file(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default().trim().to_string()
}

impl Console {
    fn start(name: &str) -> Option<Console> {
        let chromium = chromium()?;
        let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = std::env::temp_dir().join(format!("consentry-console-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let data = dir.to_str().unwrap_or_default().to_string();
        let demo = run(&["demo", "--scale", "small", "--no-serve", "--data-dir", &data]);
        assert!(demo.status.success(), "{}", String::from_utf8_lossy(&demo.stderr));
        let made = run(&[
            "keys",
            "create",
            "--role",
            "privacy_officer",
            "--name",
            "olga",
            "--out",
            &format!("{data}/olga.key"),
            "--data-dir",
            &data,
        ]);
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        let receiver = Receiver::start();
        let dead_delivery = seed(&dir, &receiver.addr);
        let browser = ok(Browser::start(&chromium));
        let (server, addr, _) = start_server_with(&dir, &[("CONSENTRY_ALLOW_LOCAL_WEBHOOKS", "true")]);
        Some(Console {
            server: Server(server),
            base: format!("http://{addr}"),
            operator: key_file(&dir, "bootstrap-operator.key"),
            officer: key_file(&dir, "privacy-officer.key"),
            auditor: key_file(&dir, "auditor.key"),
            author: key_file(&dir, "olga.key"),
            dir,
            dead_delivery,
            receiver,
            browser,
            _one_at_a_time: guard,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn go(&self, path: &str) {
        ok(self.browser.go(&self.url(path)));
    }

    /// Fails on any error in the browser's console but those `expected` name.
    fn no_console_errors(&self, expected: &[&str]) {
        for (level, message) in ok(self.browser.console()) {
            let error = level == "SEVERE" || level == "ERROR";
            assert!(
                !error || expected.iter().any(|e| message.contains(e)),
                "browser console {level}: {message}"
            );
        }
    }

    /// Checks the page has no console error and saves it as `name`.png.
    fn shot(&self, name: &str) {
        self.no_console_errors(&[]);
        ok(self.browser.screenshot(&screenshots().join(format!("{name}.png"))));
    }

    /// Clicks a control that submits a form (or follows a link) and waits until the next page
    /// has loaded: a mark left in this page is gone, and the new document is complete.
    fn submit(&self, css: &str) {
        ok(self.browser.script("window.consentryBeforeNavigation = true;", json!([])));
        ok(self.browser.click(css));
        ok(self.browser.wait(&format!("the page after {css}"), Duration::from_secs(30), |b| {
            let state = b.script(
                "return window.consentryBeforeNavigation === undefined && document.readyState === 'complete';",
                json!([]),
            )?;
            Ok(state == json!(true))
        }));
    }

    fn sign_in(&self, key: &str) {
        self.go("/console/sign-in");
        ok(self.browser.type_into("#key", key));
        self.submit("#sign-in");
        let url = ok(self.browser.url());
        assert!(
            url.ends_with("/console/overview"),
            "not signed in ({} characters of key): {url} {}",
            key.len(),
            ok(self.browser.source())
        );
    }

    fn sign_out(&self) {
        if !self.has("#sign-out") {
            self.go("/console/overview");
        }
        self.submit("#sign-out");
        assert!(ok(self.browser.url()).ends_with("/console/sign-in"));
    }

    fn text(&self, css: &str) -> String {
        ok(self.browser.text(css))
    }

    fn has(&self, css: &str) -> bool {
        ok(self.browser.count(css)) > 0
    }

    /// Sets a form control's value (long text and dates, which typing would make slow or
    /// locale-dependent).
    fn set(&self, css: &str, value: &str) {
        ok(self
            .browser
            .script("document.querySelector(arguments[0]).value = arguments[1];", json!([css, value])));
    }
}

/// Seeds what the demo has not: a developer with a quoted name and an app named like a
/// script, revoked, whose `access.revoked` delivery died. Returns that delivery's id.
fn seed(dir: &Path, receiver: &str) -> u64 {
    let store: Arc<dyn Store> = Arc::new(ok(SqliteStore::open(&dir.join("consentry.db"))));
    let service = Service::new(
        store.clone(),
        Arc::new(SystemClock::default()),
        ServerKey::generate(),
        ServiceConfig::default(),
    )
    .with_webhook_targets(WebhookTargets::strict().allow_local(true));
    let developer = ok(DeveloperId::parse("dev-quoted"));
    ok(service.put_developer(
        &developer,
        QUOTED_DEVELOPER,
        "privacy@quoted.example",
        &format!("http://{receiver}/hook"),
    ));
    let app = ok(service.register_app(&developer, HOSTILE_APP, "analytics"));
    ok(service.revoke_app(&app.app.id));
    let queued = ok(store.notifications(&developer));
    let id = queued.iter().find(|n| n.event == "access.revoked").map(|n| n.id).unwrap_or_default();
    ok(store.record_delivery(id, DeliveryStatus::Dead, service.now(), Some("connect_failed")));
    id
}

/// The pages each role may open, by screenshot name.
fn pages(role: &str) -> Vec<(&'static str, &'static str)> {
    let mut pages = vec![
        ("overview", "/console/overview"),
        ("policies", "/console/policies"),
        ("policy", "/console/policies/3"),
        ("remediation", "/console/remediation"),
        ("apps", "/console/apps"),
        ("app", "/console/apps/app-000-0"),
        ("members", "/console/members?member=m-00001"),
    ];
    if role != "operator" {
        pages.push(("audits", "/console/audits"));
    }
    pages
}

#[test]
fn each_role_signs_in_and_every_page_renders_without_a_browser_error() {
    let Some(console) = Console::start("roles") else { return };
    console.go("/console/overview");
    assert!(ok(console.browser.url()).ends_with("/console/sign-in"), "no session, no console");
    console.shot("sign-in");
    // The check for console errors can fail: an error logged in the page is seen.
    ok(console.browser.script("console.error('consentry self-check');", json!([])));
    let seen = ok(console.browser.console());
    assert!(
        seen.iter().any(|(level, message)| level == "SEVERE" && message.contains("consentry self-check")),
        "{seen:?}"
    );
    for (role, key) in [
        ("operator", &console.operator),
        ("privacy_officer", &console.officer),
        ("auditor", &console.auditor),
    ] {
        console.sign_in(key);
        assert_eq!(console.text("#signed-in-role"), role);
        assert_eq!(
            console.has("nav a[href=\"/console/audits\"]"),
            role != "operator",
            "{role}: audits offered only to who may run them"
        );
        for (name, path) in pages(role) {
            console.go(path);
            let title = ok(console.browser.script("return document.title;", json!([])));
            assert!(
                title.as_str().is_some_and(|t| t.ends_with("consentry console") && !t.starts_with("4")),
                "{role} {path}: {title}"
            );
            // The stylesheet and the script are allowed by the CSP and ran.
            let styled = ok(console
                .browser
                .script("return getComputedStyle(document.querySelector('.top')).display;", json!([])));
            assert_eq!(styled, json!("flex"), "{path}: the console's stylesheet applies");
            if console.has("table.sortable") {
                assert!(
                    console.has("table.sortable th button.sort"),
                    "{path}: the console's script made the tables sortable"
                );
            }
            console.shot(&format!("{role}-{name}"));
        }
        if role == "operator" {
            console.go("/console/audits");
            assert!(
                console.text("#problem").contains("this needs the role"),
                "an operator is refused audits"
            );
            console.no_console_errors(&["status of 403"]);
        }
        console.sign_out();
        console.go("/console/overview");
        assert!(ok(console.browser.url()).ends_with("/console/sign-in"), "signed out on the server");
    }
}

#[test]
fn an_audit_run_in_the_console_finds_what_the_cli_finds() {
    let Some(console) = Console::start("audit") else { return };
    let data = console.dir.to_str().unwrap_or_default().to_string();
    let policy = repo_file("policies/groups-2018.cedar");
    let cli = run(&[
        "audit",
        "--data-dir",
        &data,
        "--policy",
        policy.to_str().unwrap_or_default(),
        "--from",
        "2019-09-06",
        "--to",
        "2019-11-05",
        "--format",
        "json",
    ]);
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    let cli: Value = ok(serde_json::from_slice(&cli.stdout));
    assert!(
        cli["summary"]["developers_did"].as_u64().is_some_and(|n| n > 0),
        "the window has findings: {cli}"
    );
    console.sign_in(&console.auditor);
    console.go("/console/audits");
    console.shot("audits");
    ok(console.browser.click("#policy-draft"));
    console.set("#audit-draft", GROUPS_2018);
    console.set("#audit-from", "2019-09-06");
    console.set("#audit-to", "2019-11-05");
    console.submit("#run-audit");
    ok(console.browser.wait("the audit's results", Duration::from_secs(60), |b| {
        Ok(b.count("#summary")? > 0 || b.count("#problem")? > 0)
    }));
    let number = |id: &str| console.text(&format!("#{id}")).replace(',', "").parse::<u64>().ok();
    for (id, key) in [
        ("developers-could", "developers_could"),
        ("developers-did", "developers_did"),
        ("could-but-did-not", "developers_could_but_did_not"),
        ("apps-could", "apps_could"),
        ("apps-did", "apps_did"),
        ("violating-disclosures", "violating_disclosures"),
        ("members-affected", "members_affected"),
        ("records-checked", "records_checked"),
    ] {
        assert_eq!(number(id), cli["summary"][key].as_u64(), "{id}: the console and `consentry audit` agree");
    }
    let rows = ok(console.browser.count("#did tbody tr"));
    assert_eq!(Some(rows), cli["did"].as_array().map(Vec::len));
    assert_eq!(
        ok(console.browser.count("#manifests li")),
        cli["deletion_manifests"].as_object().map_or(0, |m| m.len())
    );
    // Sort the findings by disclosures: the column's header says so and the rows follow.
    let sort = "#did thead th:nth-child(4) button.sort";
    ok(console.browser.click(sort));
    ok(console.browser.click(sort));
    let header = ok(console.browser.script(
        "return document.querySelector('#did thead th:nth-child(4)').getAttribute('aria-sort');",
        json!([]),
    ));
    assert_eq!(header, json!("descending"));
    let column = ok(console.browser.script(
        "return Array.from(document.querySelectorAll('#did tbody tr td:nth-child(4)')).map(td => Number(td.textContent));",
        json!([]),
    ));
    let values: Vec<u64> =
        column.as_array().map(|a| a.iter().filter_map(Value::as_u64).collect()).unwrap_or_default();
    assert!(values.windows(2).all(|w| w[0] >= w[1]) && values.len() == rows, "{values:?}");
    console.shot("audit-result");
}

#[test]
fn a_draft_is_approved_by_a_second_officer_and_refused_to_its_author() {
    let Some(console) = Console::start("two-person") else { return };
    console.sign_in(&console.author);
    console.go("/console/policies");
    console.set("#policy-text", &format!("// reviewed in the console\n{GROUPS_2018}"));
    console.submit("#submit-policy");
    let url = ok(console.browser.url());
    assert!(url.ends_with("/console/policies/4?done=submitted&n=4"), "{url}");
    assert!(console.text("#notice").contains("Policy version 4 submitted"));
    assert!(!console.has("#approve"), "the author is not offered approval");
    assert!(
        console.text("#approve-refused").contains("submitted it"),
        "{}",
        console.text("#approve-refused")
    );
    assert!(console.has("#diff .added") && console.has("#proofs"));
    console.shot("policy-draft");
    // Tried anyway, with a form made in the page: the server refuses it.
    ok(console.browser.script(
        "const f = document.createElement('form'); f.method = 'post'; f.action = '/console/policies/4/approve';
         const t = document.createElement('input'); t.type = 'hidden'; t.name = 'csrf';
         t.value = document.querySelector('input[name=csrf]').value; f.appendChild(t);
         document.body.appendChild(f); f.submit();",
        json!([]),
    ));
    ok(console.browser.wait("the refusal", Duration::from_secs(10), |b| Ok(b.count("#problem")? > 0)));
    assert!(
        console.text("#problem").contains("cannot approve policy version 4"),
        "{}",
        console.text("#problem")
    );
    console.no_console_errors(&["status of 422"]);
    ok(console.browser.screenshot(&screenshots().join("policy-refused-to-author.png")));
    console.go("/console/policies/4");
    assert!(console.text("#approvals").contains("Not approved yet"));
    console.sign_out();
    console.sign_in(&console.officer);
    console.go("/console/policies/4");
    // Proofs: run them when this server has a prover (CI installs cvc5; the author's refused
    // approval may already have run them, as the API's does); unless they pass, the officer
    // waives them with a reason before approving.
    if console.has("#prove") {
        console.submit("#prove");
        let standing = console.text("#proof-standing");
        assert!(standing == "passed" || standing == "failed", "{standing}");
        assert!(console.has("#proofs section.review"), "the review is shown");
        console.shot("policy-proved");
    } else {
        assert!(console.has("#no-prover"));
    }
    if console.text("#proof-standing") != "passed" {
        ok(console.browser.type_into("#waive-reason", "reviewed line by line in the console"));
        console.submit("#waive");
        assert_eq!(console.text("#proof-standing"), "waived");
    }
    console.submit("#approve");
    assert!(console.text("#notice").contains("Policy version 4 approved."));
    assert!(
        console.text("#approvals").contains("privacy-team") && console.text("#approvals").contains("counts")
    );
    assert_eq!(console.text("#policy-status"), "approved, not active");
    console.shot("policy-approved");
}

#[test]
fn an_app_is_revoked_and_a_dead_webhook_is_retried_until_delivered() {
    let Some(console) = Console::start("remediate") else { return };
    console.sign_in(&console.operator);
    console.go("/console/apps");
    // The app named like a script is shown as text, and nothing ran (an alert would stop the
    // driver's next command).
    let names = ok(console.browser.script(
        "return Array.from(document.querySelectorAll('#apps td.app-name')).map(td => td.textContent);",
        json!([]),
    ));
    assert!(names.as_array().is_some_and(|n| n.contains(&json!(HOSTILE_APP))), "{names}");
    let developers = ok(console.browser.script(
        "return Array.from(document.querySelectorAll('#developers td.developer-name')).map(td => td.textContent);",
        json!([]),
    ));
    assert!(developers.as_array().is_some_and(|n| n.contains(&json!(QUOTED_DEVELOPER))), "{developers}");
    console.shot("apps");
    let active = ok(console.browser.script(
        "const row = Array.from(document.querySelectorAll('#apps tbody tr')).find(r => r.querySelector('.badge').textContent === 'active');
         return row ? row.cells[0].textContent : null;",
        json!([]),
    ));
    let app = active.as_str().unwrap_or_else(|| unreachable!("no active app in the demo world")).to_string();
    console.go(&format!("/console/apps/{app}"));
    ok(console.browser.type_into("#revoke-reason", "kept reading members after the change"));
    console.submit("#revoke");
    assert!(console.text("#notice").contains("App revoked"), "{}", ok(console.browser.source()));
    assert_eq!(console.text("#app-status"), "banned");
    assert!(!console.has("#suspend") && !console.has("#reinstate") && console.has("#banned-note"));
    assert!(console.text("#told").contains("kept reading members after the change"));
    console.shot("app-revoked");
    let id = console.dead_delivery;
    console.go("/console/remediation");
    assert!(console.has(&format!("#dead #delivery-{id}")), "the dead delivery is listed");
    console.shot("remediation-dead");
    console.submit(&format!("#retry-{id}"));
    assert!(console.text("#notice").contains(&format!("Delivery {id} will be attempted again now.")));
    // The server's deliverer picks it up within seconds; the developer's endpoint gets it.
    ok(console.browser.wait("the retried delivery", Duration::from_secs(30), |b| {
        b.go(&console.url("/console/remediation"))?;
        Ok(b.count(&format!("#delivered #delivery-{id}"))? > 0)
    }));
    assert!(
        console.receiver.seen.lock().is_ok_and(|seen| seen.contains(&id.to_string())),
        "delivered to the endpoint"
    );
    console.shot("remediation-delivered");
}

#[test]
fn a_member_is_looked_up_and_the_console_works_from_the_keyboard() {
    let Some(console) = Console::start("keyboard") else { return };
    // Sign in with the keyboard alone.
    console.go("/console/sign-in");
    ok(console.browser.keys(&[TAB]));
    let focused = ok(console.browser.script("return document.activeElement.id;", json!([])));
    assert_eq!(focused, json!("key"), "the key field is the first stop");
    ok(console.browser.keys(&[&console.auditor, ENTER]));
    ok(console
        .browser
        .wait("the overview", Duration::from_secs(10), |b| Ok(b.url()?.ends_with("/console/overview"))));
    ok(console.browser.keys(&[TAB]));
    let skip = ok(console.browser.script("return document.activeElement.textContent;", json!([])));
    assert_eq!(skip, json!("Skip to the page's content"));
    // Every control can be reached with Tab and has a name a screen reader can say.
    let unnamed = ok(console.browser.script(
        "return Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea, button')).filter(el => {
           const label = el.id && document.querySelector('label[for=\"' + el.id + '\"]');
           return !(label || el.getAttribute('aria-label') || el.textContent.trim());
         }).map(el => el.outerHTML);",
        json!([]),
    ));
    assert_eq!(unnamed, json!([]), "controls without a label");
    // Look a member up from the keyboard: find one the ledger has, then type it.
    let member = (0..60)
        .map(|i| format!("m-{i:05}"))
        .find(|m| {
            console.go(&format!("/console/members?member={m}"));
            console.has("#disclosures")
        })
        .unwrap_or_else(|| unreachable!("no member in the ledger"));
    console.go("/console/members");
    let mut reached = false;
    for _ in 0..40 {
        ok(console.browser.keys(&[TAB]));
        if ok(console.browser.script("return document.activeElement.id;", json!([]))) == json!("member") {
            reached = true;
            break;
        }
    }
    assert!(reached, "the member field is reachable with Tab");
    ok(console.browser.keys(&[&member, ENTER]));
    ok(console.browser.wait("the lookup", Duration::from_secs(10), |b| Ok(b.count("#disclosures")? > 0)));
    let data = console.dir.to_str().unwrap_or_default().to_string();
    let shown = ok(console.browser.count("#disclosures tbody tr"));
    let ledger = run(&["ledger", "show", "--data-dir", &data, "--member", &member]);
    let lines = String::from_utf8_lossy(&ledger.stdout).lines().count();
    assert_eq!(shown, lines.min(1000), "every response the ledger recorded for {member}");
    // Sort a table from the keyboard.
    ok(console
        .browser
        .script("document.querySelector('#per-app thead th:nth-child(3) button.sort').focus();", json!([])));
    ok(console.browser.keys(&[ENTER]));
    let sorted = ok(console.browser.script(
        "return document.querySelector('#per-app thead th:nth-child(3)').getAttribute('aria-sort');",
        json!([]),
    ));
    assert_eq!(sorted, json!("ascending"));
    console.shot("member");
    // Verify the ledger from the overview.
    console.go("/console/overview");
    console.submit("#verify-ledger");
    ok(console.browser.wait("the verification", Duration::from_secs(30), |b| Ok(b.count("#outcome")? > 0)));
    assert!(console.text("#outcome").starts_with("OK: "), "{}", console.text("#outcome"));
    console.shot("verification");
    console.go("/console/overview");
    assert!(console.text("#last-verification").contains("OK: "));
    assert!(console.text("#ledger-streams .last-checkpoint").starts_with("record "));
    console.shot("auditor-overview-verified");
}
