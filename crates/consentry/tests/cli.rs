//! The `consentry` command end to end: policy validation and activation, the demo, serving.

mod support;

#[path = "../../api/tests/support/openapi_check.rs"]
mod openapi_check;

#[path = "../../api/tests/support/hostile.rs"]
mod hostile;

#[path = "cli/fuzz.rs"]
mod fuzz;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Output;

use support::{consentry, start_server, start_server_with};

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

/// Issue 8: an attribute written as an escaped string (`context["installed\u{5f}since"]`) is
/// the same attribute to Cedar; the engine must read it too, not search the text for its name.
#[test]
fn policy_test_agrees_with_cedar_on_an_escaped_attribute_name() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/escaped-attribute");
    let output = run(&["policy", "test", fixtures.to_str().unwrap_or_default()]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    assert!(stdout.contains("PASS") && !stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.lines().last().is_some_and(|l| l == "policy tests: 3 passed, 0 failed"), "{stdout}");
}

/// Issue 8: text nested too deeply used to overflow the parser's stack and abort; the
/// command says where in one line instead.
#[test]
fn policy_validate_refuses_deep_nesting_in_one_line() {
    let dir = temp_dir("deep");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| unreachable!("{e}"));
    let file = dir.join("deep.cedar");
    let deep = format!(
        "// deep\npermit (principal, action, resource) when {{ {}true{} }};\n",
        "(".repeat(10_000),
        ")".repeat(10_000)
    );
    std::fs::write(&file, deep).unwrap_or_else(|e| unreachable!("{e}"));
    let output = run(&["policy", "validate", file.to_str().unwrap_or_default()]);
    assert_one_line_error(&output, "not a valid policy");
    let stderr = text(&output.stderr);
    assert!(stderr.contains("deep.cedar:2:") && stderr.contains("nested too deeply"), "{stderr}");
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

/// Runs `consentry` with `CONSENTRY_KEY` set to `key`.
fn run_as(key: &str, args: &[&str]) -> Output {
    consentry().env("CONSENTRY_KEY", key).args(args).output().unwrap_or_else(|e| unreachable!("{e}"))
}

/// `consentry keys create` on the server; returns the key it printed (its last line).
fn server_key(data: &str, role: &str, name: &str) -> String {
    let output = run(&["keys", "create", "--role", role, "--name", name, "--data-dir", data]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    text(&output.stdout).lines().last().unwrap_or_default().trim().to_string()
}

#[test]
fn a_policy_is_submitted_approved_and_activated_by_two_keys_and_every_refusal_is_one_line() {
    let dir = temp_dir("activate");
    let data = dir.to_str().unwrap_or_default().to_string();
    let legacy = repo_file("policies/legacy-2017.cedar");
    let legacy = legacy.to_str().unwrap_or_default();
    // Ann's operator key, written to a private file; Olga's officer key, printed once.
    let ann_file = dir.join("ann.key");
    let made = run(&[
        "keys",
        "create",
        "--role",
        "operator",
        "--name",
        "ann",
        "--out",
        ann_file.to_str().unwrap_or_default(),
        "--data-dir",
        &data,
    ]);
    assert!(made.status.success(), "{}", text(&made.stderr));
    let ann = std::fs::read_to_string(&ann_file).unwrap_or_default().trim().to_string();
    assert!(ann.starts_with("csk_") && !text(&made.stdout).contains(&ann), "{}", text(&made.stdout));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&ann_file).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
        assert_eq!(mode, 0o600);
    }
    let olga = server_key(&data, "privacy_officer", "olga");
    let ann_key = ann_file.to_str().unwrap_or_default();
    let submit = |file: &str| run(&["policy", "submit", file, "--key-file", ann_key, "--data-dir", &data]);

    assert_one_line_error(&run(&["policy", "submit", legacy, "--data-dir", &data]), "needs an operator key");
    let first = submit(legacy);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(text(&first.stdout).contains("as policy version 1 with key"), "{}", text(&first.stdout));
    let bad = dir.join("bad.cedar");
    std::fs::write(&bad, "permit (principal, action, resource) when { context.nope };")
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert_one_line_error(&submit(bad.to_str().unwrap_or_default()), "bad.cedar:1:");
    // Not approved yet; the author cannot approve; a typed name is no key.
    assert_one_line_error(
        &run(&["policy", "activate", "1", "--reason", "launch", "--key-file", ann_key, "--data-dir", &data]),
        "policy version 1 is not approved",
    );
    assert_one_line_error(
        &run(&["policy", "approve", "1", "--key-file", ann_key, "--data-dir", &data]),
        "this needs the role privacy_officer",
    );
    assert_one_line_error(
        &run_as("olga", &["policy", "approve", "1", "--data-dir", &data]),
        "cannot sign in",
    );
    assert_one_line_error(
        &run_as(&olga, &["policy", "approve", "9", "--data-dir", &data]),
        "policy version 9 not found",
    );
    // No proofs kept and none can be run: refused until a privacy officer waives them.
    assert_one_line_error(
        &run_as(&olga, &["policy", "approve", "1", "--solver", "/nonexistent/cvc5", "--data-dir", &data]),
        "has no proofs",
    );
    assert_one_line_error(
        &run_as(&olga, &["policy", "waive", "1", "--reason", "short", "--data-dir", &data]),
        "at least 10 characters",
    );
    let waived = run_as(
        &olga,
        &["policy", "waive", "1", "--reason", "legacy rules, replayed as they were", "--data-dir", &data],
    );
    assert!(
        text(&waived.stdout).contains("waived the proofs of policy version 1"),
        "{}",
        text(&waived.stderr)
    );
    let approved = run_as(&olga, &["policy", "approve", "1", "--data-dir", &data]);
    assert!(approved.status.success(), "{}", text(&approved.stderr));
    assert!(
        text(&approved.stdout).contains("approved policy version 1 with key"),
        "{}",
        text(&approved.stdout)
    );
    assert_one_line_error(
        &run_as(&ann, &["policy", "activate", "1", "--reason", " ", "--data-dir", &data]),
        "reason must not be empty",
    );
    let activated = run_as(&ann, &["policy", "activate", "1", "--reason", "launch", "--data-dir", &data]);
    assert!(activated.status.success(), "{}", text(&activated.stderr));
    assert!(text(&activated.stdout).contains("activated policy version 1 at"), "{}", text(&activated.stdout));
    // Olga's own text needs another officer: her key cannot approve it.
    let own = run_as(&olga, &["policy", "submit", legacy, "--data-dir", &data]);
    assert!(text(&own.stdout).contains("as policy version 2"), "{}", text(&own.stderr));
    assert_one_line_error(&run_as(&olga, &["policy", "approve", "2", "--data-dir", &data]), "submitted it");
    // A key file others can read is refused before it is used.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let open = dir.join("open.key");
        std::fs::write(&open, &ann).unwrap_or_else(|e| unreachable!("{e}"));
        let _ = std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644));
        assert_one_line_error(
            &run(&[
                "policy",
                "submit",
                legacy,
                "--key-file",
                open.to_str().unwrap_or_default(),
                "--data-dir",
                &data,
            ]),
            "can be read by others",
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn keys_are_made_listed_and_revoked_on_the_server_and_bad_input_is_one_line() {
    let dir = temp_dir("keys");
    let data = dir.to_str().unwrap_or_default().to_string();
    let olga = server_key(&data, "privacy_officer", "olga");
    let made = run(&[
        "keys",
        "create",
        "--role",
        "auditor",
        "--name",
        "temp",
        "--expires-in",
        "90d",
        "--data-dir",
        &data,
    ]);
    assert!(
        text(&made.stdout).contains("(temp, auditor) on the server as")
            && text(&made.stdout).contains("expires 20")
    );
    let auditor = text(&made.stdout).lines().last().unwrap_or_default().trim().to_string();
    let listed = run(&["keys", "list", "--data-dir", &data]);
    let table = text(&listed.stdout);
    assert!(listed.status.success() && table.lines().count() == 3, "{table}");
    for secret in [&olga, &auditor] {
        assert!(
            !table.contains(secret.rsplit('_').next().unwrap_or("-")),
            "the listing shows a secret: {table}"
        );
    }
    assert!(table.contains("privacy_officer  live") && table.contains("server, "), "{table}");
    let olga_id = olga.trim_start_matches("csk_").split('_').next().unwrap_or_default().to_string();
    // The last live officer key is kept unless forced; a revoked key fails at its next use.
    assert_one_line_error(
        &run(&["keys", "revoke", &olga_id, "--data-dir", &data]),
        "last live privacy-officer key",
    );
    let forced = run(&["keys", "revoke", &olga_id, "--force", "--data-dir", &data]);
    assert!(text(&forced.stdout).contains(&format!("revoked key {olga_id}")), "{}", text(&forced.stderr));
    assert_one_line_error(
        &run_as(&olga, &["policy", "approve", "1", "--data-dir", &data]),
        "cannot sign in: the API key was revoked",
    );
    assert!(text(&run(&["keys", "list", "--data-dir", &data]).stdout).contains("revoked"));
    assert_one_line_error(&run(&["keys", "revoke", "nosuchkey", "--data-dir", &data]), "not found");
    for (args, says) in [
        (vec!["--role", "root", "--name", "x"], "--role must be operator, privacy_officer or auditor"),
        (vec!["--role", "auditor", "--name", " "], "a key name must be"),
        (vec!["--role", "auditor", "--name", "x", "--expires-in", "1é"], "a key lifetime looks like 90d"),
        (vec!["--role", "auditor", "--name", "x", "--expires-in", "0d"], "a key lifetime looks like 90d"),
        (vec!["--role", "auditor", "--name", "x", "--out", data.as_str()], "already exists"),
    ] {
        let mut all = vec!["keys", "create"];
        all.extend(args);
        all.extend(["--data-dir", &data]);
        assert_one_line_error(&run(&all), says);
    }
    assert_eq!(
        text(&run(&["keys", "list", "--data-dir", &data]).stdout).lines().count(),
        3,
        "refusals made no key"
    );
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
    // With CONSENTRY_SOLVER (CI sets it) the story is proven; without it, no solver is found
    // even if one is on this machine's PATH, so each branch below is decided by the test.
    let solver = std::env::var_os("CONSENTRY_SOLVER").is_some();
    let empty_path = temp_dir("demo-empty-path");
    let demo = || {
        let mut command = consentry();
        command.args([
            "demo",
            "--scale",
            "small",
            "--no-serve",
            "--data-dir",
            dir.to_str().unwrap_or_default(),
        ]);
        if !solver {
            command.env("PATH", &empty_path);
        }
        command.output().unwrap_or_else(|e| unreachable!("cannot run consentry: {e}"))
    };
    let output = demo();
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", text(&output.stderr));
    assert!(
        stdout.contains("2018-04-04  policy v2 groups-2018 ships, with a grandfathering clause"),
        "{stdout}"
    );
    // Issue 10: with a solver, the 2018 review shows the consent invariant broken, with a
    // witness, and the 2019 fix proven; without one, each approval says it rests on a waiver.
    if solver {
        assert!(stdout.contains("2018-04-04  proofs of v2 within consent-2018: VIOLATED for post.author, member.name, member.picture"), "{stdout}");
        assert!(stdout.contains("subject a member who did not consent"), "{stdout}");
        assert!(stdout.contains("consentry would refuse to approve it"), "{stdout}");
        assert!(stdout.contains("proofs of v3 within consent-2018: proven for every field"), "{stdout}");
    } else {
        assert!(stdout.contains("approved on the privacy officer's waiver"), "{stdout}");
    }
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
    // The developers' endpoints checked every signature and id, and refused none.
    assert!(stdout.contains("; 0 refused, 0 duplicates ignored)."), "{stdout}");
    // The same seed gives the same story: everything but wall-clock timings is the same.
    let again = demo();
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
    assert!(text(&verified.stdout).starts_with("OK: stream demo: 1 segments"), "{}", text(&verified.stdout));
    let checkpoint = text(&run(&["ledger", "checkpoint", "--data-dir", data]).stdout).trim().to_string();
    assert!(checkpoint.starts_with("checkpoint v2 node=demo seq="), "{checkpoint}");
    assert!(run(&["ledger", "verify", "--data-dir", data, "--checkpoint", &checkpoint]).status.success());
    let shown = text(
        &run(&["ledger", "show", "--data-dir", data, "--from", "2018-04-04", "--to", "2018-06-01"]).stdout,
    );
    assert!(
        !shown.is_empty() && shown.lines().all(|l| l.contains(" 2018-0") && l.contains("policy=v2")),
        "{shown}"
    );
    let segment = dir.join("ledger").join("demo").join("00000001.seg");
    let mut bytes = std::fs::read(&segment).unwrap_or_default();
    let middle = bytes.len() / 2;
    if let Some(b) = bytes.get_mut(middle) {
        *b ^= 0x01;
    }
    std::fs::write(&segment, bytes).unwrap_or_else(|e| unreachable!("{e}"));
    let tampered = run(&["ledger", "verify", "--data-dir", data]);
    assert_one_line_error(&tampered, "ledger verification failed: stream demo: segment 1, after record");
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
    // The server keys are in the store (no server.key any more), whose files are 0600.
    assert!(!dir.join("server.key").exists());
    assert_eq!(mode(&dir.join("consentry.db")), 0o600);
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
    let checkpoints =
        std::fs::read_to_string(dir.join("ledger").join("test-node").join("checkpoints")).unwrap_or_default();
    assert!(checkpoints.starts_with("checkpoint v2 node=test-node seq=0 "), "{checkpoints}");
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

fn http_put(addr: &str, path: &str, key: &str, body: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| unreachable!("{e}"));
    let request = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap_or_else(|e| unreachable!("{e}"));
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

#[test]
fn serve_refuses_loopback_webhooks_unless_local_webhooks_are_allowed() {
    let body = r#"{"name":"Acme","contact_email":"p@acme.example","webhook_url":"https://127.0.0.1:9/hook"}"#;
    for (setting, allowed) in [(None, false), (Some("0"), false), (Some("true"), true), (Some("1"), true)] {
        let dir = temp_dir(&format!("local-webhooks-{}", setting.unwrap_or("unset")));
        let env: Vec<(&str, &str)> =
            setting.map(|value| vec![("CONSENTRY_ALLOW_LOCAL_WEBHOOKS", value)]).unwrap_or_default();
        let (mut child, addr, said) = start_server_with(&dir, &env);
        let key = std::fs::read_to_string(dir.join("bootstrap-operator.key")).unwrap_or_default();
        let response = http_put(&addr, "/platform/v1/developers/acme", key.trim(), body);
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            said.iter().any(|l| l.contains("local webhooks allowed")),
            allowed,
            "{setting:?}: {said:?}"
        );
        if allowed {
            assert!(response.starts_with("HTTP/1.1 204"), "{setting:?}: {response}");
        } else {
            assert!(
                response.starts_with("HTTP/1.1 422")
                    && response.contains("application/problem+json")
                    && response.contains("127.0.0.1, a loopback address"),
                "{setting:?}: {response}"
            );
        }
    }
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

/// Issue 8 part 3: `policy activate --approved-by NAME` took anyone's word for the approval.
#[test]
fn a_typed_approver_name_activates_nothing() {
    let dir = temp_dir("typed-approver");
    let legacy = repo_file("policies/legacy-2017.cedar");
    let output = run(&[
        "policy",
        "activate",
        legacy.to_str().unwrap_or_default(),
        "--reason",
        "alone",
        "--author",
        "mallory",
        "--approved-by",
        "olga",
        "--data-dir",
        dir.to_str().unwrap_or_default(),
    ]);
    assert!(!output.status.success(), "a typed name approved a policy: {}", text(&output.stdout));
    assert!(!text(&output.stdout).contains("activated"), "{}", text(&output.stdout));
    let _ = std::fs::remove_dir_all(&dir);
}

fn http_send(addr: &str, method: &str, path: &str, key: &str, body: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| unreachable!("{e}"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap_or_else(|e| unreachable!("{e}"));
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
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

fn stop(mut child: std::process::Child) {
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
}

#[test]
fn the_bootstrap_key_file_is_removed_once_another_operator_key_exists() {
    let dir = temp_dir("bootstrap-retire");
    let key_file = dir.join("bootstrap-operator.key");
    let (child, addr, _) = start_server(&dir);
    let bootstrap = std::fs::read_to_string(&key_file).unwrap_or_default().trim().to_string();
    // An auditor key does not make the file unnecessary.
    let made =
        http_send(&addr, "POST", "/platform/v1/keys", &bootstrap, r#"{"name":"aud","role":"auditor"}"#);
    assert!(made.starts_with("HTTP/1.1 201"), "{made}");
    stop(child);
    let (child, addr, said) = start_server(&dir);
    assert!(key_file.exists() && !said.iter().any(|l| l.contains("removed")), "{said:?}");
    // Another operator key does: the next start removes the file and says why.
    let made =
        http_send(&addr, "POST", "/platform/v1/keys", &bootstrap, r#"{"name":"ops2","role":"operator"}"#);
    assert!(made.starts_with("HTTP/1.1 201"), "{made}");
    stop(child);
    let (child, addr, said) = start_server(&dir);
    assert!(!key_file.exists(), "the bootstrap key file is still there: {said:?}");
    assert!(
        said.iter().any(|l| l.contains("removed") && l.contains("another operator key exists")),
        "{said:?}"
    );
    assert!(!said.iter().any(|l| l.contains("created the first operator key")), "{said:?}");
    // The bootstrap key itself stays valid until revoked.
    let listed = http_send(&addr, "GET", "/platform/v1/keys", &bootstrap, "");
    assert!(listed.starts_with("HTTP/1.1 200"), "{listed}");
    stop(child);

    // A revoked bootstrap key's file goes at once.
    let other = temp_dir("bootstrap-revoked");
    let (child, _, _) = start_server(&other);
    stop(child);
    let id = std::fs::read_to_string(other.join("bootstrap-operator.key"))
        .unwrap_or_default()
        .trim_start_matches("csk_")
        .split('_')
        .next()
        .unwrap_or_default()
        .to_string();
    let revoked = run(&["keys", "revoke", &id, "--data-dir", other.to_str().unwrap_or_default()]);
    assert!(
        text(&revoked.stdout).contains("the bootstrap key it holds was revoked"),
        "{}",
        text(&revoked.stdout)
    );
    assert!(!other.join("bootstrap-operator.key").exists());
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other);
}

/// Every file under `dir` with its bytes.
/// Every file of a ledger with its bytes; the lock files writers take (`*.lock`, no records in
/// them) are left out.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_none_or(|e| e != "lock") {
                out.push((path.clone(), std::fs::read(&path).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

/// A ledger of 23 served pages and a checkpoint that covers them, as `serve` leaves it.
fn ledger_of_23_pages(data: &Path) -> PathBuf {
    use consentry_types::{
        AppId, DeveloperId, Disclosure, DisclosureRecord, Field, GroupId, Instant, MemberId, Subject,
    };
    fn id<T>(parsed: Result<T, consentry_types::InvalidId>) -> T {
        parsed.unwrap_or_else(|e| unreachable!("{e}"))
    }
    let dir = data.join("ledger");
    let ledger = consentry_ledger::Ledger::open(&dir, consentry_ledger::LedgerOptions::default())
        .unwrap_or_else(|e| unreachable!("{e}"));
    for i in 0..23i64 {
        let members = (0..3).map(|m| Disclosure {
            subject: Subject::Member(id(MemberId::parse(&format!("m{:02}", (i + m) % 7)))),
            fields: [Field::MemberName, Field::MemberPicture].into_iter().collect(),
        });
        let record = DisclosureRecord {
            at: Instant::from_secs(1_700_000_000 + i),
            request_id: format!("{i:016x}"),
            app: id(AppId::parse("app_0123456789abcdef")),
            developer: id(DeveloperId::parse("acme")),
            group: id(GroupId::parse("hikers")),
            token_hash: format!("{:064x}", 7),
            policy_version: 1,
            route: "GET /v1/groups/{id}/members".into(),
            disclosures: members.collect(),
        };
        ledger.append(&record).unwrap_or_else(|e| unreachable!("{e}"));
    }
    ledger.checkpoint().unwrap_or_else(|e| unreachable!("{e}"));
    dir
}

#[test]
fn a_damaged_ledger_refuses_everywhere_in_one_line_and_repair_keeps_what_chains() {
    let data_dir = temp_dir("repair");
    let ledger = ledger_of_23_pages(&data_dir);
    let data = data_dir.to_str().unwrap_or_default();
    // Issue 8: the top bit of the 6th frame's length flipped.
    let segment = ledger.join("00000001.seg");
    let mut bytes = std::fs::read(&segment).unwrap_or_default();
    let mut start = 0usize;
    for _ in 0..5 {
        let length = bytes.get(start..start + 4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        start += 4 + length as usize + 32;
    }
    if let Some(b) = bytes.get_mut(start + 3) {
        *b ^= 0x80;
    }
    std::fs::write(&segment, &bytes).unwrap_or_else(|e| unreachable!("{e}"));
    let damaged = files_under(&ledger);
    let at = format!("00000001.seg is damaged at byte {start}");

    // Every command that reads or opens the ledger says so in one line, and changes nothing.
    let served = run(&["serve", "--listen", "127.0.0.1:0", "--data-dir", data]);
    assert_one_line_error(&served, &at);
    assert_one_line_error(&run(&["ledger", "checkpoint", "--data-dir", data]), &at);
    assert_one_line_error(&run(&["ledger", "verify", "--data-dir", data]), &format!("at byte {start}"));
    assert_one_line_error(&run(&["ledger", "show", "--data-dir", data]), &at);
    let parquet = data_dir.join("export");
    assert_one_line_error(
        &run(&["ledger", "export", "--data-dir", data, "--parquet", parquet.to_str().unwrap_or_default()]),
        &at,
    );
    assert!(files_under(&ledger) == damaged, "a refusal changed the ledger");

    // Repair says what it would do and, without --yes, does nothing.
    let planned = run(&["ledger", "repair", "--data-dir", data]);
    let said = text(&planned.stdout);
    assert!(planned.status.success(), "{}", text(&planned.stderr));
    assert!(said.contains(&at), "{said}");
    assert!(
        said.contains(&format!("repair keeps bytes 0 to {start} of 00000001.seg: 5 whole frames")),
        "{said}"
    );
    assert!(
        said.contains(&format!("{} bytes after them are not recoverable", bytes.len() - start)),
        "{said}"
    );
    assert!(said.contains("checkpoints already given out cover records up to 23"), "{said}");
    assert!(said.contains("nothing was changed; run again with --yes"), "{said}");
    assert!(files_under(&ledger) == damaged, "a repair without --yes changed the ledger");

    // With --yes: the damaged segment is kept byte for byte, and the ledger opens again.
    let repaired = run(&["ledger", "repair", "--data-dir", data, "--yes"]);
    let said = text(&repaired.stdout);
    assert!(
        repaired.status.success() && said.contains("repaired; recorded in"),
        "{said}{}",
        text(&repaired.stderr)
    );
    let kept: Vec<PathBuf> = files_under(&ledger.join("damaged")).into_iter().map(|(p, _)| p).collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(std::fs::read(&kept[0]).ok(), Some(bytes.clone()), "the damaged segment is kept as it was");
    assert_eq!(std::fs::read(&segment).ok(), bytes.get(..start).map(<[u8]>::to_vec));
    let shown = text(&run(&["ledger", "show", "--data-dir", data]).stdout);
    let records = shown.lines().count();
    assert!(records > 0 && records < 23, "{shown}");
    // Verify now fails honestly against the checkpoint that covered all 23.
    let verified = run(&["ledger", "verify", "--data-dir", data]);
    assert_one_line_error(
        &verified,
        "covers record 23, which the ledger no longer has (the ledger was repaired since",
    );
    // The ledger opens: a new checkpoint, and the server starts.
    let checkpoint = text(&run(&["ledger", "checkpoint", "--data-dir", data]).stdout);
    assert!(checkpoint.starts_with(&format!("checkpoint v1 seq={records} ")), "{checkpoint}");
    let (mut server, addr, _) = start_server(&data_dir);
    assert!(http_get(&addr, "/healthz").starts_with("HTTP/1.1 200"));
    let _ = server.kill();
    let _ = server.wait();
    let again = run(&["ledger", "repair", "--data-dir", data]);
    assert!(text(&again.stdout).starts_with("nothing to repair"), "{}", text(&again.stdout));
    let _ = std::fs::remove_dir_all(&data_dir);
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// Starts `serve` as node `node` on `dir`, its logs (JSON) in `logs`, metrics on `metrics`.
fn start_node(dir: &Path, node: &str, metrics: u16, logs: &Path) -> (std::process::Child, String) {
    use std::io::BufRead;
    let log = std::fs::File::create(logs).unwrap_or_else(|e| unreachable!("{e}"));
    let mut child = consentry()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", dir.to_str().unwrap_or_default()])
        .args(["--node", node, "--metrics-listen", &format!("127.0.0.1:{metrics}"), "--drain-secs", "2"])
        .args(["--log-format", "json"])
        .env("RUST_LOG", "consentry=info")
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| unreachable!("{e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| unreachable!("no stdout"));
    let mut lines = std::io::BufReader::new(stdout).lines();
    let mut addr = None;
    for line in lines.by_ref().take(8).map_while(Result::ok) {
        if let Some(rest) = line.split("listening on http://").nth(1) {
            addr = rest.split_whitespace().next().map(String::from);
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (child, addr.unwrap_or_else(|| unreachable!("node {node} did not start")))
}

/// Two `serve` processes on one data directory (one store, one ledger root): each writes its
/// own stream, one key works on both, `ledger verify` checks both streams. On SIGTERM a node
/// answers `/readyz` 503 at once, still finishes the request in flight, then exits; it counts
/// requests for `/metrics` and logs each as a JSON line with its request id.
#[test]
fn two_nodes_share_a_data_dir_and_a_node_drains_on_sigterm() {
    let dir = temp_dir("two-nodes");
    let (metrics_a, metrics_b) = (free_port(), free_port());
    let (mut a, addr_a) = start_node(&dir, "web-a", metrics_a, &dir.with_extension("a.log"));
    let (mut b, addr_b) = start_node(&dir, "web-b", metrics_b, &dir.with_extension("b.log"));
    let key =
        std::fs::read_to_string(dir.join("bootstrap-operator.key")).unwrap_or_default().trim().to_string();
    for addr in [&addr_a, &addr_b] {
        let ready = http_get(addr, "/readyz");
        assert!(ready.starts_with("HTTP/1.1 200") && ready.ends_with("ready"), "{ready}");
        // The key the first node made works on both: keys live in the store.
        assert!(http_get_with_key(addr, "/platform/v1/keys", &key).starts_with("HTTP/1.1 200"));
    }
    // A request in flight on a: headers and half its body sent.
    let body = r#"{"name":"Ann","picture_url":"https://pics.example/ann.jpg"}"#;
    let mut slow = TcpStream::connect(&addr_a).unwrap_or_else(|e| unreachable!("{e}"));
    let head = format!(
        "PUT /platform/v1/members/ann HTTP/1.1\r\nHost: {addr_a}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    slow.write_all(head.as_bytes()).unwrap_or_else(|e| unreachable!("{e}"));
    slow.write_all(&body.as_bytes()[..10]).unwrap_or_else(|e| unreachable!("{e}"));
    std::thread::sleep(std::time::Duration::from_millis(200));
    let metrics = http_get(&format!("127.0.0.1:{metrics_a}"), "/metrics");
    let _ = std::process::Command::new("kill").args(["-TERM", &a.id().to_string()]).status();
    // Not ready at once, while it still answers.
    let mut readiness = String::new();
    for _ in 0..50 {
        readiness = http_get(&addr_a, "/readyz");
        if readiness.starts_with("HTTP/1.1 503") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(readiness.starts_with("HTTP/1.1 503") && readiness.contains("draining"), "{readiness}");
    // The request in flight completes.
    slow.write_all(&body.as_bytes()[10..]).unwrap_or_else(|e| unreachable!("{e}"));
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 2"), "the request in flight was lost: {answer:?}");
    assert!(a.wait().map(|s| s.success()).unwrap_or(false), "node a did not exit cleanly");
    // b still serves what a wrote.
    assert!(http_get_with_key(&addr_b, "/platform/v1/keys", &key).starts_with("HTTP/1.1 200"));
    let _ = std::process::Command::new("kill").args(["-TERM", &b.id().to_string()]).status();
    let _ = b.wait();
    // Metrics: requests by route and status, the ledger's syncs.
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains(
            r#"consentry_http_requests_total{method="GET",route="/platform/v1/keys",status="200"} 1"#
        ),
        "{metrics}"
    );
    for name in [
        "consentry_http_request_duration_seconds_bucket",
        "consentry_decisions_total",
        "consentry_webhook_outbox_pending",
        "consentry_cases_open",
        "consentry_ledger_sync_duration_seconds_count",
    ] {
        assert!(metrics.contains(name), "{name} missing: {metrics}");
    }
    // Logs: one JSON line per request, with its request id.
    let logs = std::fs::read_to_string(dir.with_extension("a.log")).unwrap_or_default();
    let request_lines: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "consentry::request")
        .collect();
    assert!(
        request_lines.iter().any(|v| v["route"] == "/platform/v1/members/{id}"
            && v["status"] == 204
            && v["request_id"].as_str().is_some_and(|r| r.len() == 16)),
        "{logs}"
    );
    // Each node wrote its own stream; verify checks both; a checkpoint names its node.
    let verified = text(&run(&["ledger", "verify", "--data-dir", dir.to_str().unwrap_or_default()]).stdout);
    assert!(verified.contains("OK: stream web-a:") && verified.contains("OK: stream web-b:"), "{verified}");
    let kept =
        std::fs::read_to_string(dir.join("ledger").join("web-a").join("checkpoints")).unwrap_or_default();
    assert!(kept.starts_with("checkpoint v2 node=web-a "), "{kept}");
    let _ = std::fs::remove_dir_all(&dir);
}
