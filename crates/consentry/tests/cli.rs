//! The `consentry` command end to end: policy validation and activation, the demo, serving.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Output;

use support::{consentry, start_server};

fn run(args: &[&str]) -> Output {
    consentry().args(args).output().unwrap_or_else(|e| unreachable!("cannot run consentry: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(relative)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("consentry-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Every failure is one readable line on stderr, starting with `error:`.
fn assert_one_line_error(output: &Output, mentions: &str) {
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: ") && last.contains(mentions), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn shipped_policies_validate() {
    for file in ["policies/legacy-2017.cedar", "policies/groups-2018.cedar"] {
        let output = run(&["policy", "validate", repo_file(file).to_str().unwrap_or_default()]);
        assert!(output.status.success(), "{}", text(&output.stderr));
        assert!(text(&output.stdout).starts_with("ok: "));
    }
}

#[test]
fn shipped_policy_tests_pass_and_a_wrong_expectation_fails() {
    let output = run(&["policy", "test", repo_file("policies/tests").to_str().unwrap_or_default()]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    assert!(
        stdout.lines().last().is_some_and(|l| l.ends_with(" passed, 0 failed")) && !stdout.contains("FAIL"),
        "{stdout}"
    );
    let dir = temp_dir("policy-tests");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| unreachable!("{e}"));
    let policy = repo_file("policies/groups-2018.cedar");
    let wrong = format!(
        r#"{{"policy": {:?}, "cases": [{{"name": "wrong on purpose", "field": "member.name", "subject": {{"is_member": true, "consented_profile": false}}, "expect": "allow"}}]}}"#,
        policy.to_str().unwrap_or_default()
    );
    std::fs::write(dir.join("wrong.json"), wrong).unwrap_or_else(|e| unreachable!("{e}"));
    let failed = run(&["policy", "test", dir.join("wrong.json").to_str().unwrap_or_default()]);
    assert!(
        text(&failed.stdout).contains("FAIL")
            && text(&failed.stdout).contains("expected allow, the engine says deny")
    );
    assert_one_line_error(&failed, "1 policy test(s) failed");
    std::fs::write(dir.join("bad.json"), r#"{"policy": "x.cedar", "cases": [], "extra": 1}"#)
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert_one_line_error(
        &run(&["policy", "test", dir.join("bad.json").to_str().unwrap_or_default()]),
        "unknown key \"extra\"",
    );
    std::fs::write(dir.join("bad.json"), "{ not json").unwrap_or_else(|e| unreachable!("{e}"));
    assert_one_line_error(
        &run(&["policy", "test", dir.join("bad.json").to_str().unwrap_or_default()]),
        "not valid JSON",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn invalid_policy_names_file_line_and_column() {
    let dir = temp_dir("invalid");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| unreachable!("{e}"));
    let file = dir.join("bad.cedar");
    std::fs::write(
        &file,
        "permit (principal,\n  action == Consentry::Action::\"member.email\", resource);\n",
    )
    .unwrap_or_else(|e| unreachable!("{e}"));
    let output = run(&["policy", "validate", file.to_str().unwrap_or_default()]);
    assert_one_line_error(&output, "not a valid policy");
    assert!(text(&output.stderr).contains("bad.cedar:2:"), "{}", text(&output.stderr));
    let missing = run(&["policy", "validate", "/no/such/file.cedar"]);
    assert_one_line_error(&missing, "cannot read /no/such/file.cedar");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn activate_stores_a_new_version_and_refuses_bad_text() {
    let dir = temp_dir("activate");
    let data = dir.to_str().unwrap_or_default().to_string();
    let legacy = repo_file("policies/legacy-2017.cedar");
    let legacy = legacy.to_str().unwrap_or_default();
    let activate = |file: &str, reason: &str, approver: Option<&str>| {
        let mut args =
            vec!["policy", "activate", file, "--reason", reason, "--author", "ann", "--data-dir", &data];
        if let Some(approver) = approver {
            args.extend(["--approved-by", approver]);
        }
        run(&args)
    };
    let unreviewed = activate(legacy, "launch", None);
    assert!(!unreviewed.status.success() && text(&unreviewed.stderr).contains("--approved-by"));
    assert_one_line_error(&activate(legacy, "launch", Some("ann")), "cannot approve it");
    let first = activate(legacy, "launch", Some("bo"));
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(text(&first.stdout).contains("activated policy version 2"), "{}", text(&first.stdout));
    let bad = dir.join("bad.cedar");
    std::fs::write(&bad, "permit (principal, action, resource) when { context.nope };")
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert_one_line_error(&activate(bad.to_str().unwrap_or_default(), "x", Some("bo")), "bad.cedar:1:");
    assert_one_line_error(&activate(legacy, " ", Some("bo")), "reason must not be empty");
    let second = activate(legacy, "again", Some("bo"));
    // Versions: 1 (refused self-approval), 2 (first), 3 (empty reason); the invalid text never was one.
    assert!(text(&second.stdout).contains("activated policy version 4"), "{}", text(&second.stdout));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn small_demo_tells_the_story_and_keeps_the_invariants() {
    let dir = temp_dir("demo");
    let output =
        run(&["demo", "--scale", "small", "--no-serve", "--data-dir", dir.to_str().unwrap_or_default()]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", text(&output.stderr));
    assert!(
        stdout.contains("2018-04-04  policy v2 groups-2018 ships, with a grandfathering clause"),
        "{stdout}"
    );
    // The 2019-11-05 audit: could and did, then a clean follow-up after the fix.
    let could = stdout.lines().find(|l| l.contains("COULD: ")).unwrap_or_default();
    let did = stdout.lines().find(|l| l.contains("DID:   ")).unwrap_or_default();
    let number = |line: &str, after: &str| {
        line.split(after).nth(1).and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse::<u32>().ok())
    };
    let (could, did) = (number(could, "COULD: "), number(did, "DID:   "));
    assert!(
        could.is_some_and(|c| did.is_some_and(|d| c > d && d > 0)),
        "could {could:?} did {did:?}\n{stdout}"
    );
    assert!(
        stdout.contains("Follow-up audit")
            && stdout.contains(": 0 violating disclosures, 0 developers could"),
        "{stdout}"
    );
    assert!(dir.join("audit-2019-11-05.html").exists());
    let manifests = std::fs::read_dir(dir.join("manifests")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(manifests, 2 * did.unwrap_or(0) as usize, "a JSON and a CSV manifest per developer that did");
    let not_opted = stdout.lines().find(|l| l.contains("of members who had not")).unwrap_or_default();
    let values: Vec<&str> = not_opted.split_whitespace().rev().take(3).collect();
    assert_eq!(values.first(), Some(&"0"), "after the fix no profile without opt-in: {not_opted}");
    assert!(
        values.iter().skip(1).all(|v| *v != "0"),
        "before it, members who had not opted in were seen: {not_opted}"
    );
    assert!(
        stdout.contains("Remediation: ")
            && stdout.contains("missed the deadline")
            && stdout.contains("closed"),
        "{stdout}"
    );
    assert!(stdout.contains("deletion.requested") && stdout.contains("deletion.overdue"), "{stdout}");
    // The same seed gives the same story: everything but wall-clock timings is the same.
    let again =
        run(&["demo", "--scale", "small", "--no-serve", "--data-dir", dir.to_str().unwrap_or_default()]);
    let table = |s: &str| {
        s.lines()
            .filter(|l| l.starts_with("  ") && !l.contains(" s (") && !l.trim_start().starts_with("checked "))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(table(&stdout), table(&text(&again.stdout)));
    assert!(stdout.contains("Ledger: verify OK"), "{stdout}");

    // The same audit from the command line, in every format.
    let data = dir.to_str().unwrap_or_default();
    let policy = repo_file("policies/groups-2018.cedar");
    let audit = |format: &str| {
        run(&[
            "audit",
            "--data-dir",
            data,
            "--policy",
            policy.to_str().unwrap_or_default(),
            "--from",
            "2019-09-06",
            "--to",
            "2019-11-05",
            "--format",
            format,
        ])
    };
    let json: serde_json::Value = serde_json::from_slice(&audit("json").stdout).unwrap_or_default();
    assert_eq!(json["summary"]["developers_did"].as_u64(), did.map(u64::from), "{json}");
    assert_eq!(json["summary"]["developers_could"].as_u64(), could.map(u64::from));
    let csv = text(&audit("csv").stdout);
    assert!(
        csv.starts_with("answer,app,developer") && csv.contains("\ndid,") && csv.contains("\ncould,"),
        "{csv}"
    );
    let html = dir.join("report.html");
    let written = run(&[
        "audit",
        "--data-dir",
        data,
        "--since",
        "60d",
        "--to",
        "2019-11-05",
        "--policy",
        policy.to_str().unwrap_or_default(),
        "--format",
        "html",
        "--out",
        html.to_str().unwrap_or_default(),
    ]);
    assert!(written.status.success(), "{}", text(&written.stderr));
    let page = std::fs::read_to_string(&html).unwrap_or_default();
    assert!(
        page.contains("<svg") && page.contains("could</b>") && !page.contains("<script"),
        "self-contained HTML with an SVG chart"
    );
    assert_one_line_error(
        &run(&["audit", "--data-dir", data, "--since", "sixty"]),
        "since must look like 60d",
    );
    assert_one_line_error(
        &run(&["audit", "--data-dir", data, "--since", "60d", "--format", "pdf"]),
        "unknown format",
    );
    assert_one_line_error(
        &run(&["audit", "--data-dir", data, "--since", "60d", "--version", "42"]),
        "no policy version 42",
    );

    // Previews against the active (fixed) groups-2018: legacy would give profiles back.
    let legacy = repo_file("policies/legacy-2017.cedar");
    let preview_of = |file: &Path| {
        let args = [
            "policy",
            "preview",
            file.to_str().unwrap_or_default(),
            "--data-dir",
            data,
            "--since",
            "20d",
            "--to",
            "2019-12-01",
        ];
        text(&run(&args).stdout)
    };
    let preview = preview_of(&legacy);
    let gains = preview
        .lines()
        .find(|l| l.contains("gains: "))
        .and_then(|l| l.split("gains: ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse::<u32>().ok());
    assert!(gains.is_some_and(|g| g > 0), "{preview}");
    let same = preview_of(&policy);
    assert!(same.contains("loses: 0 apps") && same.contains("gains: 0 apps"), "{same}");

    // Cases from the 2019-11-05 audit: one per developer that did, revoked, with its manifest.
    let opened = text(
        &run(&[
            "case",
            "open",
            "--data-dir",
            data,
            "--policy",
            policy.to_str().unwrap_or_default(),
            "--since",
            "60d",
            "--to",
            "2019-11-05",
            "--deadline-days",
            "30",
        ])
        .stdout,
    );
    assert!(opened.contains(&format!("{} cases opened", did.unwrap_or(0))), "{opened}");
    let listed = text(&run(&["case", "list", "--data-dir", data]).stdout);
    assert_eq!(
        listed.lines().filter(|l| l.contains("deletion_requested")).count(),
        did.unwrap_or(0) as usize,
        "{listed}"
    );
    let shown = text(&run(&["case", "show", "1", "--data-dir", data]).stdout);
    assert!(
        shown.contains("deletion_requested")
            && shown.contains("manifest: {")
            && shown.contains("member.name"),
        "{shown}"
    );
    assert_one_line_error(&run(&["case", "show", "999", "--data-dir", data]), "there is no case 999");
    // Seven years after the story, every installation is unused: all expire.
    let expired = text(&run(&["installations", "expire", "--data-dir", data]).stdout);
    assert!(
        expired
            .lines()
            .last()
            .is_some_and(|l| l.ends_with("installations unused for 90 days removed") && !l.starts_with("0 ")),
        "{expired}"
    );
    let again = text(&run(&["installations", "expire", "--data-dir", data]).stdout);
    assert!(again.starts_with("0 installations"), "{again}");

    // The ledger the demo wrote: verify, an auditor's checkpoint, show, and tampering.
    let verified = run(&["ledger", "verify", "--data-dir", data]);
    assert!(text(&verified.stdout).starts_with("OK: 1 segments"), "{}", text(&verified.stdout));
    let checkpoint = text(&run(&["ledger", "checkpoint", "--data-dir", data]).stdout).trim().to_string();
    assert!(checkpoint.starts_with("checkpoint v1 seq="), "{checkpoint}");
    assert!(run(&["ledger", "verify", "--data-dir", data, "--checkpoint", &checkpoint]).status.success());
    let shown = text(
        &run(&["ledger", "show", "--data-dir", data, "--from", "2018-04-04", "--to", "2018-06-01"]).stdout,
    );
    assert!(
        !shown.is_empty() && shown.lines().all(|l| l.contains(" 2018-0") && l.contains("policy=v2")),
        "{shown}"
    );
    let segment = dir.join("ledger").join("00000001.seg");
    let mut bytes = std::fs::read(&segment).unwrap_or_default();
    let middle = bytes.len() / 2;
    if let Some(b) = bytes.get_mut(middle) {
        *b ^= 0x01;
    }
    std::fs::write(&segment, bytes).unwrap_or_else(|e| unreachable!("{e}"));
    let tampered = run(&["ledger", "verify", "--data-dir", data]);
    assert_one_line_error(&tampered, "ledger verification failed: segment 1, after record");
    let nothing = run(&["ledger", "verify", "--data-dir", "/no/such/dir"]);
    assert_one_line_error(&nothing, "no ledger in /no/such/dir");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn demo_refuses_a_directory_it_did_not_write() {
    let dir = temp_dir("foreign");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| unreachable!("{e}"));
    std::fs::write(dir.join("consentry.db"), b"precious").unwrap_or_else(|e| unreachable!("{e}"));
    let output =
        run(&["demo", "--scale", "small", "--no-serve", "--data-dir", dir.to_str().unwrap_or_default()]);
    assert_one_line_error(&output, "did not write");
    assert_eq!(std::fs::read(dir.join("consentry.db")).ok(), Some(b"precious".to_vec()));
    let _ = std::fs::remove_dir_all(&dir);
}

fn http_get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| unreachable!("{e}"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap_or_else(|e| unreachable!("{e}"));
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

#[test]
fn first_serve_creates_a_private_bootstrap_key_and_serves() {
    let dir = temp_dir("serve");
    let (mut child, addr, said) = start_server(&dir);
    assert!(said.iter().any(|l| l.contains("bootstrap-operator.key") && l.contains("0600")), "{said:?}");
    let health = http_get(&addr, "/healthz");
    let unauthenticated = http_get(&addr, "/platform/v1/policies");
    // SIGTERM stops it cleanly, with a signed checkpoint of the ledger.
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let stopped = child.wait().map(|s| s.success()).unwrap_or(false);
    assert!(stopped, "the server did not exit cleanly on SIGTERM");
    let checkpoints = std::fs::read_to_string(dir.join("ledger").join("checkpoints")).unwrap_or_default();
    assert!(checkpoints.starts_with("checkpoint v1 seq=0 "), "{checkpoints}");
    assert!(health.starts_with("HTTP/1.1 200") && health.ends_with("ok"), "{health}");
    assert!(
        unauthenticated.starts_with("HTTP/1.1 401") && unauthenticated.contains("application/problem+json"),
        "{unauthenticated}"
    );
    let key_file = dir.join("bootstrap-operator.key");
    let key = std::fs::read_to_string(&key_file).unwrap_or_default();
    assert!(key.starts_with("csk_"), "{key}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
        assert_eq!(mode, 0o600);
    }
    // The key is stored only as a hash.
    let db = std::fs::read(dir.join("consentry.db")).unwrap_or_default();
    let secret = key.trim().rsplit('_').next().unwrap_or_default().as_bytes().to_vec();
    assert!(!db.windows(secret.len()).any(|w| w == secret.as_slice()));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn corrupted_server_key_is_one_readable_line() {
    let dir = temp_dir("corrupt");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| unreachable!("{e}"));
    std::fs::write(dir.join("server.key"), "not hex").unwrap_or_else(|e| unreachable!("{e}"));
    let output = run(&["serve", "--listen", "127.0.0.1:0", "--data-dir", dir.to_str().unwrap_or_default()]);
    assert_one_line_error(&output, "server.key is corrupted");
    let bad_listen = run(&[
        "serve",
        "--listen",
        "not-an-address",
        "--data-dir",
        temp_dir("listen").to_str().unwrap_or_default(),
    ]);
    assert_one_line_error(&bad_listen, "cannot listen on not-an-address");
    let _ = std::fs::remove_dir_all(&dir);
}

fn http_get_with_key(addr: &str, path: &str, key: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| unreachable!("{e}"));
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap_or_else(|e| unreachable!("{e}"));
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

/// `serve` hands each request's peer address to the API, so failed authentication is throttled
/// per address there (served without it, wrong keys would get 401 for ever).
#[test]
fn serve_throttles_failed_authentication_per_peer_address() {
    let dir = temp_dir("throttle");
    let (mut child, addr, _) = start_server(&dir);
    let key = std::fs::read_to_string(dir.join("bootstrap-operator.key")).unwrap_or_default();
    let wrong: Vec<String> = (0..20)
        .map(|i| http_get_with_key(&addr, "/platform/v1/policies", &format!("csk_guess{i}_x")))
        .collect();
    let refused = http_get_with_key(&addr, "/platform/v1/policies", key.trim());
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
    for (i, answer) in wrong.iter().enumerate() {
        assert!(answer.starts_with("HTTP/1.1 401"), "attempt {i}: {answer}");
    }
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    assert!(refused.to_ascii_lowercase().contains("\r\nretry-after: "), "{refused}");
    assert!(refused.contains("application/problem+json"), "{refused}");
    let _ = std::fs::remove_dir_all(&dir);
}
