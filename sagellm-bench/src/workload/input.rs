//! Files the user names (prompts, datasets, traces, config files, saved runs, baselines, a
//! model's config.json), opened only when they are regular files.
//!
//! A device never ends (`--dataset sharegpt /dev/zero` filled 9 GB of memory in 20 s before
//! this check) and a named pipe blocks until a writer comes (the run hung before its first
//! request, Ctrl-C its only way out). Every reader of a user's file goes through [`open`] or
//! [`read_to_string`], so each flag and field refuses them with the same words. Symbolic links
//! are followed: a link to a regular file is a regular file.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Opens `path` for reading if it is a regular file; otherwise an error of kind
/// [`io::ErrorKind::InvalidInput`] that says what it is instead (the caller adds the path).
/// A missing file keeps its [`io::ErrorKind::NotFound`].
pub fn open(path: &Path) -> io::Result<File> {
    let file = open_without_waiting(path)?;
    let kind = file.metadata()?.file_type();
    if kind.is_file() {
        return Ok(file);
    }
    let what = if kind.is_dir() {
        "a folder"
    } else {
        "a device, a pipe or a socket"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("it is {what}, not a regular file; give a file"),
    ))
}

/// The whole text of the regular file at `path` (see [`open`]).
pub fn read_to_string(path: &Path) -> io::Result<String> {
    let mut text = String::new();
    open(path)?.read_to_string(&mut text)?;
    Ok(text)
}

/// Opens without blocking on a named pipe, so that [`open`] can look at what it opened
/// (checking the path first would leave a moment to swap the file). Reads of a regular file
/// ignore the flag.
#[cfg(unix)]
fn open_without_waiting(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
}

#[cfg(not(unix))]
fn open_without_waiting(path: &Path) -> io::Result<File> {
    File::open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regular_file_and_a_link_to_one_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("prompts.txt");
        std::fs::write(&file, "one\ntwo\n").unwrap();
        assert_eq!(read_to_string(&file).unwrap(), "one\ntwo\n");
        #[cfg(unix)]
        {
            let link = dir.path().join("link.txt");
            std::os::unix::fs::symlink(&file, &link).unwrap();
            assert_eq!(read_to_string(&link).unwrap(), "one\ntwo\n");
        }
    }

    #[test]
    fn a_missing_file_stays_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_to_string(&dir.path().join("absent")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_folder_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_to_string(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("a folder"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn a_device_is_refused_without_reading_it() {
        // /dev/zero never ends: reading it would not return.
        let err = read_to_string(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("a device"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn a_named_pipe_without_a_writer_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::RWXU).unwrap();
        // A plain open would wait here for a writer that never comes.
        let err = open(&fifo).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
