//! The model registry: versioned models with aliases, kept in any
//! `BlobStore` in the layout Triton's model repository uses, so Triton or
//! KServe can serve the same repository:
//!
//! ```text
//! <root>/<name>/config.pbtxt            generated: inputs, outputs, backend onnxruntime
//! <root>/<name>/<version>/model.onnx    versions are 1, 2, 3, …
//! <root>/<name>/<version>/manifest.json sha256, signature, feature names, created, lineage
//! <root>/<name>/aliases.json            alias → version, and each alias's history
//! ```
//!
//! A version is allocated by creating its `model.onnx` with put-if-absent
//! (of two pushes racing for version 3, one gets 4), and exists for readers
//! once its manifest does. `aliases.json` changes only by compare-and-swap
//! (`put_if_version`): of two promotions read from the same state, one wins
//! and the other is retried against the new state, never lost.
//!
//! References, wherever a model is named: `ROOT/NAME@ALIAS` or
//! `ROOT/NAME/VERSION` (a version is digits only); anything else is a plain
//! model file or URL.

use crate::model::{DType, ModelSignature};
use crate::store::{self, BlobStore};
use crate::{BlobUrl, Error, ErrorKind, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

pub const MANIFEST_VERSION: u32 = 1;

/// A manifest or aliases file, read by the rule of [`crate::compat`].
fn contract<T: serde::de::DeserializeOwned>(what: &str, body: &[u8]) -> Result<T> {
    crate::compat::decode(what, body, MANIFEST_VERSION, "registry record")
        .map_err(|m| Error::invalid(what.to_string(), m))
}

/// What a version is: written once, with the model, never changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub v: u32,
    pub name: String,
    pub version: u64,
    pub sha256: String,
    pub size: u64,
    pub signature: ModelSignature,
    pub created_at_ms: u64,
    pub lineage: Lineage,
    /// Metrics measured on the model (a training run's holdout AUC, say).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
}

/// Where a version came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    /// Who pushed it (`$USER@host`, a CI job, a training worker).
    pub pushed_by: String,
    /// The file or URL it was pushed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The training run that made it (`<job>/<trial>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_run: Option<String>,
    /// The trainer that made it: its name, command and the sha256 of each
    /// file the command names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trainer: Option<TrainerLineage>,
    /// The trainer's parameters.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub params: serde_json::Map<String, serde_json::Value>,
    /// The files it was trained and checked on, as they were (ETags, sizes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dataset: Vec<crate::train::DatasetFile>,
}

/// A trainer, as a version's lineage records it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainerLineage {
    pub name: String,
    pub command: Vec<String>,
    /// sha256 of each file the command names (the script, the interpreter).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sha256: BTreeMap<String, String>,
}

/// One move of an alias.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasChange {
    pub version: u64,
    pub at_ms: u64,
    pub by: String,
    /// A rollback undoes the move before it instead of adding one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollback: bool,
}

/// `aliases.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Aliases {
    pub v: u32,
    pub aliases: BTreeMap<String, u64>,
    /// Every alias's moves, oldest first; `rollback` steps back through it.
    #[serde(default)]
    pub history: BTreeMap<String, Vec<AliasChange>>,
}

/// Which version of a registry model a reference means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Alias(String),
    Version(u64),
}

/// A model reference: a file or URL, or a registry model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    Url(BlobUrl),
    Registry { root: BlobUrl, name: String, selector: Selector },
}

impl ModelRef {
    /// `ROOT/NAME@ALIAS`, `ROOT/NAME/VERSION` (digits), or a model URL/path.
    pub fn parse(s: &str) -> Result<Self> {
        let trimmed = s.trim_end_matches('/');
        let bad = |why: &str| Error::invalid(format!("model {s:?}"), why);
        if let Some((path, alias)) = trimmed.rsplit_once('@')
            && !alias.contains('/')
        {
            let (root, name) = path.rsplit_once('/').ok_or_else(|| bad("expected ROOT/NAME@ALIAS"))?;
            check_name(name).map_err(|e| bad(&e))?;
            check_alias(alias).map_err(|e| bad(&e))?;
            return Ok(ModelRef::Registry {
                root: BlobUrl::parse(root)?.as_prefix(),
                name: name.into(),
                selector: Selector::Alias(alias.into()),
            });
        }
        if let Some((path, last)) = trimmed.rsplit_once('/')
            && !last.is_empty()
            && last.bytes().all(|b| b.is_ascii_digit())
            && let Some((root, name)) = path.rsplit_once('/')
            && check_name(name).is_ok()
        {
            let version = last.parse().map_err(|_| bad("version out of range"))?;
            return Ok(ModelRef::Registry {
                root: BlobUrl::parse(root)?.as_prefix(),
                name: name.into(),
                selector: Selector::Version(version),
            });
        }
        Ok(ModelRef::Url(BlobUrl::parse(s)?))
    }
}

fn check_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok { Ok(()) } else { Err(format!("model name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.'")) }
}

fn check_alias(alias: &str) -> std::result::Result<(), String> {
    let ok = !alias.is_empty()
        && alias.len() <= 64
        && alias.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        && !alias.bytes().all(|b| b.is_ascii_digit());
    if ok { Ok(()) } else { Err(format!("alias {alias:?}: use letters, digits, '-' or '_' (not digits only)")) }
}

/// A registry model resolved to one version.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub name: String,
    pub version: u64,
    /// The alias it was resolved through, if any.
    pub alias: Option<String>,
    pub model: BlobUrl,
    pub manifest: Manifest,
}

/// A registry rooted at a prefix of a store.
#[derive(Debug, Clone)]
pub struct Registry {
    store: Arc<dyn BlobStore>,
    root: BlobUrl,
}

fn now_ms() -> u64 {
    crate::ledger::now_ms()
}

impl Registry {
    pub fn open(root: &BlobUrl) -> Result<Self> {
        let root = root.as_prefix();
        Ok(Registry { store: store::open(&root)?, root })
    }

    pub fn root(&self) -> &BlobUrl {
        &self.root
    }

    fn key(&self, rel: &str) -> String {
        self.root.join(rel).key().to_string()
    }

    /// The URL of a version's `model.onnx`.
    pub fn model_url(&self, name: &str, version: u64) -> BlobUrl {
        self.root.join(&format!("{name}/{version}/model.onnx"))
    }

    /// Adds `bytes` as the next version of `name`; returns its manifest.
    pub async fn push(
        &self,
        name: &str,
        bytes: Bytes,
        signature: ModelSignature,
        lineage: Lineage,
        metrics: BTreeMap<String, f64>,
    ) -> Result<Manifest> {
        let version = self.claim_version(name, bytes.clone()).await?;
        self.describe_version(name, version, bytes, false, signature, lineage, metrics).await
    }

    /// Claims the next version number of `name` by creating its
    /// `model.onnx` with put-if-absent (a racing push moves on to the next
    /// number). The version is invisible to readers until
    /// [`Registry::describe_version`] writes its manifest.
    pub async fn claim_version(&self, name: &str, bytes: Bytes) -> Result<u64> {
        check_name(name).map_err(|e| Error::invalid("model push", e))?;
        let mut version = self.allocated(name, false).await?.last().copied().unwrap_or(0) + 1;
        while !self.store.put_if_absent(&self.key(&format!("{name}/{version}/model.onnx")), bytes.clone()).await? {
            version += 1;
        }
        Ok(version)
    }

    /// Whether a claimed version has its manifest (is visible).
    pub async fn is_described(&self, name: &str, version: u64) -> Result<bool> {
        match self.store.head(&self.key(&format!("{name}/{version}/manifest.json"))).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes the manifest that makes a claimed version visible. With
    /// `rewrite_model`, first replaces the claimed `model.onnx` with
    /// `bytes` (a re-run completing a version an attempt that died had
    /// claimed: nobody can have read it, it had no manifest).
    #[allow(clippy::too_many_arguments)]
    pub async fn describe_version(
        &self,
        name: &str,
        version: u64,
        bytes: Bytes,
        rewrite_model: bool,
        signature: ModelSignature,
        lineage: Lineage,
        metrics: BTreeMap<String, f64>,
    ) -> Result<Manifest> {
        check_name(name).map_err(|e| Error::invalid("model push", e))?;
        let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        if rewrite_model {
            self.store.put(&self.key(&format!("{name}/{version}/model.onnx")), bytes.clone()).await?;
        }
        let manifest = Manifest {
            v: MANIFEST_VERSION,
            name: name.into(),
            version,
            sha256,
            size: bytes.len() as u64,
            signature,
            created_at_ms: now_ms(),
            lineage,
            metrics,
        };
        let body = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::invalid("manifest", e))?;
        self.store.put(&self.key(&format!("{name}/{version}/manifest.json")), body.into()).await?;
        // Triton's config for the model directory, from the newest version.
        let config = triton_config(name, &manifest.signature);
        self.store.put(&self.key(&format!("{name}/config.pbtxt")), config.into()).await?;
        Ok(manifest)
    }

    /// The model names in the registry, sorted.
    pub async fn names(&self) -> Result<Vec<String>> {
        let prefix = self.root.key().to_string();
        let mut names: Vec<String> = store::list_all(self.store.as_ref(), &prefix)
            .await?
            .into_iter()
            .filter_map(|m| {
                let rel = m.key.strip_prefix(&prefix)?;
                let (name, rest) = rel.split_once('/')?;
                rest.ends_with("/manifest.json").then(|| name.to_string())
            })
            .collect();
        names.dedup();
        Ok(names)
    }

    /// The complete versions of `name` (those with a manifest), ascending.
    pub async fn versions(&self, name: &str) -> Result<Vec<u64>> {
        self.allocated(name, true).await
    }

    /// Versions with a manifest, or (`complete` false) also those a push
    /// has claimed and not yet described.
    async fn allocated(&self, name: &str, complete: bool) -> Result<Vec<u64>> {
        let prefix = self.key(&format!("{name}/"));
        let mut versions: Vec<u64> = store::list_all(self.store.as_ref(), &prefix)
            .await?
            .into_iter()
            .filter_map(|m| {
                let rel = m.key.strip_prefix(&prefix)?;
                let (v, file) = rel.split_once('/')?;
                (file == "manifest.json" || (!complete && file == "model.onnx")).then(|| v.parse().ok())?
            })
            .collect();
        versions.sort_unstable();
        versions.dedup();
        Ok(versions)
    }

    pub async fn manifest(&self, name: &str, version: u64) -> Result<Manifest> {
        let key = self.key(&format!("{name}/{version}/manifest.json"));
        let body = self.store.get(&key).await.map_err(|e| match e.kind() {
            ErrorKind::NotFound => {
                Error::invalid(format!("model {name}"), format!("no version {version} in {}", self.root))
            }
            _ => e,
        })?;
        contract(&self.root.join(&key).to_string(), &body)
    }

    /// `aliases.json` and its version (`None` before the first alias).
    pub async fn aliases(&self, name: &str) -> Result<(Aliases, Option<String>)> {
        let key = self.key(&format!("{name}/aliases.json"));
        // A move between the HEAD and the GET changes the object under the
        // read: read it again (each move is a whole new file, so this ends).
        let mut attempt = 0;
        loop {
            let meta = match self.store.head(&key).await {
                Ok(m) => m,
                Err(e) if e.is_not_found() => return Ok((Aliases { v: 1, ..Aliases::default() }, None)),
                Err(e) => return Err(e),
            };
            let body = match store::read_range_if(self.store.as_ref(), &key, 0..meta.size, Some(&meta.version)).await {
                Ok(b) => b,
                Err(e) if e.kind() == ErrorKind::Changed && attempt < 20 => {
                    attempt += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let aliases = contract(&self.root.join(&key).to_string(), &body)?;
            return Ok((aliases, Some(meta.version)));
        }
    }

    /// Resolves `selector` of `name` to a version and its manifest.
    pub async fn resolve(&self, name: &str, selector: &Selector) -> Result<Resolved> {
        let (version, alias) = match selector {
            Selector::Version(v) => (*v, None),
            Selector::Alias(a) => {
                let (aliases, _) = self.aliases(name).await?;
                let v = aliases.aliases.get(a).copied().ok_or_else(|| {
                    let known: Vec<_> = aliases.aliases.keys().cloned().collect();
                    Error::invalid(
                        format!("model {name}@{a}"),
                        format!("no alias {a:?} in {} (aliases: {})", self.root, known.join(", ")),
                    )
                })?;
                (v, Some(a.clone()))
            }
        };
        let manifest = self.manifest(name, version).await?;
        Ok(Resolved { name: name.into(), version, alias, model: self.model_url(name, version), manifest })
    }

    /// Moves `alias` to `version` by compare-and-swap, re-reading and
    /// retrying when another change won the race. With `expect`, refuses
    /// unless the alias points there first (a promotion that must not
    /// overwrite a concurrent one). Returns the version it pointed to.
    pub async fn set_alias(
        &self,
        name: &str,
        alias: &str,
        version: u64,
        expect: Option<Option<u64>>,
        by: &str,
    ) -> Result<Option<u64>> {
        check_alias(alias).map_err(|e| Error::invalid(format!("model {name}"), e))?;
        self.manifest(name, version).await?;
        self.update_aliases(name, |aliases| {
            let before = aliases.aliases.get(alias).copied();
            if let Some(want) = expect
                && before != want
            {
                return Err(Error::invalid(
                    format!("model {name}@{alias}"),
                    format!("points to {} now, not {} as expected; someone else moved it", show(before), show(want)),
                ));
            }
            aliases.aliases.insert(alias.into(), version);
            aliases.history.entry(alias.into()).or_default().push(AliasChange {
                version,
                at_ms: now_ms(),
                by: by.into(),
                rollback: false,
            });
            Ok(before)
        })
        .await
    }

    /// Moves `alias` back to the version it pointed to before its last
    /// move; again, to the one before that. Returns (from, to).
    pub async fn rollback(&self, name: &str, alias: &str, by: &str) -> Result<(u64, u64)> {
        self.update_aliases(name, |aliases| {
            let current = aliases
                .aliases
                .get(alias)
                .copied()
                .ok_or_else(|| Error::invalid(format!("model {name}@{alias}"), "no such alias"))?;
            let history = aliases.history.entry(alias.into()).or_default();
            // Replay: a move pushes its version, a rollback pops one.
            let mut stack = Vec::new();
            for change in history.iter() {
                if change.rollback {
                    stack.pop();
                } else {
                    stack.push(change.version);
                }
            }
            let previous = stack.iter().rev().nth(1).copied().ok_or_else(|| {
                Error::invalid(format!("model {name}@{alias}"), "no earlier version in its history to roll back to")
            })?;
            history.push(AliasChange { version: previous, at_ms: now_ms(), by: by.into(), rollback: true });
            aliases.aliases.insert(alias.into(), previous);
            Ok((current, previous))
        })
        .await
    }

    async fn update_aliases<T>(&self, name: &str, mut change: impl FnMut(&mut Aliases) -> Result<T>) -> Result<T> {
        let key = self.key(&format!("{name}/aliases.json"));
        for _ in 0..32 {
            let (mut aliases, version) = self.aliases(name).await?;
            let out = change(&mut aliases)?;
            let body: Bytes = serde_json::to_vec_pretty(&aliases).map_err(|e| Error::invalid("aliases", e))?.into();
            let won = match &version {
                None => self.store.put_if_absent(&key, body).await?,
                Some(v) => self.store.put_if_version(&key, body, v).await?,
            };
            if won {
                return Ok(out);
            }
        }
        Err(Error::store(
            "update",
            self.root.join(&key).to_string(),
            ErrorKind::Transient,
            "aliases.json kept changing under 32 attempts",
        ))
    }
}

/// Whether `candidate` can score the rows `champion` scores: each of its
/// inputs takes columns the champion's inputs take (by feature name), or,
/// without names, matches a champion input of the same name and width.
/// `Err` names what does not bind.
pub fn check_binds(champion: &ModelSignature, candidate: &ModelSignature) -> std::result::Result<(), String> {
    let mut columns: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    for input in &champion.inputs {
        match champion.feature_names.get(&input.name) {
            Some(names) => columns.extend(names.iter().map(String::as_str)),
            None if input.width() == Some(1) => {
                columns.insert(&input.name);
            }
            None => {}
        }
    }
    let mut problems = Vec::new();
    for input in &candidate.inputs {
        match candidate.feature_names.get(&input.name) {
            Some(names) => {
                let missing: Vec<&str> = names.iter().map(String::as_str).filter(|n| !columns.contains(n)).collect();
                if !missing.is_empty() {
                    problems.push(format!(
                        "input {:?} needs columns the champion's rows lack: {}",
                        input.name,
                        missing.join(", ")
                    ));
                }
            }
            None if input.width() == Some(1) => {
                if !columns.contains(input.name.as_str()) {
                    problems.push(format!("input {:?} needs a column of that name", input.name));
                }
            }
            None => {
                let same = champion.inputs.iter().find(|c| c.name == input.name);
                let unnamed = same.is_some_and(|c| !champion.feature_names.contains_key(&c.name));
                if !unnamed || same.and_then(|c| c.width()) != input.width() {
                    problems.push(format!(
                        "input {:?} takes {} unnamed columns; the champion has no unnamed input of that name and width",
                        input.name,
                        input.width().map(|w| w.to_string()).unwrap_or_else(|| "?".into())
                    ));
                }
            }
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
}

/// Resolves a model reference wherever `--model` is taken: a file or URL is
/// itself; a registry reference is its version's `model.onnx`, with the pin
/// a job records (name, version, the alias it came through).
pub async fn resolve_ref(reference: &str) -> Result<(BlobUrl, Option<crate::ledger::RegistryPin>)> {
    match ModelRef::parse(reference)? {
        ModelRef::Url(url) => Ok((url, None)),
        ModelRef::Registry { root, name, selector } => {
            let r = Registry::open(&root)?.resolve(&name, &selector).await?;
            let pin = crate::ledger::RegistryPin { registry: root, name, version: r.version, alias: r.alias };
            Ok((r.model, Some(pin)))
        }
    }
}

fn show(v: Option<u64>) -> String {
    v.map(|v| format!("version {v}")).unwrap_or_else(|| "nothing".into())
}

/// Triton's `config.pbtxt` for an ONNX model: inputs and outputs with their
/// types and dimensions (batch dimension included, `max_batch_size: 0`).
pub fn triton_config(name: &str, sig: &ModelSignature) -> String {
    fn ty(d: Option<DType>) -> &'static str {
        match d {
            Some(DType::Float32) => "TYPE_FP32",
            Some(DType::Int64) => "TYPE_INT64",
            _ => "TYPE_INVALID",
        }
    }
    fn tensors(kind: &str, specs: &[crate::model::TensorSpec]) -> String {
        let items: Vec<String> = specs
            .iter()
            .map(|t| {
                let dims: Vec<String> =
                    t.shape.iter().map(|d| d.map(|n| n.to_string()).unwrap_or_else(|| "-1".into())).collect();
                format!(
                    "  {{\n    name: \"{}\"\n    data_type: {}\n    dims: [ {} ]\n  }}",
                    t.name,
                    ty(t.dtype),
                    dims.join(", ")
                )
            })
            .collect();
        format!("{kind} [\n{}\n]\n", items.join(",\n"))
    }
    format!(
        "# Generated by hourglass model push: Triton and KServe can serve this repository.\nname: \"{name}\"\nbackend: \"onnxruntime\"\nmax_batch_size: 0\n{}{}",
        tensors("input", &sig.inputs),
        tensors("output", &sig.outputs)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_a_registry_version_or_alias_or_a_file() {
        match ModelRef::parse("s3://ml/registry/ctr@champion").unwrap() {
            ModelRef::Registry { root, name, selector } => {
                assert_eq!(root.to_string(), "s3://ml/registry/");
                assert_eq!(name, "ctr");
                assert_eq!(selector, Selector::Alias("champion".into()));
            }
            other => panic!("{other:?}"),
        }
        match ModelRef::parse("/srv/registry/ctr_gbdt/3").unwrap() {
            ModelRef::Registry { name, selector, .. } => {
                assert_eq!((name.as_str(), selector), ("ctr_gbdt", Selector::Version(3)));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(ModelRef::parse("models/ctr_gbdt.onnx").unwrap(), ModelRef::Url(_)));
        assert!(matches!(ModelRef::parse("s3://ml/models/ctr.onnx").unwrap(), ModelRef::Url(_)));
        assert!(ModelRef::parse("s3://ml/registry/ctr@bad/alias").is_ok(), "an @ inside a path is a file name");
        assert!(ModelRef::parse("s3://ml/registry/ctr@").is_err());
        assert!(ModelRef::parse("s3://ml/registry/ctr@123").is_err(), "an alias is not digits only");
    }
}
