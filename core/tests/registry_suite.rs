//! The model registry's contract, run against the filesystem store and S3
//! (moto): numbered versions allocated once each, manifests and Triton's
//! config beside them, aliases moved by compare-and-swap (two promotions
//! from one state: one wins, the other is refused, nothing is lost), and
//! rollback stepping back through an alias's history.

mod common;

use bytes::Bytes;
use hourglass_core::BlobUrl;
use hourglass_core::model::{DType, ModelSignature, TensorSpec};
use hourglass_core::registry::{Lineage, ModelRef, Registry, Selector};
use std::collections::BTreeMap;

fn signature() -> ModelSignature {
    let spec = |name: &str, dtype, shape: Vec<Option<u64>>| TensorSpec {
        name: name.into(),
        dtype: Some(dtype),
        type_name: "tensor(float)".into(),
        shape,
    };
    ModelSignature {
        inputs: vec![spec("input", DType::Float32, vec![None, Some(39)])],
        outputs: vec![spec("probabilities", DType::Float32, vec![None, Some(2)])],
        feature_names: BTreeMap::new(),
    }
}

fn lineage(by: &str) -> Lineage {
    Lineage { pushed_by: by.into(), source: Some("test".into()), training_run: None, ..Default::default() }
}

async fn suite(root: BlobUrl) {
    let reg = Registry::open(&root).unwrap();
    let push = |n: u8| {
        let reg = reg.clone();
        async move { reg.push("ctr", Bytes::from(vec![n; 100]), signature(), lineage("ci"), BTreeMap::new()).await }
    };
    let first = push(1).await.unwrap();
    assert_eq!(first.version, 1);
    assert_eq!(first.size, 100);
    // Racing pushes each get their own version.
    let racers: Vec<_> = (2..6u8).map(|n| tokio::spawn(push(n))).collect();
    let mut versions = vec![first.version];
    for r in racers {
        versions.push(r.await.unwrap().unwrap().version);
    }
    versions.sort_unstable();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
    assert_eq!(reg.versions("ctr").await.unwrap(), [1, 2, 3, 4, 5]);
    assert_eq!(reg.names().await.unwrap(), ["ctr"]);
    let m3 = reg.manifest("ctr", 3).await.unwrap();
    assert_eq!(m3.signature, signature());
    assert_eq!(m3.lineage.pushed_by, "ci");
    assert!(reg.manifest("ctr", 9).await.unwrap_err().to_string().contains("no version 9"));

    // Triton's layout: config.pbtxt beside the numbered versions.
    let store = hourglass_core::store::open(&root).unwrap();
    let config = store.get(root.join("ctr/config.pbtxt").key()).await.unwrap();
    let config = String::from_utf8(config.to_vec()).unwrap();
    assert!(config.contains("backend: \"onnxruntime\"") && config.contains("dims: [ -1, 39 ]"), "{config}");
    // Each version holds the bytes its manifest names, and no two the same.
    let mut shas = std::collections::BTreeSet::new();
    for v in 1..=5 {
        let body = store.get(root.join(&format!("ctr/{v}/model.onnx")).key()).await.unwrap();
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body));
        assert_eq!(sha, reg.manifest("ctr", v).await.unwrap().sha256, "version {v}");
        shas.insert(sha);
    }
    assert_eq!(shas.len(), 5);

    // Aliases: set, move, refuse a stale expectation, resolve.
    assert_eq!(reg.set_alias("ctr", "champion", 1, Some(None), "alice").await.unwrap(), None);
    assert_eq!(reg.set_alias("ctr", "champion", 2, None, "alice").await.unwrap(), Some(1));
    let resolved = reg.resolve("ctr", &Selector::Alias("champion".into())).await.unwrap();
    assert_eq!((resolved.version, resolved.model.clone()), (2, reg.model_url("ctr", 2)));
    // Two promotions read from the same state: one wins, one is refused.
    let promote = |v: u64| {
        let reg = reg.clone();
        tokio::spawn(async move { reg.set_alias("ctr", "champion", v, Some(Some(2)), "bob").await })
    };
    let (a, b) = (promote(3), promote(4));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert!(a.is_ok() != b.is_ok(), "exactly one promotion wins: {a:?} {b:?}");
    let loser = a.err().or(b.err()).unwrap().to_string();
    assert!(loser.contains("someone else moved it"), "{loser}");
    let winner = reg.resolve("ctr", &Selector::Alias("champion".into())).await.unwrap().version;
    assert!(winner == 3 || winner == 4);
    // Concurrent moves without expectations all land, none lost from history.
    let moves: Vec<_> = [5u64, 1, 2]
        .into_iter()
        .map(|v| {
            let reg = reg.clone();
            tokio::spawn(async move { reg.set_alias("ctr", "challenger", v, None, "ci").await })
        })
        .collect();
    for m in moves {
        m.await.unwrap().unwrap();
    }
    let (aliases, _) = reg.aliases("ctr").await.unwrap();
    assert_eq!(aliases.history["challenger"].len(), 3);

    // Rollback steps back one move at a time.
    reg.set_alias("ctr", "prod", 1, None, "x").await.unwrap();
    reg.set_alias("ctr", "prod", 2, None, "x").await.unwrap();
    reg.set_alias("ctr", "prod", 3, None, "x").await.unwrap();
    assert_eq!(reg.rollback("ctr", "prod", "x").await.unwrap(), (3, 2));
    assert_eq!(reg.rollback("ctr", "prod", "x").await.unwrap(), (2, 1));
    assert!(reg.rollback("ctr", "prod", "x").await.unwrap_err().to_string().contains("no earlier version"));
    assert!(reg.resolve("ctr", &Selector::Alias("nope".into())).await.unwrap_err().to_string().contains("champion"));

    // References parse to this registry.
    let r = ModelRef::parse(&format!("{root}ctr@champion")).unwrap();
    assert_eq!(
        r,
        ModelRef::Registry { root: root.clone(), name: "ctr".into(), selector: Selector::Alias("champion".into()) }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_on_the_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    suite(BlobUrl::parse(&format!("{}/registry/", dir.path().display())).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_on_s3() {
    let bucket = common::create_bucket("registry").await;
    suite(BlobUrl::parse(&format!("s3://{bucket}/registry/")).unwrap()).await;
}
