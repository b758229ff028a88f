//! `consentry policy test`: policy test files (`policies/tests/*.json`), each case a request,
//! its facts and the expected decision, run through the serving engine and plain Cedar.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use consentry_policy::{compile, naive_decide, Engine, PageFacts, SubjectFacts};
use consentry_types::{AppId, AppStatus, Field, GroupId, Instant, MemberId, Role};
use serde_json::{Map, Value};

const CASE_KEYS: [&str; 8] =
    ["name", "field", "app_status", "category", "installed", "installed_since", "subject", "expect"];
const SUBJECT_KEYS: [&str; 3] = ["is_member", "role", "consented_profile"];

fn keys_known(object: &Map<String, Value>, known: &[&str], place: &str) -> Result<()> {
    if let Some(unknown) = object.keys().find(|k| !known.contains(&k.as_str())) {
        bail!("{place}: unknown key {unknown:?} (known: {})", known.join(", "));
    }
    Ok(())
}

fn boolean(object: &Map<String, Value>, key: &str, default: bool, place: &str) -> Result<bool> {
    match object.get(key) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => bail!("{place}: {key} must be true or false"),
    }
}

fn text<'a>(object: &'a Map<String, Value>, key: &str, place: &str) -> Result<Option<&'a str>> {
    match object.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => bail!("{place}: {key} must be a string"),
    }
}

/// One case, parsed.
struct Case {
    name: String,
    field: Field,
    page: PageFacts,
    subject: SubjectFacts,
    allow: bool,
}

fn parse_case(value: &Value, place: &str) -> Result<Case> {
    let object = value.as_object().with_context(|| format!("{place}: a case must be an object"))?;
    keys_known(object, &CASE_KEYS, place)?;
    let name =
        text(object, "name", place)?.with_context(|| format!("{place}: name is required"))?.to_string();
    let place = format!("{place} ({name})");
    let field = text(object, "field", &place)?.with_context(|| format!("{place}: field is required"))?;
    let field = Field::parse(field).map_err(|e| anyhow::anyhow!("{place}: {e}"))?;
    let status = text(object, "app_status", &place)?.unwrap_or("active");
    let app_status = AppStatus::parse(status)
        .with_context(|| format!("{place}: app_status must be active, suspended or banned"))?;
    let installed = boolean(object, "installed", true, &place)?;
    let installed_since = match text(object, "installed_since", &place)? {
        Some(t) => Instant::parse(t).map_err(|e| anyhow::anyhow!("{place}: {e}"))?.secs(),
        None if installed => Instant::parse("2019-01-01").map_err(|e| anyhow::anyhow!("{e}"))?.secs(),
        None => 0,
    };
    let subject = match object.get("subject") {
        None => SubjectFacts::NONE,
        Some(Value::Object(s)) => {
            keys_known(s, &SUBJECT_KEYS, &format!("{place} subject"))?;
            let role = match text(s, "role", &place)? {
                Some(r) => {
                    Some(Role::parse(r).with_context(|| format!("{place}: role must be member or admin"))?)
                }
                None => None,
            };
            SubjectFacts {
                is_member: boolean(s, "is_member", false, &place)?,
                role,
                consented_profile: boolean(s, "consented_profile", false, &place)?,
            }
        }
        Some(_) => bail!("{place}: subject must be an object"),
    };
    let allow = match text(object, "expect", &place)? {
        Some("allow") => true,
        Some("deny") => false,
        _ => bail!("{place}: expect must be \"allow\" or \"deny\""),
    };
    let page = PageFacts {
        app: AppId::parse("app-under-test").map_err(|e| anyhow::anyhow!("{e}"))?,
        app_status,
        app_category: text(object, "category", &place)?.unwrap_or("analytics").to_string(),
        group: GroupId::parse("group-under-test").map_err(|e| anyhow::anyhow!("{e}"))?,
        installed,
        installed_since,
    };
    Ok(Case { name, field, page, subject, allow })
}

fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect();
            inside.sort();
            found.extend(inside);
        } else {
            found.push(path.clone());
        }
    }
    if found.is_empty() {
        bail!("no policy test files found");
    }
    Ok(found)
}

/// Runs every case; prints one line a case and `N passed, M failed`; fails if any failed.
pub fn run(paths: &[PathBuf]) -> Result<()> {
    let engine = Engine::new();
    let member = MemberId::parse("subject-under-test").map_err(|e| anyhow::anyhow!("{e}"))?;
    let (mut passed, mut failed) = (0, 0);
    for file in files(paths)? {
        let place = file.display().to_string();
        let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {place}"))?;
        let json: Value =
            serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{place}: not valid JSON: {e}"))?;
        let object =
            json.as_object().with_context(|| format!("{place}: expected an object with policy and cases"))?;
        keys_known(object, &["policy", "cases"], &place)?;
        let policy_file = object
            .get("policy")
            .and_then(Value::as_str)
            .with_context(|| format!("{place}: policy (a path) is required"))?;
        let policy_path = file.parent().unwrap_or(Path::new(".")).join(policy_file);
        let policy_text = std::fs::read_to_string(&policy_path)
            .with_context(|| format!("{place}: cannot read {}", policy_path.display()))?;
        let policy =
            compile(0, &policy_text).map_err(|e| anyhow::anyhow!("{}: {e}", policy_path.display()))?;
        let cases = object
            .get("cases")
            .and_then(Value::as_array)
            .with_context(|| format!("{place}: cases (a list) is required"))?;
        for (i, case) in cases.iter().enumerate() {
            let case = parse_case(case, &format!("{place} case {}", i + 1))?;
            let served = engine.page(&policy, case.page.clone()).allows(case.field, case.subject)?;
            let plain = naive_decide(&policy, &case.page, case.field, Some((&member, case.subject)))?;
            let word = |b: bool| if b { "allow" } else { "deny" };
            if served == case.allow && plain == case.allow {
                passed += 1;
                println!("PASS {place}: {}", case.name);
            } else {
                failed += 1;
                println!(
                    "FAIL {place}: {}: expected {}, the engine says {}, plain Cedar says {}",
                    case.name,
                    word(case.allow),
                    word(served),
                    word(plain)
                );
            }
        }
    }
    println!("policy tests: {passed} passed, {failed} failed");
    if failed > 0 {
        bail!("{failed} policy test(s) failed");
    }
    Ok(())
}
