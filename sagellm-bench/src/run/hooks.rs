//! The hooks the runner calls as a run goes. Every hook has an empty default, so a reporter
//! implements only what it needs; the reporters themselves (files, table, charts) are in
//! `report/`, above this layer.

use crate::results::record::RequestRecord;
use crate::results::summary::{Provenance, Summary};
use crate::results::WorkloadResult;
use crate::workload::Workload;

/// A reporter could not do its work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// A file or folder could not be read, written or created (the disk is full, a folder is
    /// not writable, a file is missing).
    #[error("cannot {action} {}: {source}{}", path.display(), what_to_do(source))]
    Io {
        /// What was being done: `read`, `write`, `create`, `append to`.
        action: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Anything else: a file that is not what it should be, a folder another run holds, a
    /// chart that could not be drawn, or a custom reporter's own failure. The message says
    /// which.
    #[error("{0}")]
    Other(String),
}

impl ReportError {
    /// A failure to `action` (e.g. `write`) the file or folder at `path`.
    pub fn io(
        action: &'static str,
        path: impl Into<std::path::PathBuf>,
        source: std::io::Error,
    ) -> Self {
        ReportError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// A failure described by `message`.
    pub fn other(message: impl Into<String>) -> Self {
        ReportError::Other(message.into())
    }
}

/// The fix for the failures a user can fix where the files go, after the system's message.
fn what_to_do(error: &std::io::Error) -> &'static str {
    #[cfg(unix)]
    {
        use rustix::io::Errno;
        let code = error.raw_os_error();
        if code == Some(Errno::NOSPC.raw_os_error()) || code == Some(Errno::DQUOT.raw_os_error()) {
            return "; free space on that disk, or write the results elsewhere (--output DIR)";
        }
        if code == Some(Errno::ROFS.raw_os_error()) {
            return "; that file system is read-only: write the results elsewhere (--output DIR)";
        }
    }
    let _ = error;
    ""
}

/// Receives a run's results as they arrive.
pub trait Report {
    /// The run starts, with these workloads.
    fn run_started(
        &mut self,
        _provenance: &Provenance,
        _workloads: &[Workload],
    ) -> Result<(), ReportError> {
        Ok(())
    }
    /// A workload starts (after its warm-up).
    fn workload_started(&mut self, _workload: &Workload) -> Result<(), ReportError> {
        Ok(())
    }
    /// A measured request finished, successfully or not.
    fn request_finished(
        &mut self,
        _workload: &Workload,
        _record: &RequestRecord,
    ) -> Result<(), ReportError> {
        Ok(())
    }
    /// A workload finished; its result holds the aggregates.
    fn workload_finished(&mut self, _result: &WorkloadResult) -> Result<(), ReportError> {
        Ok(())
    }
    /// The run ended (completed or stopped early, as the summary says).
    fn run_finished(&mut self, _summary: &Summary) -> Result<(), ReportError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_full_disk_says_what_to_do_and_other_failures_say_only_what_happened() {
        let full = std::io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error());
        let message = ReportError::io("append to", "/r/a_requests.jsonl", full).to_string();
        assert!(
            message.starts_with("cannot append to /r/a_requests.jsonl: "),
            "{message}"
        );
        assert!(
            message.ends_with(
                "free space on that disk, or write the results elsewhere (--output DIR)"
            ),
            "{message}"
        );

        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        let message = ReportError::io("read", "/r/x.json", missing).to_string();
        assert_eq!(message, "cannot read /r/x.json: entity not found");
    }
}
