//! Runs the real `sagellm-benchmark run` on one workload defined in a config file of its own,
//! into a fresh folder: the part every CLI test against a server repeats.
#![allow(dead_code)] // each test file uses its own part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// One finished run: the process's output and the folder it wrote to (`out`).
pub struct Run {
    pub output: Output,
    dir: tempfile::TempDir,
}

impl Run {
    /// The output folder.
    pub fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    /// `<workload>_metrics.json`.
    pub fn metrics(&self, workload: &str) -> serde_json::Value {
        read_json(&self.out().join(format!("{workload}_metrics.json")))
    }

    /// `<workload>_requests.jsonl`, one value per record.
    pub fn records(&self, workload: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.out().join(format!("{workload}_requests.jsonl")))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `run --workload NAME --config FILE --output DIR` plus `args`, with `env` set, where FILE
/// holds `[workloads.NAME]` with the fields of `workload` (TOML lines).
pub fn run(name: &str, workload: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("workload.toml");
    std::fs::write(&config, format!("[workloads.{name}]\n{workload}\n")).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_sagellm-benchmark"));
    command
        .arg("run")
        .args(args)
        .args(["--workload", name, "--config"])
        .arg(&config)
        .arg("--output")
        .arg(dir.path().join("out"));
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().unwrap();
    Run { output, dir }
}
