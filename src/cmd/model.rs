//! `hourglass model`: the model registry (push, list, show, alias set,
//! promote, rollback). The registry itself is `hourglass_core::registry`;
//! models are loaded through the worker runtime here, so only models that
//! can score batches get in.

use super::load_model;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use hourglass_core::model::DType;
use hourglass_core::registry::{self, Lineage, ModelRef, Registry};
use hourglass_core::{BlobUrl, store};
use hourglass_runtime::InputData;
use std::collections::BTreeMap;

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Add a model file as the next version of NAME (Triton's repository
    /// layout: ROOT/NAME/VERSION/model.onnx, a manifest, config.pbtxt).
    Push(PushArgs),
    /// Models in a registry, with their versions and aliases.
    List(ListArgs),
    /// One version's manifest: sha256, signature, lineage, metrics.
    Show(ShowArgs),
    /// Alias commands.
    #[command(subcommand)]
    Alias(AliasCommand),
    /// Move an alias (default champion) to a version, refusing one that
    /// cannot score the champion's rows, or (with --require-metric) one
    /// whose recorded metric is worse.
    Promote(PromoteArgs),
    /// Move an alias back to the version before its last move.
    Rollback(RollbackArgs),
}

#[derive(Subcommand)]
pub enum AliasCommand {
    /// Point ALIAS at VERSION (compare-and-swap; --expect guards a race).
    Set(AliasSetArgs),
}

#[derive(Args)]
pub struct Target {
    /// The registry root (a directory or s3://bucket/prefix/).
    #[arg(long, env = "HOURGLASS_REGISTRY")]
    registry: String,
    /// The model's name in the registry.
    #[arg(long)]
    name: String,
}

#[derive(Args)]
pub struct PushArgs {
    /// The .onnx file (or URL).
    file: String,
    #[command(flatten)]
    target: Target,
    /// Also point this alias at the new version.
    #[arg(long)]
    alias: Option<String>,
    /// A metric measured on this model, NAME=VALUE (repeatable).
    #[arg(long = "metric", value_parser = metric)]
    metrics: Vec<(String, f64)>,
    /// The training run that made it.
    #[arg(long)]
    training_run: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ListArgs {
    #[arg(long, env = "HOURGLASS_REGISTRY")]
    registry: String,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ShowArgs {
    /// ROOT/NAME@ALIAS or ROOT/NAME/VERSION.
    reference: String,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct AliasSetArgs {
    #[command(flatten)]
    target: Target,
    #[arg(long)]
    alias: String,
    #[arg(long)]
    version: u64,
    /// Only if the alias points here now (a version, or `none`).
    #[arg(long)]
    expect: Option<String>,
}

#[derive(Args)]
pub struct PromoteArgs {
    #[command(flatten)]
    target: Target,
    #[arg(long)]
    version: u64,
    #[arg(long, default_value = "champion")]
    alias: String,
    /// Refuse unless the new version's recorded METRIC is at least the
    /// current one's (e.g. `auc`; `logloss-` for lower is better).
    #[arg(long)]
    require_metric: Option<String>,
    /// Refuse unless the new version scores like the current one: every
    /// output within this absolute tolerance on --parity-rows random rows
    /// (for a re-export or a runtime upgrade of the same model).
    #[arg(long)]
    require_parity: Option<f64>,
    #[arg(long, default_value_t = 4096)]
    parity_rows: usize,
}

#[derive(Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    target: Target,
    #[arg(long, default_value = "champion")]
    alias: String,
}

fn metric(s: &str) -> Result<(String, f64), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected NAME=VALUE"))?;
    let v: f64 = v.parse().map_err(|_| format!("{s:?}: {v:?} is not a number"))?;
    Ok((k.trim().to_string(), v))
}

/// Who is acting, for lineage and alias history: `$USER@host`.
fn actor() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    if host.is_empty() { user } else { format!("{user}@{host}") }
}

fn open(t: &Target) -> Result<Registry> {
    Ok(Registry::open(&BlobUrl::parse(&t.registry)?)?)
}

pub async fn run(c: ModelCommand) -> Result<()> {
    match c {
        ModelCommand::Push(a) => push(a).await,
        ModelCommand::List(a) => list(a).await,
        ModelCommand::Show(a) => show(a).await,
        ModelCommand::Alias(AliasCommand::Set(a)) => {
            let expect = match a.expect.as_deref() {
                None => None,
                Some("none") => Some(None),
                Some(v) => Some(Some(v.parse().with_context(|| format!("--expect {v:?}: a version or none"))?)),
            };
            let before = open(&a.target)?.set_alias(&a.target.name, &a.alias, a.version, expect, &actor()).await?;
            println!("{}@{}: {} → {}", a.target.name, a.alias, show_version(before), a.version);
            Ok(())
        }
        ModelCommand::Promote(a) => promote(a).await,
        ModelCommand::Rollback(a) => {
            let (from, to) = open(&a.target)?.rollback(&a.target.name, &a.alias, &actor()).await?;
            println!("{}@{}: {from} → {to} (rolled back)", a.target.name, a.alias);
            Ok(())
        }
    }
}

fn show_version(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "none".into())
}

async fn push(a: PushArgs) -> Result<()> {
    let url = BlobUrl::parse(&a.file)?;
    // Loaded and probed first: a model that cannot score batches is refused.
    let runtime = load_model(&url, 1).await?;
    let bytes = store::open(&url)?.get(url.key()).await?;
    let reg = open(&a.target)?;
    let lineage = Lineage {
        pushed_by: actor(),
        source: Some(url.to_string()),
        training_run: a.training_run,
        ..Default::default()
    };
    let metrics: BTreeMap<String, f64> = a.metrics.into_iter().collect();
    let manifest = reg.push(&a.target.name, bytes, runtime.signature().clone(), lineage, metrics).await?;
    if let Some(alias) = &a.alias {
        reg.set_alias(&a.target.name, alias, manifest.version, None, &actor()).await?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&manifest)?);
    } else {
        println!(
            "{} version {} (sha256 {}){}\n{}",
            manifest.name,
            manifest.version,
            manifest.sha256,
            a.alias.as_deref().map(|al| format!(", alias {al}")).unwrap_or_default(),
            reg.model_url(&manifest.name, manifest.version)
        );
    }
    Ok(())
}

async fn list(a: ListArgs) -> Result<()> {
    let reg = Registry::open(&BlobUrl::parse(&a.registry)?)?;
    let mut out = Vec::new();
    for name in reg.names().await? {
        let versions = reg.versions(&name).await?;
        let (aliases, _) = reg.aliases(&name).await?;
        out.push(serde_json::json!({ "name": name, "versions": versions, "aliases": aliases.aliases }));
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("{:<24} {:<16} aliases", "name", "versions");
    for m in &out {
        let versions: Vec<String> = m["versions"].as_array().into_iter().flatten().map(|v| v.to_string()).collect();
        let aliases: Vec<String> =
            m["aliases"].as_object().into_iter().flatten().map(|(k, v)| format!("{k}={v}")).collect();
        println!("{:<24} {:<16} {}", m["name"].as_str().unwrap_or(""), versions.join(","), aliases.join(" "));
    }
    Ok(())
}

async fn show(a: ShowArgs) -> Result<()> {
    let ModelRef::Registry { root, name, selector } = ModelRef::parse(&a.reference)? else {
        bail!("{}: not a registry reference (ROOT/NAME@ALIAS or ROOT/NAME/VERSION)", a.reference);
    };
    let reg = Registry::open(&root)?;
    let resolved = reg.resolve(&name, &selector).await?;
    let (aliases, _) = reg.aliases(&name).await?;
    let pointing: Vec<&String> =
        aliases.aliases.iter().filter(|(_, v)| **v == resolved.version).map(|(k, _)| k).collect();
    if a.json {
        let out = serde_json::json!({ "manifest": resolved.manifest, "model": resolved.model.to_string(), "aliases": pointing });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let m = &resolved.manifest;
    println!(
        "{} version {}  (aliases: {})",
        m.name,
        m.version,
        if pointing.is_empty() {
            "none".into()
        } else {
            pointing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        }
    );
    println!("model    {}", resolved.model);
    println!("sha256   {}  ({} bytes)", m.sha256, m.size);
    for t in &m.signature.inputs {
        let names = m
            .signature
            .feature_names
            .get(&t.name)
            .map(|n| format!(" ← {} columns by name", n.len()))
            .unwrap_or_default();
        println!("input    {} {} {}{names}", t.name, t.type_name, dims(&t.shape));
    }
    for t in &m.signature.outputs {
        println!("output   {} {} {}", t.name, t.type_name, dims(&t.shape));
    }
    println!(
        "pushed   by {}{}",
        m.lineage.pushed_by,
        m.lineage.source.as_deref().map(|s| format!(" from {s}")).unwrap_or_default()
    );
    for (k, v) in &m.metrics {
        println!("metric   {k} = {v}");
    }
    Ok(())
}

async fn promote(a: PromoteArgs) -> Result<()> {
    let reg = open(&a.target)?;
    let name = &a.target.name;
    let candidate = reg.manifest(name, a.version).await?;
    let (aliases, _) = reg.aliases(name).await?;
    let current = aliases.aliases.get(&a.alias).copied();
    if let Some(cur) = current {
        let champion = reg.manifest(name, cur).await?;
        if let Err(why) = registry::check_binds(&champion.signature, &candidate.signature) {
            bail!("{name} version {} cannot replace version {cur} as {}: {why}", a.version, a.alias);
        }
        if let Some(spec) = &a.require_metric {
            let (metric, lower_is_better) = match spec.strip_suffix('-') {
                Some(m) => (m, true),
                None => (spec.as_str(), false),
            };
            let (Some(new), Some(old)) = (candidate.metrics.get(metric), champion.metrics.get(metric)) else {
                bail!("--require-metric {metric}: version {} or version {cur} has no recorded {metric}", a.version);
            };
            let better = if lower_is_better { new <= old } else { new >= old };
            if !better {
                bail!("--require-metric {metric}: version {} has {new}, worse than version {cur}'s {old}", a.version);
            }
        }
    }
    if let Some(tolerance) = a.require_parity {
        let Some(cur) = current else { bail!("--require-parity: {name}@{} points nowhere to compare with", a.alias) };
        let worst = parity(&reg, name, cur, a.version, a.parity_rows).await?;
        if worst > tolerance {
            bail!(
                "--require-parity {tolerance}: version {} differs from version {cur} by up to {worst:e} on {} rows",
                a.version,
                a.parity_rows
            );
        }
        println!("parity: versions {cur} and {} agree within {worst:e} on {} rows", a.version, a.parity_rows);
    }
    // The alias must still be where it was checked against.
    reg.set_alias(name, &a.alias, a.version, Some(current), &actor()).await?;
    println!("{name}@{}: {} → {}", a.alias, show_version(current), a.version);
    Ok(())
}

/// `[-1, 39]`: a shape as Triton writes it (-1 for a symbolic dimension).
fn dims(shape: &[Option<u64>]) -> String {
    let d: Vec<String> = shape.iter().map(|x| x.map(|n| n.to_string()).unwrap_or_else(|| "-1".into())).collect();
    format!("[{}]", d.join(", "))
}

/// The largest absolute difference between two versions' outputs on `rows`
/// random rows (uniform in [-1, 3), a few exact zeros), through the worker
/// runtime: the same inference path batch jobs use.
async fn parity(reg: &Registry, name: &str, a: u64, b: u64, rows: usize) -> Result<f64> {
    let (ma, mb) = (load_model(&reg.model_url(name, a), 1).await?, load_model(&reg.model_url(name, b), 1).await?);
    if ma.signature().inputs != mb.signature().inputs {
        bail!("--require-parity: versions {a} and {b} take different inputs");
    }
    let mut rng = hourglass_core::rng::SplitMix64::new(7);
    let inputs: Vec<InputData> = ma
        .signature()
        .inputs
        .iter()
        .map(|spec| {
            let n = rows * spec.width().unwrap_or(1) as usize;
            match spec.dtype {
                Some(DType::Int64) => InputData::I64((0..n).map(|_| (rng.uniform() * 100.0) as i64).collect()),
                _ => InputData::F32(
                    (0..n).map(|i| if i % 17 == 0 { 0.0 } else { (rng.uniform() * 4.0 - 1.0) as f32 }).collect(),
                ),
            }
        })
        .collect();
    let (oa, ob) =
        tokio::task::spawn_blocking(move || -> Result<_> { Ok((ma.run(&inputs, rows)?, mb.run(&inputs, rows)?)) })
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
    let mut worst = 0f64;
    for ca in &oa {
        let Some(cb) = ob.iter().find(|c| c.name == ca.name) else {
            bail!("--require-parity: version {b} has no output {:?}", ca.name);
        };
        for row in 0..rows {
            let (x, y) = (ca.data.get_f64(row), cb.data.get_f64(row));
            if x.is_nan() && y.is_nan() {
                continue;
            }
            let d = (x - y).abs();
            worst = if d.is_nan() { f64::INFINITY } else { worst.max(d) };
        }
    }
    Ok(worst)
}
