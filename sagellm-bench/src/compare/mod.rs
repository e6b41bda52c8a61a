//! Comparing runs: a run against a saved baseline (bootstrap confidence intervals, noise
//! threshold), and several servers' runs side by side.
//!
//! Imports from `report/` and the layers below it.

pub mod baseline;
pub mod side_by_side;
