//! Batch splitting as plain logic: whether a request's batch runs as one pipeline (its remote
//! stages a chain over the players, as [`super::pipeline::StageAssignment`] places them) or is
//! cut into slices of rows, one per player in proportion to its measured speed, each slice
//! running all the remote stages on its player and the owner putting the rows back together.
//!
//! The choice is by predicted completion time. A pipeline's remote stages run one after the
//! other, each at the speed of the player it is placed on, with a hop between each; a split's
//! slices run side by side, so it finishes with its slowest slice, after two hops (there and
//! back). Stage 0 runs on the owner either way (on the whole batch, or on each slice) and is
//! left out of both.

use std::ops::Range;

use crate::net::PeerUuid;
use crate::session::pipeline::PlayerSpeed;

/// Rows `rows` of a split batch, run by `player`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchSlice {
    /// The player that runs the slice's remote stages.
    pub player: PeerUuid,
    /// Its rows of the batch.
    pub rows: Range<usize>,
}

/// How one request's batch runs.
#[derive(Clone, Debug, PartialEq)]
pub enum BatchPlan {
    /// Whole, its remote stages a chain over the players.
    Pipeline,
    /// In slices of rows, one per player.
    Split(Vec<BatchSlice>),
}

/// What a request costs, for [`plan_batch`]: the FLOPs of one row of each remote stage (stages
/// 1.. of the plan) and the time one hop between players takes.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteWork {
    /// FLOPs per batch row of each remote stage, in stage order.
    pub flops_per_row: Vec<f64>,
    /// One hop's time between two players, in seconds (a link's round trip is a fair guess).
    pub hop_s: f64,
}

/// Slices are whole blocks of this many rows (the last may be shorter): each new slice size
/// makes its player cut and compile the model's stages for that batch, so sizes that follow
/// every drift of the measured speeds would keep the players compiling.
pub const ROWS_PER_BLOCK: usize = 8;

/// The rows of a batch of `batch` for each of `players`, in blocks of [`ROWS_PER_BLOCK`] in
/// proportion to their speeds (largest remainder), the last block cut to the batch; a player
/// that would get no block is left out. Empty if no player has a usable speed.
pub fn split_rows(batch: usize, players: &[PlayerSpeed]) -> Vec<BatchSlice> {
    let usable: Vec<&PlayerSpeed> = players.iter().filter(|w| w.speed.is_finite() && w.speed > 0.0).collect();
    let total: f64 = usable.iter().map(|w| w.speed).sum();
    if usable.is_empty() || batch == 0 {
        return Vec::new();
    }
    let blocks = batch.div_ceil(ROWS_PER_BLOCK);
    let exact: Vec<f64> = usable.iter().map(|w| blocks as f64 * w.speed / total).collect();
    let mut shares: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
    let mut by_remainder: Vec<usize> = (0..usable.len()).collect();
    by_remainder.sort_by(|&a, &b| (exact[b] - shares[b] as f64).total_cmp(&(exact[a] - shares[a] as f64)).then(a.cmp(&b)));
    let short = blocks - shares.iter().sum::<usize>();
    for &i in by_remainder.iter().take(short) {
        shares[i] += 1;
    }
    let mut start = 0;
    usable
        .iter()
        .zip(shares)
        .filter(|(_, n)| *n > 0)
        .map(|(w, n)| {
            let end = (start + n * ROWS_PER_BLOCK).min(batch);
            let slice = BatchSlice { player: w.peer, rows: start..end };
            start = end;
            slice
        })
        .collect()
}

/// The predicted seconds of a pipeline whose remote stages run on players of `route_speeds`
/// (FLOP/s, one per remote stage) for a batch of `batch`.
pub fn pipeline_seconds(batch: usize, work: &RemoteWork, route_speeds: &[f64]) -> f64 {
    let compute: f64 = work.flops_per_row.iter().zip(route_speeds).map(|(f, s)| batch as f64 * f / s).sum();
    compute + (work.flops_per_row.len() + 1) as f64 * work.hop_s
}

/// The predicted seconds of a split into `slices` over players of the speeds in `players`.
pub fn split_seconds(slices: &[BatchSlice], work: &RemoteWork, players: &[PlayerSpeed]) -> f64 {
    let per_row: f64 = work.flops_per_row.iter().sum();
    let slowest = slices
        .iter()
        .map(|slice| {
            let speed = players.iter().find(|w| w.peer == slice.player).map_or(f64::NAN, |w| w.speed);
            slice.rows.len() as f64 * per_row / speed
        })
        .fold(0.0, f64::max);
    slowest + 2.0 * work.hop_s
}

/// Whether a batch of `batch` is split over `players` (their measured FLOP/s) or runs as one
/// pipeline over the players of `route_speeds`: split where it would give at least two slices
/// and is predicted to finish first.
pub fn plan_batch(batch: usize, work: &RemoteWork, route_speeds: &[f64], players: &[PlayerSpeed]) -> BatchPlan {
    let slices = split_rows(batch, players);
    if slices.len() < 2 || route_speeds.iter().any(|s| !s.is_finite() || *s <= 0.0) {
        return BatchPlan::Pipeline;
    }
    match split_seconds(&slices, work, players) < pipeline_seconds(batch, work, route_speeds) {
        true => BatchPlan::Split(slices),
        false => BatchPlan::Pipeline,
    }
}

#[cfg(test)]
#[path = "batch_split_tests.rs"]
mod tests;
