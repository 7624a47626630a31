//! Round-trip statistics from heartbeat pings.

use std::collections::VecDeque;
use std::time::Duration;

/// The last round-trip times to one peer, summarised as median, p95 and jitter.
#[derive(Clone, Debug, Default)]
pub struct RttStats {
    samples: VecDeque<Duration>,
}

/// The longest a trusted peer may stay silent however slow its path looks (a peer that delays
/// its own answers gains no more; its stages still time out at the session's stage timeout).
pub const MAX_SILENCE: Duration = Duration::from_secs(5);

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

    /// How long a trusted peer may stay silent before it is declared lost: `floor` on a short,
    /// steady path, longer on a slow or unsteady one: one heartbeat plus four retransmission
    /// timeouts, each the median plus four times the jitter (RFC 6298's SRTT + 4·RTTVAR) or
    /// the p95 where that is longer.
    pub fn silence_limit(&self, floor: Duration, heartbeat: Duration) -> Duration {
        let Some(median) = self.median() else { return floor };
        let timeout = (median + self.jitter().unwrap_or_default() * 4).max(self.p95().unwrap_or(median));
        floor.max(heartbeat + timeout * 4).min(MAX_SILENCE.max(floor))
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

    #[test]
    fn a_peer_on_a_slow_or_unsteady_path_gets_longer_to_be_heard_from() {
        let (floor, heartbeat) = (Duration::from_millis(800), Duration::from_millis(100));
        let path = |samples: &[u64]| {
            let mut stats = RttStats::default();
            samples.iter().for_each(|&ms| stats.record(Duration::from_millis(ms)));
            stats.silence_limit(floor, heartbeat)
        };
        assert_eq!(path(&[]), floor, "nothing measured yet");
        assert_eq!(path(&[1; 10]), floor, "a LAN");
        assert_eq!(path(&[100; 10]), floor, "100 ms, steady: 100 + 4 × 100 ms is under the floor");
        assert_eq!(path(&[150; 10]), floor, "150 ms, steady: 100 + 4 × 150 ms is 700 ms");
        assert_eq!(path(&[250; 10]), Duration::from_millis(1100), "250 ms, steady: 100 + 4 × 250 ms");
        // 100 ms with 50 ms swings: 100 + 4 × (100 + 4 × 50) = 1300 ms.
        assert_eq!(path(&[100, 150, 100, 150, 100, 150, 100, 150, 100, 150]), Duration::from_millis(1300));
        // A steady 100 ms with one 600 ms outlier in ten: the p95 (600 ms) is the longer.
        assert_eq!(path(&[100, 100, 100, 100, 100, 100, 100, 100, 100, 600]), Duration::from_millis(2500));
        assert_eq!(path(&[2000; 10]), MAX_SILENCE, "capped");
    }
}
