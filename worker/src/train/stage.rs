//! Staging a training job's dataset on the worker's disk: once per job per
//! worker (every trial of a sweep on this worker reads the same copy),
//! each file read with `If-Match` on the version the job planned, so a
//! dataset rewritten under a running job fails its trials instead of
//! mixing two datasets.

use super::validate::LocalFile;
use crate::{Error, Result};
use futures::StreamExt;
use hourglass_core::task::Format;
use hourglass_core::train::{DatasetFile, TrainJobRecord};
use hourglass_core::{JobId, store};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tracing::info;

/// Staged datasets kept at once: the newest jobs'; older ones are deleted.
const KEEP_JOBS: usize = 2;

#[derive(Debug)]
pub struct Staged {
    pub format: Format,
    pub train: Vec<LocalFile>,
    pub holdout: Vec<LocalFile>,
}

pub struct StagedData {
    dir: PathBuf,
    jobs: tokio::sync::Mutex<VecDeque<(JobId, Arc<Staged>)>>,
}

impl StagedData {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir, jobs: Default::default() }
    }

    /// The job's staged dataset, downloading it the first time. The lock
    /// is held across the download so concurrent trials stage once.
    pub async fn stage(&self, job: &TrainJobRecord) -> Result<Arc<Staged>> {
        let mut jobs = self.jobs.lock().await;
        if let Some((_, s)) = jobs.iter().find(|(j, _)| *j == job.job) {
            return Ok(s.clone());
        }
        let root = self.dir.join(job.job.as_str());
        let _ = tokio::fs::remove_dir_all(&root).await;
        let started = std::time::Instant::now();
        let train = download_all(&root.join("train"), &job.train_files).await?;
        let holdout = download_all(&root.join("holdout"), &job.holdout_files).await?;
        let format = job.train_files.first().map(|f| f.format).unwrap_or(Format::Parquet);
        info!(files = train.len() + holdout.len(), seconds = started.elapsed().as_secs_f64(), "dataset staged");
        let staged = Arc::new(Staged { format, train, holdout });
        jobs.push_back((job.job.clone(), staged.clone()));
        while jobs.len() > KEEP_JOBS {
            if let Some((old, _)) = jobs.pop_front() {
                let _ = tokio::fs::remove_dir_all(self.dir.join(old.as_str())).await;
            }
        }
        Ok(staged)
    }
}

async fn download_all(dir: &std::path::Path, files: &[DatasetFile]) -> Result<Vec<LocalFile>> {
    let io = |what: String, e: std::io::Error| Error::Decode { file: what, message: e.to_string() };
    tokio::fs::create_dir_all(dir).await.map_err(|e| io(dir.display().to_string(), e))?;
    let mut out = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let base = f.url.key().rsplit('/').next().unwrap_or("file");
        // Numbered: two prefixes may hold files of the same name.
        let path = dir.join(format!("{i:05}-{base}"));
        let store = store::open(&f.url)?;
        let mut stream = store.get_range_if(f.url.key(), 0..f.size, f.version.as_deref()).await?;
        let mut file = tokio::fs::File::create(&path).await.map_err(|e| io(path.display().to_string(), e))?;
        while let Some(chunk) = stream.next().await {
            file.write_all(&chunk?).await.map_err(|e| io(path.display().to_string(), e))?;
        }
        file.flush().await.map_err(|e| io(path.display().to_string(), e))?;
        out.push(LocalFile { path, format: f.format });
    }
    Ok(out)
}
