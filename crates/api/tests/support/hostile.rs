//! Hostile requests for any operation of the OpenAPI document, from a seeded generator: huge,
//! negative and empty values, strings over 64 KiB, non-UTF-8 bytes (percent-encoded in paths
//! and queries, raw in bodies), JSON nested 10,000 levels, wrong types, unknown and missing
//! fields, wrong content types, and missing, malformed or wrong-role credentials. Shared by
//! the router fuzz (`tests/fuzz.rs`) and the socket fuzz of the `consentry` crate.

#![allow(dead_code)] // each test binary that includes this uses a different part of it
#![allow(clippy::indexing_slicing)] // serde_json indexing returns Null, it never panics

use serde_json::{json, Map, Value};

use super::openapi_check::{Document, Operation};

/// SplitMix64: small, seeded, the same sequence everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        let i = self.below(items.len());
        items[i].clone()
    }
}

/// The credentials of a world the fuzz runs against.
#[derive(Clone, Default)]
pub struct Credentials {
    pub operator: String,
    pub auditor: String,
    pub officer: String,
    pub revoked: String,
    pub app_token: String,
    /// Another token of the same app, the one forms name (revocation must not end `app_token`).
    pub form_token: String,
    pub client_id: String,
    pub client_secret: String,
    /// Client credentials of another developer's app, for its developer's case routes.
    pub developer_client_id: String,
    pub developer_client_secret: String,
}

/// One request, as bytes: `target` is the path and query, ASCII, percent-encoded.
#[derive(Clone, Debug)]
pub struct HostileRequest {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// What was hostile about it, for the failure message.
    pub what: Vec<String>,
}

impl HostileRequest {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }

    /// One line naming the request, short enough to print.
    pub fn describe(&self) -> String {
        let target: String = self.target.chars().take(160).collect();
        format!("{} {target} [{}] body {} bytes", self.method, self.what.join("; "), self.body.len())
    }
}

/// Longer than 64 KiB.
pub fn long_text() -> String {
    "a".repeat(70_000)
}

/// JSON nested `levels` deep.
pub fn nested_json(levels: usize) -> String {
    format!("{}{}", "[".repeat(levels), "]".repeat(levels))
}

/// Values for a path or query parameter, as they go on the wire (percent-encoded where they
/// are not URL text): each hostile in its own way.
fn hostile_parameter(rng: &mut Rng, longest: usize) -> (String, &'static str) {
    let choices: [(&str, &'static str); 24] = [
        ("", "empty"),
        ("-1", "negative"),
        ("-9223372036854775809", "below i64"),
        ("18446744073709551616", "above u64"),
        ("4294967296", "above u32"),
        ("99999999999999999999999999999999", "huge"),
        ("1e308", "a float"),
        ("0", "zero"),
        ("NaN", "not a number"),
        ("%FF%FE%FD", "non-UTF-8"),
        ("%C3%28", "broken UTF-8"),
        ("%ED%A0%80", "a UTF-16 surrogate as UTF-8"),
        ("%00", "a NUL"),
        ("%0D%0Aset-cookie:%20x", "a header injection"),
        ("..%2F..%2Fetc%2Fpasswd", "a traversal"),
        ("%2F", "an encoded slash"),
        ("%25", "a percent"),
        ("%E2%80%AE%F0%9F%98%80", "bidi and emoji"),
        ("'%20OR%201%3D1%20--", "SQL"),
        ("%3Cscript%3E", "markup"),
        ("csk_0000_fake", "a key-looking id"),
        ("2019-13-45T99%3A99%3A99Z", "a broken instant"),
        ("9999999999999999d", "a huge duration"),
        ("", "long"),
    ];
    let (value, what) = rng.pick(&choices);
    if what == "long" {
        return ("a".repeat(longest.min(70_000)), "long");
    }
    (value.to_string(), what)
}

/// Percent-encodes everything but unreserved characters.
pub fn encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A value that the schema allows, for building a body to spoil in one place.
fn sample(doc: &Document, schema: &Value, rng: &mut Rng, depth: usize) -> Value {
    let Ok(schema) = doc.resolve(schema) else { return Value::Null };
    if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
        let choice = rng.pick(one);
        return sample(doc, &choice, rng, depth + 1);
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return rng.pick(values);
    }
    let types: Vec<String> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => {
            ts.iter().filter_map(|t| t.as_str().map(String::from)).filter(|t| t != "null").collect()
        }
        _ => vec![],
    };
    match types.first().map(String::as_str) {
        Some("string") => json!(rng.pick(&[
            "x",
            "a name",
            "privacy@example.org",
            "https://example.org/h",
            "30d",
            "operator"
        ])),
        Some("integer") => json!(rng.below(3) + 1),
        Some("number") => json!(1.5),
        Some("boolean") => json!(true),
        Some("array") if depth < 4 => {
            let items = schema.get("items").cloned().unwrap_or(Value::Null);
            Value::Array((0..rng.below(3)).map(|_| sample(doc, &items, rng, depth + 1)).collect())
        }
        Some("object") if depth < 4 => {
            let mut object = Map::new();
            let required: Vec<&str> =
                schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            for (name, property) in schema["properties"].as_object().into_iter().flatten() {
                if required.contains(&name.as_str()) || rng.chance(50) {
                    object.insert(name.clone(), sample(doc, property, rng, depth + 1));
                }
            }
            Value::Object(object)
        }
        _ => Value::Null,
    }
}

/// JSON text that is hostile in place of a value.
fn hostile_json_value(rng: &mut Rng) -> (String, &'static str) {
    let choices: [(&str, &'static str); 22] = [
        ("-1", "negative"),
        ("-9223372036854775809", "below i64"),
        ("18446744073709551616", "above u64"),
        ("1e400", "beyond f64"),
        ("-0.0", "negative zero"),
        ("0.5", "a fraction"),
        ("4294967296", "above u32"),
        ("\"\"", "empty"),
        ("null", "null"),
        ("true", "a boolean"),
        ("[]", "an array"),
        ("{}", "an object"),
        ("\"\\ud800\"", "a lone surrogate"),
        ("\"\\u0000\"", "a NUL"),
        ("\"\u{202e}\u{1F600}\"", "bidi and emoji"),
        ("\"' OR 1=1 --\"", "SQL"),
        ("\"<script>\"", "markup"),
        ("\"9999999999999999d\"", "a huge duration"),
        ("\"2019-13-45T99:99:99Z\"", "a broken instant"),
        ("", "long"),
        ("", "deep"),
        ("[1,2,3]", "a list"),
    ];
    let (text, what) = rng.pick(&choices);
    match what {
        "long" => (format!("\"{}\"", long_text()), what),
        "deep" => (nested_json(10_000), what),
        _ => (text.to_string(), what),
    }
}

const PLACEHOLDER: &str = "\u{1}HOSTILE\u{1}";

/// A JSON body for `schema`, spoiled in one way.
fn hostile_json_body(doc: &Document, schema: &Value, rng: &mut Rng) -> (Vec<u8>, String) {
    let mut body = sample(doc, schema, rng, 0);
    let resolved = doc.resolve(schema).cloned().unwrap_or_default();
    let names: Vec<String> =
        resolved["properties"].as_object().map(|p| p.keys().cloned().collect()).unwrap_or_default();
    match rng.below(10) {
        0..=4 if !names.is_empty() => {
            let name = rng.pick(&names);
            if let Some(object) = body.as_object_mut() {
                object.insert(name.clone(), Value::String(PLACEHOLDER.into()));
            }
            let (value, what) = hostile_json_value(rng);
            let text = body.to_string().replace(&format!("\"{}\"", "\\u0001HOSTILE\\u0001"), &value);
            (text.into_bytes(), format!("{name}: {what}"))
        }
        5 => {
            if let Some(object) = body.as_object_mut() {
                object.insert("is_admin".into(), json!(true));
            }
            (body.to_string().into_bytes(), "an unknown field".into())
        }
        6 if !names.is_empty() => {
            let required: Vec<String> = resolved["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
            let missing = if required.is_empty() { rng.pick(&names) } else { rng.pick(&required) };
            if let Some(object) = body.as_object_mut() {
                object.remove(&missing);
            }
            (body.to_string().into_bytes(), format!("{missing} missing"))
        }
        _ => whole_body(rng),
    }
}

/// A body hostile as a whole.
fn whole_body(rng: &mut Rng) -> (Vec<u8>, String) {
    let (body, what): (Vec<u8>, &str) = match rng.below(11) {
        0 => (Vec::new(), "an empty body"),
        1 => (b"null".to_vec(), "null"),
        2 => (b"[]".to_vec(), "an array"),
        3 => (b"{".to_vec(), "truncated JSON"),
        4 => (nested_json(10_000).into_bytes(), "JSON nested 10,000 levels"),
        5 => (vec![0xff, 0xfe, b'{', b'}', 0x80], "non-UTF-8 bytes"),
        6 => ("\u{feff}{}".as_bytes().to_vec(), "a byte order mark"),
        7 => (br#"{"name":"a","name":"b","role":"x","role":"y"}"#.to_vec(), "duplicate keys"),
        8 => (format!("{{\"name\":\"{}\"}}", "b".repeat(70_000)).into_bytes(), "a body over 64 KiB"),
        9 => (vec![b' '; 1_100_000], "a body over 1 MiB"),
        _ => (format!("{{\"a\":{}}}", nested_json(5_000)).into_bytes(), "a field nested 5,000 levels"),
    };
    (body, what.to_string())
}

/// Policy text, hostile.
fn hostile_text(rng: &mut Rng) -> (Vec<u8>, String) {
    let rule = |body: String| format!("permit (principal, action, resource) when {{ {body} }};");
    let (body, what): (Vec<u8>, &str) = match rng.below(8) {
        0 => (Vec::new(), "empty policy text"),
        1 => (
            rule(format!("{}true{}", "(".repeat(10_000), ")".repeat(10_000))).into_bytes(),
            "parentheses 10,000 deep",
        ),
        2 => (
            rule(format!("{}1{}.contains(1)", "[".repeat(10_000), "]".repeat(10_000))).into_bytes(),
            "sets 10,000 deep",
        ),
        3 => (vec![0xff, 0xfe, b'p', 0x80], "non-UTF-8 text"),
        4 => (vec![b'a'; 1_100_000], "text over 1 MiB"),
        5 => (
            "forbid (principal, action, resource) unless { context.\"\u{0}\" };".as_bytes().to_vec(),
            "a NUL in an attribute",
        ),
        6 => (rule(format!("{}context.installed", "!".repeat(10_000))).into_bytes(), "10,000 negations"),
        _ => (b"permit(principal, action, resource);".to_vec(), "a plain permit"),
    };
    (body, what.to_string())
}

/// A form body for `schema`, spoiled in one way.
fn hostile_form(
    doc: &Document,
    schema: &Value,
    credentials: &Credentials,
    rng: &mut Rng,
) -> (Vec<u8>, String) {
    let resolved = doc.resolve(schema).cloned().unwrap_or_default();
    let names: Vec<String> =
        resolved["properties"].as_object().map(|p| p.keys().cloned().collect()).unwrap_or_default();
    let mut pairs: Vec<(String, String)> = Vec::new();
    for name in &names {
        let value = match name.as_str() {
            "grant_type" => "client_credentials".to_string(),
            "client_id" => credentials.client_id.clone(),
            "client_secret" => credentials.client_secret.clone(),
            "token" => credentials.form_token.clone(),
            _ => "x".to_string(),
        };
        if rng.chance(70) {
            pairs.push((name.clone(), encode(&value)));
        }
    }
    let what = match rng.below(5) {
        0 | 1 if !names.is_empty() => {
            let name = rng.pick(&names);
            let (value, what) = hostile_parameter(rng, 70_000);
            pairs.retain(|(n, _)| *n != name);
            pairs.push((name.clone(), value));
            format!("{name}: {what}")
        }
        2 => {
            pairs.push(("redirect_uri".into(), "https%3A%2F%2Fevil.example".into()));
            "an unknown parameter".into()
        }
        3 if !pairs.is_empty() => {
            let again = pairs[0].clone();
            pairs.push(again);
            "a repeated parameter".into()
        }
        _ => {
            pairs.push(("%FF%FE".into(), "%C3%28".into()));
            "a non-UTF-8 name".into()
        }
    };
    let body = pairs.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("&");
    (body.into_bytes(), what)
}

/// `Authorization` for an operation, valid or not.
fn authorization(
    operation: &Operation,
    credentials: &Credentials,
    rng: &mut Rng,
) -> (Option<Vec<u8>>, String) {
    use base64::Engine as _;
    let basic = |id: &str, secret: &str| {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")))
    };
    let scheme = operation.security().first().cloned().unwrap_or_default();
    let valid = match scheme.as_str() {
        "operator_key" => format!("Bearer {}", credentials.operator),
        "app_token" => format!("Bearer {}", credentials.app_token),
        "client_basic" => basic(&credentials.developer_client_id, &credentials.developer_client_secret),
        _ if operation.template.starts_with("/oauth/") && rng.chance(40) => {
            basic(&credentials.client_id, &credentials.client_secret)
        }
        _ => return (None, "no credentials needed".into()),
    };
    let (value, what): (Option<Vec<u8>>, &str) = match rng.below(24) {
        0..=11 => (Some(valid.into_bytes()), "valid credentials"),
        12 => (None, "no credentials"),
        13 => (Some(format!("Bearer {}", credentials.auditor).into_bytes()), "an auditor key"),
        14 => (Some(format!("Bearer {}", credentials.officer).into_bytes()), "a privacy officer key"),
        15 => (Some(format!("Bearer {}", credentials.revoked).into_bytes()), "a revoked key"),
        16 => (Some(format!("Bearer {}", credentials.app_token).into_bytes()), "an app token"),
        17 => (Some(format!("Bearer {}", credentials.operator).into_bytes()), "an operator key"),
        18 => (Some(b"Bearer".to_vec()), "a scheme without a token"),
        19 => (Some(format!("Bearer csk_{}", "a".repeat(70_000)).into_bytes()), "a 70 KiB token"),
        20 => (Some(vec![b'B', b'e', b'a', b'r', b'e', b'r', b' ', 0xff, 0xfe]), "non-UTF-8 token"),
        21 => (Some(b"Basic !!!not-base64!!!".to_vec()), "broken Basic"),
        22 => (Some(basic(&credentials.client_id, "wrong").into_bytes()), "a wrong client secret"),
        _ => (
            Some(
                format!("Basic {}", base64::engine::general_purpose::STANDARD.encode([0xff, b':', 0xfe]))
                    .into_bytes(),
            ),
            "non-UTF-8 Basic",
        ),
    };
    (value, what.to_string())
}

/// A content type for a body of `declared`, right or not.
fn content_type(declared: &str, rng: &mut Rng) -> (Option<Vec<u8>>, Option<&'static str>) {
    match rng.below(12) {
        0 => (None, Some("no content type")),
        1 => (Some(b"text/plain".to_vec()), Some("text/plain")),
        2 => (Some(b"application/x-www-form-urlencoded".to_vec()), Some("a form content type")),
        3 => (Some(b"application/json; charset=utf-16".to_vec()), Some("a UTF-16 charset")),
        4 => (Some(vec![b'a', 0xff, b'/', b'b']), Some("a non-UTF-8 content type")),
        5 => (Some(b"application/jsonx".to_vec()), Some("application/jsonx")),
        _ => (Some(declared.as_bytes().to_vec()), None),
    }
}

/// A request for `operation` with hostile values where the generator chooses; `valid` gives a
/// valid value for a path or query parameter (template, name); the target stays within
/// `longest` bytes (a router cannot build a URI over 64 KiB; a socket can).
pub fn generate(
    doc: &Document,
    operation: &Operation,
    credentials: &Credentials,
    valid: &dyn Fn(&str, &str) -> String,
    longest: usize,
    rng: &mut Rng,
) -> HostileRequest {
    let mut what = Vec::new();
    let mut path = String::new();
    for segment in operation.template.split('/').skip(1) {
        path.push('/');
        match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) if rng.chance(45) => {
                let (value, kind) = hostile_parameter(rng, longest / 2);
                what.push(format!("{name}: {kind}"));
                path.push_str(&value);
            }
            Some(name) => path.push_str(&encode(&valid(&operation.template, name))),
            None => path.push_str(segment),
        }
    }
    let mut query: Vec<String> = Vec::new();
    for parameter in operation.parameters("query") {
        let name = parameter["name"].as_str().unwrap_or_default().to_string();
        match rng.below(4) {
            0 => {}
            1 => query.push(format!("{name}={}", encode(&valid(&operation.template, &name)))),
            _ => {
                let (value, kind) = hostile_parameter(rng, longest / 2);
                what.push(format!("{name}=: {kind}"));
                query.push(format!("{name}={value}"));
            }
        }
    }
    if rng.chance(10) {
        query.push("unknown=1".into());
        what.push("an unknown query parameter".into());
    }
    if rng.chance(5) && !query.is_empty() {
        query.push(query[0].clone());
        what.push("a repeated query parameter".into());
    }
    if rng.chance(5) {
        query.push("%FF%FE=%C3%28".into());
        what.push("a non-UTF-8 query".into());
    }
    let mut target = path;
    if !query.is_empty() {
        target = format!("{target}?{}", query.join("&"));
    }
    if target.len() > longest {
        target.truncate(longest);
        while target.ends_with('%')
            || target.get(target.len().saturating_sub(2)..).is_some_and(|t| t.starts_with('%'))
        {
            target.pop();
        }
    }

    let mut headers = Vec::new();
    let (auth, auth_what) = authorization(operation, credentials, rng);
    what.push(auth_what);
    if let Some(auth) = auth {
        headers.push(("authorization".to_string(), auth));
    }
    let mut body = Vec::new();
    if let Some((media, schema)) = operation.request_media().into_iter().next() {
        let (spoiled, body_what) = match (media.as_str(), schema) {
            ("application/json", Some(schema)) => hostile_json_body(doc, &schema, rng),
            ("application/x-www-form-urlencoded", Some(schema)) => {
                hostile_form(doc, &schema, credentials, rng)
            }
            ("text/plain", _) => hostile_text(rng),
            _ => whole_body(rng),
        };
        body = spoiled;
        what.push(body_what);
        let (kind, kind_what) = content_type(&media, rng);
        if let Some(kind) = kind {
            headers.push(("content-type".to_string(), kind));
        }
        what.extend(kind_what.map(String::from));
    } else if rng.chance(10) {
        let (spoiled, body_what) = whole_body(rng);
        body = spoiled;
        what.push(format!("a body where none is read: {body_what}"));
        headers.push(("content-type".to_string(), b"application/json".to_vec()));
    }
    HostileRequest { method: operation.method.to_uppercase(), target, headers, body, what }
}
