//! Reading back the files a run writes, for the tests that check them.
#![allow(dead_code)] // each test file uses its own part

use std::path::Path;

use serde_json::Value;

/// A JSON file (a summary, a metrics file).
pub fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A JSON Lines file (`<workload>_requests.jsonl`), one value per line.
pub fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
