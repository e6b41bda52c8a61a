//! What the machine lets a run hold: open files (each connection to a server is one) and, for
//! an open loop, how many requests may be in flight at once.
//!
//! At start the CLI raises the soft `RLIMIT_NOFILE` to the hard limit, as vLLM and SGLang do;
//! a closed loop that still cannot keep its connections and the run's own files open is
//! refused before its first request. An open loop is capped instead ([`open_loop_slots`]): a
//! request whose time comes while every slot is busy waits for one, and is counted.

use crate::workload::{Arrival, Workload};

/// File handles kept free of connections: the run's output files (the records being appended,
/// a temporary file being renamed, the folder's lock), the runtime's own, a scrape of
/// `/metrics`, a tokenizer, the terminal.
pub const FILE_RESERVE: u64 = 32;

/// The most requests an open loop keeps in flight, whatever the open-files limit: each costs a
/// task, a connection and its buffers, and a client with more has stopped measuring the server.
pub const MAX_OPEN_LOOP_IN_FLIGHT: usize = 16_384;

/// The open-files limits of this process and how many files it has open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit: what `open` is held to. `u64::MAX` when unlimited.
    pub soft: u64,
    /// The hard limit, which the soft one may be raised to. `u64::MAX` when unlimited.
    pub hard: u64,
    /// Files open now.
    pub open: u64,
}

impl OpenFiles {
    /// This process's limits now, where the platform tells them.
    pub fn now() -> Option<Self> {
        #[cfg(unix)]
        {
            use rustix::process::{getrlimit, Resource};
            let limit = getrlimit(Resource::Nofile);
            Some(OpenFiles {
                soft: limit.current.unwrap_or(u64::MAX),
                hard: limit.maximum.unwrap_or(u64::MAX),
                open: open_now(),
            })
        }
        #[cfg(not(unix))]
        {
            None
        }
    }

    /// Connections that fit beside the files open now and [`FILE_RESERVE`].
    pub fn free_for_connections(&self) -> u64 {
        self.soft
            .saturating_sub(self.open)
            .saturating_sub(FILE_RESERVE)
    }
}

/// Raises the soft open-files limit to the hard one (unix), returning the limits after.
pub fn raise_open_files_limit() -> Option<OpenFiles> {
    #[cfg(unix)]
    {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let limit = getrlimit(Resource::Nofile);
        if limit.current != limit.maximum {
            let raised = Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            };
            if setrlimit(Resource::Nofile, raised).is_err() {
                // macOS refuses an unlimited soft limit: try the kernel's own cap, as Python's
                // resource users do.
                let _ = setrlimit(
                    Resource::Nofile,
                    Rlimit {
                        current: Some(limit.maximum.unwrap_or(1 << 20).min(1 << 20)),
                        maximum: limit.maximum,
                    },
                );
            }
        }
    }
    OpenFiles::now()
}

/// Files this process has open (Linux and macOS list them; elsewhere a guess).
#[cfg(unix)]
fn open_now() -> u64 {
    for dir in ["/proc/self/fd", "/dev/fd"] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            // Less the one reading the folder.
            return (entries.count() as u64).saturating_sub(1);
        }
    }
    16
}

/// The connections `workload` keeps open at once on a server backend: its concurrency (closed
/// loop), or its open-loop slots.
pub fn connections_needed(workload: &Workload) -> usize {
    match workload.arrival {
        Arrival::Closed { concurrency } => concurrency.min(workload.num_requests),
        _ => 1,
    }
}

/// Refuses, before any request, workloads whose connections to a server cannot all be open
/// beside the run's own files under this process's open-files limit.
pub fn check_connections(workloads: &[Workload]) -> Result<(), String> {
    let Some(files) = OpenFiles::now() else {
        return Ok(());
    };
    let Some(worst) = workloads.iter().max_by_key(|w| connections_needed(w)) else {
        return Ok(());
    };
    let needed = connections_needed(worst) as u64;
    if needed <= files.free_for_connections() {
        return Ok(());
    }
    let fits = files.free_for_connections();
    let raise = if files.hard > files.soft {
        String::new()
    } else {
        format!(
            " (the hard limit is {}, so raise it as root, or in limits.conf)",
            files.hard
        )
    };
    Err(format!(
        "workload `{}` keeps {needed} connections open, but this process may open only {} \
         files (`ulimit -n`), {} of them already open and {FILE_RESERVE} kept for the results: \
         {fits} connections fit. Raise the limit, e.g. `ulimit -n {}`{raise}, or lower \
         --concurrency to {}",
        worst.name,
        files.soft,
        files.open,
        needed + files.open + FILE_RESERVE,
        fits.max(1)
    ))
}

/// How many requests an open loop keeps in flight at most: what the open-files limit leaves
/// for connections, within [`MAX_OPEN_LOOP_IN_FLIGHT`].
pub fn open_loop_slots() -> usize {
    let free = OpenFiles::now().map_or(u64::MAX, |f| f.free_for_connections());
    (free.min(MAX_OPEN_LOOP_IN_FLIGHT as u64) as usize).max(1)
}

/// Memory a request in flight takes, bytes: its task, prompt, stream state and the engine's or
/// connection's share. Measured on the mock (`short`, 10^5 requests): 59 MB of peak resident
/// memory one at a time, 524 MB 10^5 at a time, so about 4.6 KiB each; rounded up.
pub const BYTES_PER_REQUEST_IN_FLIGHT: u64 = 6 << 10;

/// Memory each measured request keeps until its workload ends (its sample and the position of
/// its record in the file), bytes; rounded up from the same measurement.
pub const BYTES_PER_REQUEST_KEPT: u64 = 512;

/// Memory this machine has available now, bytes (Linux: `MemAvailable`); `None` elsewhere.
pub fn memory_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The memory `workload` needs at its peak, by the estimates above, bytes.
pub fn memory_needed(workload: &Workload) -> u64 {
    let in_flight = match workload.arrival {
        Arrival::Closed { concurrency } => concurrency.min(workload.num_requests),
        _ => open_loop_slots()
            .min(workload.max_concurrency.unwrap_or(usize::MAX))
            .min(workload.num_requests),
    } as u64;
    // The open loop's schedule: one entry a request.
    let schedule = match workload.arrival {
        Arrival::Closed { .. } => 0,
        _ => 16,
    };
    in_flight
        .saturating_mul(BYTES_PER_REQUEST_IN_FLIGHT)
        .saturating_add(
            (workload.num_requests as u64).saturating_mul(BYTES_PER_REQUEST_KEPT + schedule),
        )
}

/// Refuses, before any request, a workload whose requests in flight and kept results would
/// not fit in the memory this machine has available (where it says).
pub fn check_memory(workload: &Workload) -> Result<(), String> {
    let Some(available) = memory_available() else {
        return Ok(());
    };
    let needed = memory_needed(workload);
    if needed <= available {
        return Ok(());
    }
    let gib = |bytes: u64| bytes as f64 / (1u64 << 30) as f64;
    let kept = (workload.num_requests as u64).saturating_mul(BYTES_PER_REQUEST_KEPT);
    let fits = available.saturating_sub(kept) / BYTES_PER_REQUEST_IN_FLIGHT;
    Err(format!(
        "it needs about {:.1} GiB of memory ({} KiB for each request in flight, {} bytes for \
         each request kept), but this machine has {:.1} GiB available; lower --concurrency (about \
         {fits} in flight fit) or --num-requests",
        gib(needed),
        BYTES_PER_REQUEST_IN_FLIGHT >> 10,
        BYTES_PER_REQUEST_KEPT,
        gib(available),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn the_limits_are_read_and_leave_room() {
        let files = raise_open_files_limit().unwrap();
        assert!(files.soft <= files.hard);
        assert!(files.open > 0 && files.open < files.soft);
        assert!(open_loop_slots() >= 1 && open_loop_slots() <= MAX_OPEN_LOOP_IN_FLIGHT);
    }

    #[test]
    fn ten_million_requests_in_flight_need_more_than_they_are_told() {
        let mut workload = Workload::short_input();
        workload.num_requests = 10_000_000;
        workload.arrival = Arrival::Closed {
            concurrency: 10_000_000,
        };
        assert!(memory_needed(&workload) > 50 << 30);
        workload.arrival = Arrival::Closed { concurrency: 1 };
        assert!(memory_needed(&workload) < 6 << 30);
    }
}
