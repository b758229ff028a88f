//! Invariants: Cedar policy sets stating the most any policy may ever allow, kept as reviewed
//! files in `policies/invariants/`; the shipped ones are built into the binary.

use std::path::Path;

use consentry_policy::{compile, CompiledPolicy};

use crate::ProveError;

/// One invariant: a name (its file stem) and its Cedar text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invariant {
    pub name: String,
    pub text: String,
}

const SHIPPED: [(&str, &str); 2] = [
    ("consent-2018", include_str!("../../../policies/invariants/consent-2018.cedar")),
    ("app-in-good-standing", include_str!("../../../policies/invariants/app-in-good-standing.cedar")),
];

impl Invariant {
    /// The invariants shipped with consentry (`policies/invariants/`).
    pub fn shipped() -> Vec<Invariant> {
        SHIPPED.iter().map(|(name, text)| Invariant { name: (*name).into(), text: (*text).into() }).collect()
    }

    /// Every `*.cedar` file of `dir`, by name; each must validate against the schema.
    pub fn load_dir(dir: &Path) -> Result<Vec<Invariant>, ProveError> {
        let problem = |error: String| ProveError::Invariant { name: dir.display().to_string(), error };
        let entries = std::fs::read_dir(dir).map_err(|e| problem(e.to_string()))?;
        let mut invariants = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| problem(e.to_string()))?.path();
            if path.extension().is_none_or(|e| e != "cedar") {
                continue;
            }
            let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ProveError::Invariant { name: name.clone(), error: e.to_string() })?;
            let invariant = Invariant { name, text };
            invariant.compiled()?;
            invariants.push(invariant);
        }
        if invariants.is_empty() {
            return Err(problem("holds no .cedar invariant".into()));
        }
        invariants.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(invariants)
    }

    /// The invariant validated like any policy.
    pub(crate) fn compiled(&self) -> Result<CompiledPolicy, ProveError> {
        compile(0, &self.text)
            .map_err(|e| ProveError::Invariant { name: self.name.clone(), error: e.to_string() })
    }
}
