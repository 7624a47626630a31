//! Statistics of repeated samples: median and p95, and the error between two outputs.

use std::time::{Duration, Instant};

use bevy_p2p_inference::prelude::*;

/// Median and p95 of the values `sample` returns when repeated for about `seconds` (at least 3
/// samples, after a warm-up).
pub fn sample_for(seconds: f64, mut sample: impl FnMut() -> Result<f64, String>) -> Result<(f64, f64), String> {
    sample()?;
    let mut values = Vec::new();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    while values.len() < 3 || (Instant::now() < deadline && values.len() < 500) {
        values.push(sample()?);
    }
    median_p95(&mut values)
}

/// Median and p95 wall time of `run`, in milliseconds.
pub fn time_it(seconds: f64, mut run: impl FnMut() -> Result<(), String>) -> Result<(f64, f64), String> {
    sample_for(seconds, || {
        let t = Instant::now();
        run()?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    })
}

/// The largest elementwise difference between `got` and `want`, relative to `want`'s largest
/// magnitude.
pub fn relative_error(got: &Tensor, want: &Tensor) -> f32 {
    let scale = want.data().iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    got.data().iter().zip(want.data()).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale
}

/// Median and p95 of `values` (sorted in place).
pub fn median_p95(values: &mut [f64]) -> Result<(f64, f64), String> {
    if values.is_empty() {
        return Err("no samples".into());
    }
    values.sort_by(f64::total_cmp);
    Ok((values[values.len() / 2], values[((values.len() - 1) as f64 * 0.95) as usize]))
}

