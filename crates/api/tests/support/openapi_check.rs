//! Checks HTTP exchanges against consentry's OpenAPI document: the (method, path template)
//! exists, the status is declared for it, the content type is the declared one, declared
//! headers are present, and the body validates against the declared schema; an exchange the
//! server accepted (2xx) must also have sent only what the document lets a client send.
//!
//! The validator covers the subset of JSON Schema that utoipa emits (`$ref`, `type`,
//! `properties`, `required`, `additionalProperties`, `items`, `oneOf`/`anyOf`/`allOf`, `enum`,
//! bounds, integer and number formats) and refuses any other keyword, so a schema it cannot
//! check fails loudly instead of passing. Response objects are checked strictly: a property
//! the schema does not name is a violation unless the schema allows additional properties.

#![allow(clippy::indexing_slicing)] // serde_json indexing returns Null, it never panics
#![allow(dead_code)] // each test binary that includes this uses a different part of it

use serde_json::{Map, Value};

/// One operation of the document.
pub struct Operation {
    pub method: String,
    pub template: String,
    segments: Vec<Segment>,
    pub value: Value,
}

enum Segment {
    Literal(String),
    Parameter(String),
}

impl Operation {
    /// `METHOD /template`, as violations and counts name it.
    pub fn name(&self) -> String {
        format!("{} {}", self.method.to_uppercase(), self.template)
    }

    /// The declared parameters `location` (`path`, `query`, `header`).
    pub fn parameters<'a>(&'a self, location: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.value["parameters"].as_array().into_iter().flatten().filter(move |p| p["in"] == location)
    }

    /// The declared request body's media types and schemas.
    pub fn request_media(&self) -> Vec<(String, Option<Value>)> {
        self.value["requestBody"]["content"]
            .as_object()
            .map(|content| {
                content.iter().map(|(media, c)| (media.clone(), c.get("schema").cloned())).collect()
            })
            .unwrap_or_default()
    }

    /// The security schemes the operation names (empty: none).
    pub fn security(&self) -> Vec<String> {
        self.value["security"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_object())
            .flat_map(|s| s.keys().cloned())
            .collect()
    }

    /// The declared statuses.
    pub fn statuses(&self) -> Vec<String> {
        self.value["responses"].as_object().map(|r| r.keys().cloned().collect()).unwrap_or_default()
    }

    fn path_values<'p>(&self, path: &'p str) -> Option<Vec<(&str, &'p str)>> {
        let parts: Vec<&str> = path.split('/').collect();
        if parts.len() != self.segments.len() {
            return None;
        }
        let mut values = Vec::new();
        let last = parts.len().saturating_sub(1);
        for (i, (segment, part)) in self.segments.iter().zip(parts).enumerate() {
            match segment {
                Segment::Literal(literal) if literal == part => {}
                // As the router does, a parameter matches an empty segment, except at the end.
                Segment::Parameter(name) if i < last || !part.is_empty() => {
                    values.push((name.as_str(), part))
                }
                _ => return None,
            }
        }
        Some(values)
    }

    fn literals(&self) -> usize {
        self.segments.iter().filter(|s| matches!(s, Segment::Literal(_))).count()
    }
}

/// Where a request lands in the document.
pub enum Route<'d> {
    Operation(&'d Operation),
    /// The path is a template of the document, the method is none of its operations.
    WrongMethod,
    /// No template matches.
    Unknown,
}

/// What a response was, for counting.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seen {
    pub operation: String,
    pub status: u16,
}

/// The document and its operations.
pub struct Document {
    pub value: Value,
    operations: Vec<Operation>,
}

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// A response as the checker sees it.
pub struct Exchange<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub request_content_type: Option<&'a str>,
    pub request_body: &'a [u8],
    pub status: u16,
    pub content_type: Option<&'a str>,
    /// Names of the response's headers, lowercase.
    pub headers: Vec<String>,
    pub body: &'a [u8],
}

/// The media type without parameters, lowercase.
pub fn media_type(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

fn is_json(media: &str) -> bool {
    media == "application/json" || media.ends_with("+json")
}

impl Document {
    pub fn new(value: Value) -> Result<Document, String> {
        let paths = value["paths"].as_object().ok_or("the document has no paths")?;
        let mut operations = Vec::new();
        for (template, item) in paths {
            let item = item.as_object().ok_or_else(|| format!("{template} is not an object"))?;
            for (method, operation) in item {
                if !METHODS.contains(&method.as_str()) {
                    return Err(format!("{template}: {method} is not an HTTP method"));
                }
                let segments = template
                    .split('/')
                    .map(|s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                        Some(name) => Segment::Parameter(name.to_string()),
                        None => Segment::Literal(s.to_string()),
                    })
                    .collect();
                operations.push(Operation {
                    method: method.clone(),
                    template: template.clone(),
                    segments,
                    value: operation.clone(),
                });
            }
        }
        Ok(Document { value, operations })
    }

    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    /// Every (operation, status) pair the document declares.
    pub fn declared_pairs(&self) -> usize {
        self.operations.iter().map(|o| o.statuses().len()).sum()
    }

    /// The operation `method path` lands on: the template with the most literal segments.
    pub fn route(&self, method: &str, path: &str) -> Route<'_> {
        let method = method.to_ascii_lowercase();
        let matching = self.operations.iter().filter(|o| o.path_values(path).is_some());
        let best = matching.clone().map(Operation::literals).max();
        let Some(best) = best else { return Route::Unknown };
        match matching.filter(|o| o.literals() == best).find(|o| o.method == method) {
            Some(operation) => Route::Operation(operation),
            None => Route::WrongMethod,
        }
    }

    /// Follows `$ref`s into the document (`#/components/...`).
    pub fn resolve<'v>(&'v self, value: &'v Value) -> Result<&'v Value, String> {
        let mut current = value;
        for _ in 0..32 {
            let Some(reference) = current.get("$ref").and_then(Value::as_str) else { return Ok(current) };
            let pointer = reference.strip_prefix('#').ok_or_else(|| format!("external $ref {reference}"))?;
            current = self.value.pointer(pointer).ok_or_else(|| format!("dangling $ref {reference}"))?;
        }
        Err("a $ref chain longer than 32".into())
    }

    /// The Problem schema every error body must follow.
    pub fn problem_schema(&self) -> Value {
        serde_json::json!({"$ref": "#/components/schemas/Problem"})
    }

    /// Checks one exchange; `Ok` names the (operation, status) pair it was.
    pub fn check(&self, exchange: &Exchange<'_>) -> Result<Seen, String> {
        let Exchange { method, path, status, .. } = *exchange;
        let at = format!("{} {path} → {status}", method.to_uppercase());
        match self.route(method, path) {
            Route::Operation(operation) => {
                self.check_response(operation, exchange).map_err(|e| format!("{at}: {e}"))?;
                if (200..300).contains(&status) {
                    self.check_request(operation, exchange).map_err(|e| format!("{at}: {e}"))?;
                }
                Ok(Seen { operation: operation.name(), status })
            }
            Route::WrongMethod => {
                self.check_problem(405, exchange).map_err(|e| format!("{at}: {e}"))?;
                Ok(Seen { operation: "(a path without this method)".into(), status })
            }
            Route::Unknown => {
                self.check_problem(404, exchange).map_err(|e| format!("{at}: {e}"))?;
                Ok(Seen { operation: "(no such route)".into(), status })
            }
        }
    }

    /// An answer the stack gives outside any operation: `status` as problem+json.
    pub fn check_problem(&self, status: u16, exchange: &Exchange<'_>) -> Result<(), String> {
        if exchange.status != status {
            return Err(format!("expected {status} here, got {}", exchange.status));
        }
        let media = exchange.content_type.map(media_type);
        if media.as_deref() != Some("application/problem+json") {
            return Err(format!("content type {media:?}, not application/problem+json"));
        }
        let body: Value =
            serde_json::from_slice(exchange.body).map_err(|e| format!("body is not JSON: {e}"))?;
        self.validate(&self.problem_schema(), &body, "body", true)?;
        if body["status"] != status {
            return Err(format!("the problem's status is {}, not {status}", body["status"]));
        }
        Ok(())
    }

    fn check_response(&self, operation: &Operation, exchange: &Exchange<'_>) -> Result<(), String> {
        let responses = &operation.value["responses"];
        let declared = responses
            .get(exchange.status.to_string())
            .or_else(|| responses.get("default"))
            .ok_or_else(|| format!("status {} is not declared for {}", exchange.status, operation.name()))?;
        let declared = self.resolve(declared)?;
        for (name, _) in declared["headers"].as_object().into_iter().flatten() {
            if !exchange.headers.contains(&name.to_ascii_lowercase()) {
                return Err(format!("declared header {name} is missing"));
            }
        }
        let content = declared["content"].as_object().filter(|c| !c.is_empty());
        let Some(content) = content else {
            return if exchange.body.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "declared without a body, answered {} bytes of {:?}",
                    exchange.body.len(),
                    exchange.content_type
                ))
            };
        };
        let media = exchange.content_type.map(media_type).ok_or("answered without a content type")?;
        let Some(entry) = content.get(&media) else {
            let names: Vec<&String> = content.keys().collect();
            return Err(format!("answered {media}, declared {names:?}"));
        };
        let Some(schema) = entry.get("schema") else { return Ok(()) };
        self.check_body(&media, schema, exchange.body, "body", true)?;
        if media == "application/problem+json" {
            let body: Value = serde_json::from_slice(exchange.body).unwrap_or_default();
            if body["status"] != exchange.status {
                return Err(format!("the problem's status is {}, not {}", body["status"], exchange.status));
            }
        }
        Ok(())
    }

    fn check_body(
        &self,
        media: &str,
        schema: &Value,
        body: &[u8],
        at: &str,
        strict: bool,
    ) -> Result<(), String> {
        let value = if is_json(media) {
            serde_json::from_slice(body).map_err(|e| format!("{at} is not JSON: {e}"))?
        } else if media == "application/x-www-form-urlencoded" {
            let mut object = Map::new();
            for (name, value) in form_urlencoded::parse(body) {
                object.insert(name.into_owned(), Value::String(value.into_owned()));
            }
            Value::Object(object)
        } else if media.starts_with("text/") {
            Value::String(String::from_utf8(body.to_vec()).map_err(|_| format!("{at} is not UTF-8"))?)
        } else {
            return Err(format!("{at}: the checker does not know the media type {media}"));
        };
        self.validate(schema, &value, at, strict)
    }

    /// What a request the server accepted sent must be what the document lets a client send.
    fn check_request(&self, operation: &Operation, exchange: &Exchange<'_>) -> Result<(), String> {
        let accepted = "the server accepted a request";
        for (name, raw) in operation.path_values(exchange.path).unwrap_or_default() {
            let parameter = operation
                .parameters("path")
                .find(|p| p["name"] == name)
                .ok_or_else(|| format!("path parameter {name} is not declared"))?;
            let decoded = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
            self.check_parameter(parameter, &decoded).map_err(|e| format!("{accepted} whose {e}"))?;
        }
        let pairs: Vec<(String, String)> =
            form_urlencoded::parse(exchange.query.unwrap_or_default().as_bytes())
                .map(|(n, v)| (n.into_owned(), v.into_owned()))
                .collect();
        // An operation that declares no query parameters does not read the query string.
        let reads_query = operation.parameters("query").next().is_some();
        for (name, value) in pairs.iter().filter(|_| reads_query) {
            let parameter = operation
                .parameters("query")
                .find(|p| p["name"] == name.as_str())
                .ok_or_else(|| format!("{accepted} with the undeclared query parameter {name:?}"))?;
            self.check_parameter(parameter, value).map_err(|e| format!("{accepted} whose {e}"))?;
        }
        for parameter in operation.parameters("query") {
            if parameter["required"] == true && !pairs.iter().any(|(n, _)| parameter["name"] == n.as_str()) {
                return Err(format!("{accepted} without the required query parameter {}", parameter["name"]));
            }
        }
        let media = operation.request_media();
        if exchange.request_body.is_empty() {
            if operation.value["requestBody"]["required"] == true {
                return Err(format!("{accepted} without the body the document requires"));
            }
            return Ok(());
        }
        if media.is_empty() {
            return Ok(()); // a body the operation does not read
        }
        let sent = exchange.request_content_type.map(media_type).unwrap_or_default();
        let (_, schema) = media
            .iter()
            .find(|(m, _)| *m == sent)
            .ok_or_else(|| format!("{accepted} with a body of {sent:?}, declared {media:?}"))?;
        match schema {
            Some(schema) => self
                .check_body(&sent, schema, exchange.request_body, "the request body", false)
                .map_err(|e| format!("{accepted}: {e}")),
            None => Err(format!("the request body of {sent} has no schema")),
        }
    }

    fn check_parameter(&self, parameter: &Value, raw: &str) -> Result<(), String> {
        let name = parameter["name"].as_str().unwrap_or_default();
        let schema = self.resolve(&parameter["schema"])?;
        let types = types_of(schema);
        let value = if types.iter().any(|t| t == "integer" || t == "number") {
            serde_json::from_str::<Value>(raw)
                .ok()
                .filter(Value::is_number)
                .ok_or_else(|| format!("{name} is {raw:?}, declared a number"))?
        } else {
            Value::String(raw.to_string())
        };
        self.validate(schema, &value, name, false)
    }

    /// Validates `value` against `schema`; `strict`: objects may hold only the properties
    /// their schema names unless it says `additionalProperties`.
    pub fn validate(&self, schema: &Value, value: &Value, at: &str, strict: bool) -> Result<(), String> {
        let schema = self.resolve(schema)?;
        let Some(keywords) = schema.as_object() else {
            return match schema {
                Value::Bool(true) => Ok(()),
                Value::Bool(false) => Err(format!("{at}: nothing is allowed here")),
                other => Err(format!("{at}: not a schema: {other}")),
            };
        };
        for keyword in keywords.keys() {
            if !KNOWN.contains(&keyword.as_str()) {
                return Err(format!("{at}: the checker does not know the schema keyword {keyword:?}"));
            }
        }
        let types = types_of(schema);
        if !types.is_empty() && !types.iter().any(|t| has_type(value, t)) {
            return Err(format!("{at}: {} is not of type {types:?}", shown(value)));
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
            if !allowed.contains(value) {
                return Err(format!("{at}: {} is not one of {allowed:?}", shown(value)));
            }
        }
        if let Some(constant) = schema.get("const") {
            if constant != value {
                return Err(format!("{at}: {} is not {constant}", shown(value)));
            }
        }
        if let Some(format) = schema.get("format").and_then(Value::as_str) {
            if !FORMATS.contains(&format) {
                return Err(format!("{at}: the checker does not know the format {format:?}"));
            }
        }
        if let Value::Number(number) = value {
            check_number(schema, number, at)?;
        }
        if let Value::String(text) = value {
            let length = text.chars().count() as u64;
            if schema.get("minLength").and_then(Value::as_u64).is_some_and(|min| length < min) {
                return Err(format!("{at}: shorter than minLength"));
            }
            if schema.get("maxLength").and_then(Value::as_u64).is_some_and(|max| length > max) {
                return Err(format!("{at}: longer than maxLength"));
            }
        }
        if let Value::Array(items) = value {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    self.validate(item_schema, item, &format!("{at}[{i}]"), strict)?;
                }
            }
            if schema.get("minItems").and_then(Value::as_u64).is_some_and(|min| (items.len() as u64) < min) {
                return Err(format!("{at}: fewer items than minItems"));
            }
            if schema.get("maxItems").and_then(Value::as_u64).is_some_and(|max| (items.len() as u64) > max) {
                return Err(format!("{at}: more items than maxItems"));
            }
        }
        if let Value::Object(object) = value {
            self.validate_object(schema, object, at, strict)?;
        }
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for (i, part) in all.iter().enumerate() {
                self.validate(part, value, &format!("{at} (allOf {i})"), strict)?;
            }
        }
        if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
            if !any.iter().any(|part| self.validate(part, value, at, strict).is_ok()) {
                return Err(format!("{at}: {} matches none of anyOf", shown(value)));
            }
        }
        if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
            let errors: Vec<String> =
                one.iter().filter_map(|part| self.validate(part, value, at, strict).err()).collect();
            if one.len() - errors.len() != 1 {
                return Err(format!(
                    "{at}: {} matches {} of oneOf, not exactly one ({errors:?})",
                    shown(value),
                    one.len() - errors.len()
                ));
            }
        }
        Ok(())
    }

    fn validate_object(
        &self,
        schema: &Value,
        object: &Map<String, Value>,
        at: &str,
        strict: bool,
    ) -> Result<(), String> {
        let properties = schema.get("properties").and_then(Value::as_object);
        for name in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            let name = name.as_str().unwrap_or_default();
            if !object.contains_key(name) {
                return Err(format!("{at}: the required property {name:?} is missing"));
            }
        }
        let additional = schema.get("additionalProperties");
        for (name, value) in object {
            let here = format!("{at}.{name}");
            match (properties.and_then(|p| p.get(name)), additional) {
                (Some(property), _) => self.validate(property, value, &here, strict)?,
                (None, Some(Value::Bool(false))) => {
                    return Err(format!("{at}: the property {name:?} is not allowed"))
                }
                (None, Some(Value::Bool(true))) => {}
                (None, Some(other)) => self.validate(other, value, &here, strict)?,
                (None, None) if strict && properties.is_some() => {
                    return Err(format!("{at}: the property {name:?} is not in the document"))
                }
                (None, None) => {}
            }
        }
        Ok(())
    }
}

/// Keywords the validator checks or that only annotate.
const KNOWN: &[&str] = &[
    "$ref",
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "oneOf",
    "anyOf",
    "allOf",
    "enum",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "format",
    "description",
    "title",
    "default",
    "example",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "contentMediaType",
];

const FORMATS: &[&str] =
    &["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float", "double"];

fn types_of(schema: &Value) -> Vec<String> {
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts.iter().filter_map(|t| t.as_str().map(String::from)).collect(),
        _ => Vec::new(),
    }
}

fn has_type(value: &Value, kind: &str) -> bool {
    match kind {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        _ => false,
    }
}

fn check_number(schema: &Value, number: &serde_json::Number, at: &str) -> Result<(), String> {
    let n = number.as_f64().unwrap_or(f64::NAN);
    let bound = |name: &str| schema.get(name).and_then(Value::as_f64);
    if bound("minimum").is_some_and(|min| n < min) || bound("exclusiveMinimum").is_some_and(|min| n <= min) {
        return Err(format!("{at}: {number} is below the minimum"));
    }
    if bound("maximum").is_some_and(|max| n > max) || bound("exclusiveMaximum").is_some_and(|max| n >= max) {
        return Err(format!("{at}: {number} is above the maximum"));
    }
    if let Some(format) = schema.get("format").and_then(Value::as_str) {
        let whole = number.is_i64() || number.is_u64();
        if format.contains("int") && !whole {
            return Err(format!("{at}: {number} is not a whole number ({format})"));
        }
        let fits = match format {
            "int32" => {
                number.as_i64().is_some_and(|v| i32::try_from(v).is_ok())
                    || number.as_u64().is_some_and(|v| v <= u64::from(u32::MAX))
            }
            "uint32" => number.as_u64().is_some_and(|v| u32::try_from(v).is_ok()),
            "int64" => number.as_i64().is_some() || number.as_u64().is_some(),
            "uint64" => number.as_u64().is_some(),
            _ => true,
        };
        if !fits {
            return Err(format!("{at}: {number} does not fit {format}"));
        }
    }
    Ok(())
}

fn shown(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 80 {
        format!("{}…", text.chars().take(80).collect::<String>())
    } else {
        text
    }
}
