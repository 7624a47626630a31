//! Round-trip statistics from heartbeat pings.

use std::collections::VecDeque;
use std::time::Duration;

/// The last round-trip times to one peer, summarised as median, p95 and jitter.
#[derive(Clone, Debug, Default)]
pub struct RttStats {
    samples: VecDeque<Duration>,
}

/// How many samples [`RttStats`] keeps.
pub const RTT_WINDOW: usize = 64;

impl RttStats {
    /// Records one round trip.
    pub fn record(&mut self, rtt: Duration) {
        if self.samples.len() == RTT_WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back(rtt);
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no round trip has been measured yet.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The `q`-quantile (0..=1, nearest rank) of the kept samples.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let mut sorted: Vec<Duration> = self.samples.iter().copied().collect();
        sorted.sort();
        let rank = ((q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize).max(1);
        sorted.get(rank - 1).copied()
    }

    /// The median round trip.
    pub fn median(&self) -> Option<Duration> {
        self.quantile(0.5)
    }

    /// The 95th-percentile round trip.
    pub fn p95(&self) -> Option<Duration> {
        self.quantile(0.95)
    }

    /// Mean absolute difference between consecutive round trips.
    pub fn jitter(&self) -> Option<Duration> {
        if self.samples.len() < 2 {
            return None;
        }
        let total: Duration = self.samples.iter().zip(self.samples.iter().skip(1)).map(|(a, b)| a.abs_diff(*b)).sum();
        Some(total / (self.samples.len() as u32 - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_p95_and_jitter_of_known_samples() {
        let mut stats = RttStats::default();
        for ms in 1..=100 {
            stats.record(Duration::from_millis(ms));
        }
        assert_eq!(stats.len(), RTT_WINDOW, "only the last {RTT_WINDOW} are kept");
        // Kept: 37..=100 ms.
        assert_eq!(stats.median(), Some(Duration::from_millis(68)));
        assert_eq!(stats.p95(), Some(Duration::from_millis(97)));
        assert_eq!(stats.jitter(), Some(Duration::from_millis(1)));
        assert_eq!(RttStats::default().median(), None);
    }
}
