//! The README's two commands build one dependency tree: `cargo run --release` (the binary
//! alone) compiles nothing that `cargo test --workspace --release` must compile again with
//! other features.
//!
//! Cargo resolves features for the packages a command selects. `cargo run` selects this
//! package without dev-dependencies; `cargo test --workspace` selects every member with theirs
//! (the test server's axum, proptest). A shared crate that gets more features in the second
//! is compiled twice, and everything above it too: serde_json with `raw_value` alone
//! rebuilt safetensors, tokenizers and candle, minutes on two cores. The root Cargo.toml
//! lists those features on the binary's own dependencies; this test fails when a dependency
//! change brings a new difference, and names the package and the features to add there.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Package (name and version) to the feature sets `cargo tree` shows for it. A package can
/// show more than one: build-time units (the proc-macro crate's own tests) resolve apart.
type Features = BTreeMap<String, BTreeSet<BTreeSet<String>>>;

fn tree(args: &[&str]) -> Features {
    let output = Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["tree", "--quiet", "--prefix", "none", "--format", "{p}|{f}"])
        .args(args)
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo tree {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut features = Features::new();
    for line in String::from_utf8(output.stdout).unwrap().lines() {
        let line = line.trim_end_matches(" (*)");
        let Some((package, list)) = line.split_once('|') else {
            continue;
        };
        let set = list
            .split(',')
            .filter(|f| !f.is_empty())
            .map(str::to_owned)
            .collect();
        features
            .entry(package.replace(" (proc-macro)", ""))
            .or_default()
            .insert(set);
    }
    features
}

#[test]
fn the_main_command_builds_every_crate_with_the_features_the_tests_use() {
    let main_command = tree(&["-p", "sagellm-benchmark", "-e", "normal,build"]);
    let test_command = tree(&["--workspace", "-e", "normal,build,dev"]);
    assert!(
        main_command
            .keys()
            .any(|p| p.starts_with("sagellm-bench v")),
        "the binary's tree holds the library: {main_command:?}"
    );

    let mut built_twice = Vec::new();
    for (package, sets) in &main_command {
        let in_tests = test_command
            .get(package)
            .unwrap_or_else(|| panic!("{package} is in the binary's tree but not the tests'"));
        for set in sets {
            // The tests' build of the same unit has at least the binary's features; more
            // means a second compile. Smaller sets are separate build-time units.
            let wider: Vec<_> = in_tests
                .iter()
                .filter(|t| t.is_superset(set) && *t != set)
                .collect();
            for tests_set in &wider {
                let missing: Vec<_> = tests_set.difference(set).cloned().collect();
                built_twice.push(format!("{package}: add features {missing:?}"));
            }
            if wider.is_empty() && !in_tests.contains(set) {
                built_twice.push(format!("{package}: features {set:?} differ in the tests"));
            }
        }
    }
    assert!(
        built_twice.is_empty(),
        "the test command would compile these again with more features; list them on the \
         root Cargo.toml's [dependencies]:\n{}",
        built_twice.join("\n")
    );
}
