//! Durability paid once per run, not once per file.
//!
//! Every results file is written atomically (a temporary file renamed over its name), so a
//! killed process leaves each file whole, old or new, whether or not it was flushed: the kernel
//! holds what was written. Only a crash of the machine itself can lose data not yet on disk,
//! and against that one flush at the end covers every file: [`flush_to_disk`], which the run's
//! reporters and the command line's commands call when they are done. Until then the files'
//! names are kept here.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::report::ReportError;

/// Files written since the last flush.
static UNFLUSHED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Remembers a file just written, to be made durable by the next [`flush_to_disk`].
pub(crate) fn remember(path: &Path) {
    UNFLUSHED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(path.to_path_buf());
}

/// Makes every file written since the last call durable, with their folders' entries: on
/// Linux one `syncfs` per filesystem they are on; elsewhere a flush of each file and folder.
/// Files or folders removed since they were written are skipped.
pub fn flush_to_disk() -> Result<(), ReportError> {
    let files = std::mem::take(&mut *UNFLUSHED.lock().unwrap_or_else(|e| e.into_inner()));
    if files.is_empty() {
        return Ok(());
    }
    let mut folders: Vec<PathBuf> = files.iter().map(|f| folder_of(f)).collect();
    folders.sort();
    folders.dedup();
    flush(&files, &folders)
}

fn folder_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(target_os = "linux")]
fn flush(_files: &[PathBuf], folders: &[PathBuf]) -> Result<(), ReportError> {
    use rustix::fs::{fstat, open, syncfs, Mode, OFlags};
    let mut synced_devices = Vec::new();
    for folder in folders {
        let fail = |e: rustix::io::Errno| ReportError::io("flush", folder, e.into());
        let fd = match open(
            folder,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(fail(e)),
        };
        let device = fstat(&fd).map_err(fail)?.st_dev;
        if !synced_devices.contains(&device) {
            syncfs(&fd).map_err(fail)?;
            synced_devices.push(device);
        }
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn flush(files: &[PathBuf], folders: &[PathBuf]) -> Result<(), ReportError> {
    let skip_missing = |path: &Path, result: std::io::Result<()>| match result {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other.map_err(|e| ReportError::io("flush", path, e)),
    };
    for file in files {
        skip_missing(file, std::fs::File::open(file).and_then(|f| f.sync_all()))?;
    }
    // A folder's entries are flushed through the folder itself, which only unix opens.
    #[cfg(unix)]
    for folder in folders {
        skip_missing(
            folder,
            std::fs::File::open(folder).and_then(|f| f.sync_all()),
        )?;
    }
    #[cfg(not(unix))]
    let _ = folders;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_forgets_what_it_flushed_and_skips_what_was_removed() {
        let dir = tempfile::tempdir().unwrap();
        let kept = dir.path().join("kept.json");
        std::fs::write(&kept, b"{}").unwrap();
        remember(&kept);
        let gone = dir.path().join("gone").join("x.json");
        std::fs::create_dir(dir.path().join("gone")).unwrap();
        std::fs::write(&gone, b"{}").unwrap();
        remember(&gone);
        std::fs::remove_dir_all(dir.path().join("gone")).unwrap();
        flush_to_disk().unwrap();
        assert!(!UNFLUSHED
            .lock()
            .unwrap()
            .iter()
            .any(|f| f.starts_with(dir.path())));
    }
}
