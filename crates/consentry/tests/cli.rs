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

/// The audit's two numbers as the demo prints them: developers who could, developers who did.
fn could_and_did(stdout: &str) -> (Option<u32>, Option<u32>) {
    let number = |marker: &str| {
        let line = stdout.lines().find(|l| l.contains(marker)).unwrap_or_default();
        line.split(marker)
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse::<u32>().ok())
    };
    (number("COULD: "), number("DID:   "))
}

/// Developers that *could* on the story's audit, derived from the facts the story wrote rather
/// than from the audit: those with an app whose installation from before the April 2018
/// change (grandfathered by the clause) was still in place at some point of the window.
fn grandfathered_developers(dir: &Path, from: &str, to: &str) -> u32 {
    use consentry_store::Store as _;
    use consentry_types::Instant;
    let at = |t: &str| Instant::parse(t).unwrap_or_else(|e| unreachable!("{e}"));
    let (change, from, to) = (at("2018-04-04"), at(from), at(to));
    let store = consentry_store_sqlite::SqliteStore::open(&dir.join("consentry.db"))
        .unwrap_or_else(|e| unreachable!("{e}"));
    let history = store.fact_history().unwrap_or_else(|e| unreachable!("{e}"));
    let mut developers = std::collections::BTreeSet::new();
    for (i, change_row) in history.installations.iter().enumerate() {
        let Some((_, installed_at)) = &change_row.value else { continue };
        // Until the next change of the same installation, if any.
        let until = history
            .installations
            .iter()
            .skip(i + 1)
            .find(|c| c.key == change_row.key)
            .map_or(Instant::MAX, |c| c.at);
        if *installed_at < change && change_row.at < to && until > from {
            let app = store.app(&change_row.key.0).ok().flatten().unwrap_or_else(|| unreachable!("no app"));
            developers.insert(app.developer);
        }
    }
    developers.len() as u32
}

#[test]
fn small_demo_tells_the_story_and_keeps_the_invariants() {
    let dir = temp_dir("demo");
    // An empty directory is one the demo may fill.
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| unreachable!("{e}"));
    let output =
        run(&["demo", "--scale", "small", "--no-serve", "--data-dir", dir.to_str().unwrap_or_default()]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", text(&output.stderr));
    assert!(
        stdout.contains("2018-04-04  policy v2 groups-2018 ships, with a grandfathering clause"),
        "{stdout}"
    );
    // The 2019-11-05 audit: could and did, then a clean follow-up after the fix. At the small
    // scale the story makes the apps of 3 developers with grandfathered installations read
    // member lists to the end (they did); every developer with a grandfathered installation
    // in the window could.
    let (could, did) = could_and_did(&stdout);
    assert_eq!(did, Some(3), "{stdout}");
    assert_eq!(could, Some(grandfathered_developers(&dir, "2019-09-06", "2019-11-05")), "{stdout}");
    assert!(could.is_some_and(|c| c > 3), "some could but did not: {stdout}");
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

/// The story as told in the README: 100 developers kept access through the grandfathering
/// clause, 11 of them used it in the 60 days before the audit.
#[test]
fn full_demo_finds_that_100_developers_could_and_11_did() {
    let dir = temp_dir("full-demo");
    let output = run(&["demo", "--no-serve", "--data-dir", dir.to_str().unwrap_or_default()]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", text(&output.stderr));
    assert!(stdout.contains("World: 5,000 members in 300 groups; 100 developers with "), "{stdout}");
    assert_eq!(could_and_did(&stdout), (Some(100), Some(11)), "{stdout}");
    assert_eq!(grandfathered_developers(&dir, "2019-09-06", "2019-11-05"), 100);
    assert!(stdout.contains("11 cases opened"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn demo_replaces_only_a_directory_it_wrote_or_an_empty_one() {
    let dir = temp_dir("users-files");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| unreachable!("{e}"));
    std::fs::write(dir.join("thesis.tex"), b"precious").unwrap_or_else(|e| unreachable!("{e}"));
    let demo = |dir: &Path| {
        run(&["demo", "--scale", "small", "--no-serve", "--data-dir", dir.to_str().unwrap_or_default()])
    };
    assert_one_line_error(&demo(&dir), "did not write");
    assert_eq!(std::fs::read(dir.join("thesis.tex")).ok(), Some(b"precious".to_vec()));
    // A file named like the demo's marker does not make the directory the demo's.
    std::fs::write(dir.join("demo-world.txt"), b"mine").unwrap_or_else(|e| unreachable!("{e}"));
    assert_one_line_error(&demo(&dir), "did not write");
    assert_eq!(std::fs::read(dir.join("thesis.tex")).ok(), Some(b"precious".to_vec()));
    // A file where the directory should be is left alone.
    let file = dir.join("thesis.tex");
    assert_one_line_error(&demo(&file), "not a directory");
    assert_eq!(std::fs::read(&file).ok(), Some(b"precious".to_vec()));
    #[cfg(unix)]
    {
        // A link to a directory is not replaced either (nor what it points to).
        let link = temp_dir("users-link");
        std::os::unix::fs::symlink(&dir, &link).unwrap_or_else(|e| unreachable!("{e}"));
        assert_one_line_error(&demo(&link), "symbolic link");
        assert_eq!(std::fs::read(dir.join("thesis.tex")).ok(), Some(b"precious".to_vec()));
        let _ = std::fs::remove_file(&link);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Secret files are never followed through a link planted where they go, never read when
/// others can read them, and live in a directory only their owner can enter.
#[cfg(unix)]
#[test]
fn key_files_refuse_planted_links_and_loose_modes() {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let mode =
        |path: &Path| std::fs::symlink_metadata(path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
    // `not-an-address` makes serve stop once the data directory is set up.
    let serve = |dir: &Path| {
        run(&["serve", "--listen", "not-an-address", "--data-dir", dir.to_str().unwrap_or_default()])
    };
    let key = format!("{}\n", "ab".repeat(32));

    // A dangling link where server.key goes: refused, nothing written through it.
    let dir = temp_dir("link-server-key");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| unreachable!("{e}"));
    let outside = temp_dir("link-target");
    symlink(&outside, dir.join("server.key")).unwrap_or_else(|e| unreachable!("{e}"));
    assert_one_line_error(&serve(&dir), "server.key is a symbolic link");
    assert!(!outside.exists(), "a key was written through the link");
    // A link to a good key elsewhere: refused as well.
    std::fs::write(&outside, &key).unwrap_or_else(|e| unreachable!("{e}"));
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert_one_line_error(&serve(&dir), "server.key is a symbolic link");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&outside);

    // A dangling link where the bootstrap operator key goes: refused, the key not written there.
    let dir = temp_dir("link-bootstrap");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| unreachable!("{e}"));
    symlink(&outside, dir.join("bootstrap-operator.key")).unwrap_or_else(|e| unreachable!("{e}"));
    assert_one_line_error(&serve(&dir), "bootstrap-operator.key");
    assert!(!outside.exists(), "the operator key was written through the link");
    // No key was made that nobody could use: with the link gone, the first key is created.
    std::fs::remove_file(dir.join("bootstrap-operator.key")).unwrap_or_else(|e| unreachable!("{e}"));
    let _ = serve(&dir);
    let key_text = std::fs::read_to_string(dir.join("bootstrap-operator.key")).unwrap_or_default();
    assert!(key_text.starts_with("csk_"), "{key_text}");
    let _ = std::fs::remove_dir_all(&dir);

    // A FIFO where the key goes neither hangs the server nor passes for a key.
    let dir = temp_dir("fifo-key");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| unreachable!("{e}"));
    let made = std::process::Command::new("mkfifo").arg(dir.join("server.key")).status();
    if made.is_ok_and(|s| s.success()) {
        assert_one_line_error(&serve(&dir), "server.key is not a regular file");
    }
    let _ = std::fs::remove_dir_all(&dir);

    // A key file others can read: refused with the fix in one line.
    let dir = temp_dir("loose-key");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| unreachable!("{e}"));
    std::fs::write(dir.join("server.key"), &key).unwrap_or_else(|e| unreachable!("{e}"));
    std::fs::set_permissions(dir.join("server.key"), std::fs::Permissions::from_mode(0o644))
        .unwrap_or_else(|e| unreachable!("{e}"));
    let loose = serve(&dir);
    assert_one_line_error(&loose, "chmod 600");
    assert!(text(&loose.stderr).contains("server.key"), "{}", text(&loose.stderr));
    let _ = std::fs::remove_dir_all(&dir);

    // A new data directory (and its missing parents) is the owner's alone; its keys are 0600.
    let parent = temp_dir("private");
    let dir = parent.join("nested").join("data");
    let _ = serve(&dir);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&parent.join("nested")), 0o700);
    assert_eq!(mode(&dir.join("server.key")), 0o600);
    assert_eq!(mode(&dir.join("bootstrap-operator.key")), 0o600);
    // And a second start reads the key it wrote.
    assert_one_line_error(&serve(&dir), "cannot listen on not-an-address");
    let _ = std::fs::remove_dir_all(&parent);
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
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("server.key"), std::fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| unreachable!("{e}"));
    }
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
