//! Running workloads: the runner (closed and open loop), interrupts, memory sampling, a shard's
//! common start, and the config file that selects the workloads and the backends' settings.
//!
//! Imports from `results/`, `backend/` and `workload/`, never from the layers above.

pub mod args;
pub mod config;
pub mod hooks;
pub mod interrupt;
pub mod limits;
mod memory;
pub mod repeat;
pub mod runner;
pub mod search;
pub mod shard;
