//! The recipes in deploy/ call the binary with flags it has: every `--flag` of the Kubernetes
//! manifests and the Slurm script is one that `run` or `merge` documents in its `--help`. (The
//! manifests' schema is checked by scripts/check-deploy.sh, which CI runs.)

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sagellm-benchmark");

fn help(command: &str) -> String {
    let out = Command::new(BIN)
        .args([command, "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_flag_the_recipes_pass_exists() {
    let known = help("run") + &help("merge");
    let root = env!("CARGO_MANIFEST_DIR");
    let recipes = [
        "deploy/kubernetes/shards-job.yaml",
        "deploy/kubernetes/merge-job.yaml",
        "deploy/slurm/shards.sbatch",
    ];
    let mut checked = 0;
    for recipe in recipes {
        let text = std::fs::read_to_string(format!("{root}/{recipe}")).unwrap();
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            for flag in line
                .split(|c: char| c.is_whitespace() || c == '"')
                .filter(|w| w.starts_with("--") && w.len() > 2)
            {
                let flag = flag.split('=').next().unwrap();
                assert!(
                    known.contains(&format!("{flag} ")) || known.contains(&format!("{flag}\n")),
                    "{recipe} passes {flag}, which neither `run` nor `merge` has"
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 12,
        "only {checked} flags found: did the recipes change shape?"
    );
}
