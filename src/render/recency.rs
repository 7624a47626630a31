//! [`Recency`]: which keys of a bounded cache were used least recently, so that the render
//! world keeps at most so many compiled blocks however many input shapes peers send.

use std::collections::HashMap;
use std::hash::Hash;

/// When each key was last used, in uses counted from the start.
pub(super) struct Recency<K> {
    used: HashMap<K, u64>,
    uses: u64,
}

impl<K: Hash + Eq + Clone> Recency<K> {
    pub fn new() -> Self {
        Self { used: HashMap::new(), uses: 0 }
    }

    /// Notes a use of `key`.
    pub fn touch(&mut self, key: &K) {
        self.uses += 1;
        self.used.insert(key.clone(), self.uses);
    }

    /// Keeps only the keys `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.used.retain(|key, _| keep(key));
    }

    /// Forgets the least recently used keys beyond the `capacity` most recent, and returns
    /// them, the least recent first.
    pub fn evict_beyond(&mut self, capacity: usize) -> Vec<K> {
        let excess = self.used.len().saturating_sub(capacity);
        if excess == 0 {
            return Vec::new();
        }
        let mut by_age: Vec<(u64, K)> = self.used.iter().map(|(key, &used)| (used, key.clone())).collect();
        by_age.sort_by_key(|(used, _)| *used);
        let evicted: Vec<K> = by_age.into_iter().take(excess).map(|(_, key)| key).collect();
        for key in &evicted {
            self.used.remove(key);
        }
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_keys_beyond_the_capacity_are_evicted() {
        let mut recency = Recency::new();
        for key in ["a", "b", "c", "d"] {
            recency.touch(&key);
        }
        recency.touch(&"a");
        assert_eq!(recency.evict_beyond(4), Vec::<&str>::new());
        assert_eq!(recency.evict_beyond(2), vec!["b", "c"], "a was used again");
        recency.touch(&"e");
        assert_eq!(recency.evict_beyond(2), vec!["d"]);
        recency.retain(|key| *key != "a");
        assert_eq!(recency.evict_beyond(0), vec!["e"]);
    }
}
