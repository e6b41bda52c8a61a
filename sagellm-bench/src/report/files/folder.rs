//! A run owns its output folder: one run writes into a folder at a time (a lock file), and a
//! new run never mixes with an earlier one's files (they are moved into `previous-<time>/`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use super::super::names::SUMMARY_FILE;
use super::super::ReportError;
use super::{open_nofollow, prepare_dir, WRITE_PROBE_PREFIX};

/// The lock file a run holds in its output folder while it writes there.
pub const LOCK_FILE: &str = ".sagellm-bench.lock";

/// The prefix of the folder an earlier run's files are moved into: `previous-<UTC time>`.
pub const PREVIOUS_PREFIX: &str = "previous-";

/// A run's hold on its output folder, released when the last clone is dropped.
#[derive(Debug)]
pub struct Claim {
    dir: PathBuf,
    /// Held locked (flock) while the claim lives; closing it releases the lock.
    lock_file: File,
    moved_aside: Option<(PathBuf, usize)>,
}

impl Claim {
    /// The folder claimed.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the earlier run's files went, and how many there were, when there were any.
    pub fn moved_aside(&self) -> Option<(&Path, usize)> {
        self.moved_aside.as_ref().map(|(p, n)| (p.as_path(), *n))
    }
}

/// The folders this process has claimed: a second claim of the same folder (the CLI claims
/// before building the backend, the JSON writer when the run starts) shares the first.
static CLAIMS: Mutex<Vec<(PathBuf, Weak<Claim>)>> = Mutex::new(Vec::new());

/// Claims `dir` for one run: creates it, takes its lock (refusing when another process holds
/// it), and moves an earlier run's files into `previous-<time>/`. Claiming a folder this process
/// already holds returns the same claim.
pub fn claim(dir: &Path) -> Result<Arc<Claim>, ReportError> {
    prepare_dir(dir)?;
    let key = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mut claims = CLAIMS.lock().unwrap_or_else(|e| e.into_inner());
    claims.retain(|(_, weak)| weak.strong_count() > 0);
    if let Some(held) = claims
        .iter()
        .find(|(path, _)| *path == key)
        .and_then(|(_, weak)| weak.upgrade())
    {
        return Ok(held);
    }
    let lock = lock(dir)?;
    let moved_aside = move_earlier_run_aside(dir)?;
    let claim = Arc::new(Claim {
        dir: dir.to_path_buf(),
        lock_file: lock,
        moved_aside,
    });
    claims.push((key, Arc::downgrade(&claim)));
    Ok(claim)
}

impl Drop for Claim {
    /// Removes the lock file (while still holding the lock), so a finished run leaves only its
    /// results; a run that opened the file meanwhile finds it unlinked and takes a new one.
    fn drop(&mut self) {
        let path = self.dir.join(LOCK_FILE);
        if same_file(&self.lock_file, &path) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Whether `path` still names the file `file` has open.
fn same_file(file: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::symlink_metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, path);
        true
    }
}

/// Opens and locks `dir/.sagellm-bench.lock`, writing this process's id into it. A lock file
/// its holder removed while this process was locking it is let go and taken anew.
fn lock(dir: &Path) -> Result<File, ReportError> {
    let path = dir.join(LOCK_FILE);
    for _ in 0..100 {
        let file = lock_once(dir, &path)?;
        if same_file(&file, &path) {
            return Ok(file);
        }
    }
    Err(ReportError::Other(format!(
        "cannot lock {}: it keeps being replaced; give the run another folder with --output",
        path.display()
    )))
}

fn lock_once(dir: &Path, path: &Path) -> Result<File, ReportError> {
    let path = path.to_path_buf();
    let file = open_nofollow(
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false),
        &path,
    )
    .map_err(|e| {
        ReportError::Other(format!(
            "cannot create the lock file {}: {e}",
            path.display()
        ))
    })?;
    #[cfg(unix)]
    {
        use rustix::fs::{flock, FlockOperation};
        use std::io::{Read, Seek, Write};
        if let Err(e) = flock(&file, FlockOperation::NonBlockingLockExclusive) {
            let mut holder = String::new();
            let _ = (&file).read_to_string(&mut holder);
            let holder = match holder.trim().parse::<u32>() {
                Ok(pid) => format!("process {pid}"),
                Err(_) => "another process".to_string(),
            };
            if e == rustix::io::Errno::WOULDBLOCK {
                return Err(ReportError::Other(format!(
                    "another sagellm-benchmark run ({holder}) is writing into {}; wait for it \
                     to end, or give this run its own folder with --output",
                    dir.display()
                )));
            }
            return Err(ReportError::Other(format!(
                "cannot lock {}: {e}; give the run another folder with --output",
                path.display()
            )));
        }
        let mut writer = &file;
        let _ = file
            .set_len(0)
            .and_then(|()| writer.rewind())
            .and_then(|()| writeln!(writer, "{}", std::process::id()));
    }
    Ok(file)
}

/// Whether `name` is a file a run writes into its folder (and so belongs to that run).
fn is_run_file(name: &str) -> bool {
    name == SUMMARY_FILE
        || name == "index.html"
        || name == "comparison.json"
        || name == "comparison.md"
        || name.ends_with("_metrics.json")
        || name.ends_with("_requests.jsonl")
        || (name.ends_with(".svg") && !name.starts_with('.'))
}

/// Whether `name` is the temporary file of a run file being written atomically
/// (`.<run file>.<random>.tmp`, see `write_atomically_with`), or the probe of `prepare_dir`.
fn is_leftover_temporary(name: &str) -> bool {
    name.starts_with(WRITE_PROBE_PREFIX)
        || name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".tmp"))
            .and_then(|n| n.rsplit_once('.'))
            .is_some_and(|(file, _random)| is_run_file(file))
}

/// Moves every file an earlier run left in `dir` into a new `dir/previous-<UTC time>/`, and
/// removes the temporary files of a writer that was killed.
fn move_earlier_run_aside(dir: &Path) -> Result<Option<(PathBuf, usize)>, ReportError> {
    let cannot = |what: &str, path: &Path, e: std::io::Error| {
        ReportError::Other(format!(
            "cannot {what} {} (moving the earlier run's files aside): {e}; remove them or \
             choose another folder with --output",
            path.display()
        ))
    };
    let mut earlier = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| cannot("read", dir, e))? {
        let entry = entry.map_err(|e| cannot("read", dir, e))?;
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        // A planted link at a run file's name is moved aside too (the link, never its target).
        if kind.is_dir() {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if is_run_file(&name) {
            earlier.push(entry.file_name());
        } else if is_leftover_temporary(&name) {
            // A writer killed before its rename; the lock says none is writing now.
            let path = dir.join(&name);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(cannot("remove", &path, e))
                }
                _ => {}
            }
        }
    }
    if earlier.is_empty() {
        return Ok(None);
    }
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace([':', '-'], "");
    let mut aside = dir.join(format!("{PREVIOUS_PREFIX}{stamp}"));
    let mut n = 1;
    loop {
        match std::fs::create_dir(&aside) {
            Ok(()) => break,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => {
                n += 1;
                aside = dir.join(format!("{PREVIOUS_PREFIX}{stamp}-{n}"));
            }
            Err(e) => return Err(cannot("create", &aside, e)),
        }
    }
    for name in &earlier {
        let from = dir.join(name);
        std::fs::rename(&from, aside.join(name)).map_err(|e| cannot("move", &from, e))?;
    }
    Ok(Some((aside, earlier.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_temporaries_of_run_files_count_as_leftovers() {
        for leftover in [
            ".index.html.a1B2c3.tmp",
            ".short_input_metrics.json.xyz.tmp",
            ".sagellm-write-probe-X5kw5x",
        ] {
            assert!(is_leftover_temporary(leftover), "{leftover}");
        }
        for other in [
            ".sagellm-bench.lock",
            "index.html.a1.tmp",
            ".notes.txt.a1.tmp",
            ".index.html.tmp",
            ".index.html.a1",
        ] {
            assert!(!is_leftover_temporary(other), "{other}");
        }
    }

    #[test]
    fn a_second_claim_in_this_process_shares_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let a = claim(dir.path()).unwrap();
        let b = claim(dir.path()).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(dir.path().join(LOCK_FILE).exists());
        drop((a, b));
        assert!(!dir.path().join(LOCK_FILE).exists());
        // Released: claimable again, as a fresh claim.
        claim(dir.path()).unwrap();
    }

    #[test]
    fn an_earlier_runs_files_are_moved_aside_and_others_are_left() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            SUMMARY_FILE,
            "a_metrics.json",
            "a_requests.jsonl",
            "a_ttft.svg",
        ] {
            std::fs::write(dir.path().join(name), "old").unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        let claim = claim(dir.path()).unwrap();
        let (aside, count) = claim.moved_aside().unwrap();
        assert_eq!(count, 4);
        assert!(aside
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(PREVIOUS_PREFIX));
        assert_eq!(
            std::fs::read_to_string(aside.join("a_requests.jsonl")).unwrap(),
            "old"
        );
        assert!(!dir.path().join(SUMMARY_FILE).exists());
        assert!(dir.path().join("notes.txt").exists());
    }
}
