//! Hours, not minutes: three players (an asker and two servers, K = 2) through coturn at an
//! emulated 20 ms round trip with about 1 % loss, asking for an hour (or `SOAK_S` seconds).
//! Every request must match the single-player result, none may be lost, and each process's
//! memory (VmRSS), sampled every minute, must stay flat. Ignored by a plain `cargo test`:
//!
//! ```text
//! cargo build --features scene --examples
//! SOAK_S=3600 cargo test --features scene --test p2p soak -- --ignored --nocapture
//! ```
//!
//! The samples go to `target/soak-memory.csv` (seconds, player, kB) as well as to stderr.

use std::time::Instant as Clock;

use super::impair::Impairment;
use super::turn::{coturn_installed, impaired_path, relay_and_signaling, relayed_peer};
use super::*;

/// A process's resident memory in kB, from /proc.
fn resident_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Whether memory stayed flat: the largest of the last quarter's samples is within 3 % (and
/// 8 MB) of the largest sample of the second quarter, once start-up has settled. Fewer than
/// eight samples say nothing.
fn flat(samples: &[u64]) -> Option<bool> {
    let quarter = samples.len() / 4;
    if samples.len() < 8 {
        return None;
    }
    let settled = samples[quarter..2 * quarter].iter().copied().max().unwrap_or(0);
    let last = samples[samples.len() - quarter..].iter().copied().max().unwrap_or(0);
    Some(last as f64 <= settled as f64 * 1.03 + 8_192.0)
}

#[test]
fn memory_is_flat_only_when_the_last_quarter_stays_near_the_settled_peak() {
    assert_eq!(flat(&[100_000, 180_000, 200_000, 201_000, 200_500, 202_000, 203_000, 202_000]), Some(true));
    assert_eq!(flat(&[100_000, 180_000, 200_000, 220_000, 240_000, 260_000, 280_000, 300_000]), Some(false), "20 MB a sample");
    // 500 MB growing by 1.5 MB a minute for an hour (90 MB an hour): a leak.
    let leaking: Vec<u64> = (0..60).map(|minute| 500_000 + minute * 1_500).collect();
    assert_eq!(flat(&leaking), Some(false));
    assert_eq!(flat(&[1, 2, 3]), None, "too few samples to say");
}

#[test]
#[ignore = "an hour long: SOAK_S=3600 cargo test --features scene --test p2p soak -- --ignored --nocapture"]
fn soak_three_players_at_20_ms_and_1_percent_loss_keep_every_request_and_flat_memory() {
    let seconds: u64 = std::env::var("SOAK_S").ok().and_then(|s| s.parse().ok()).unwrap_or(3_600);
    let _serial = Serial::lock();
    if !coturn_installed() {
        return;
    }
    in_namespace("soak::soak_three_players_at_20_ms_and_1_percent_loss_keep_every_request_and_flat_memory", || {
        let (_turn, _signaling) = relay_and_signaling();
        // Each packet crosses the relay twice (up to coturn, down to the other player): 5 ms
        // each way is a 20 ms round trip, and 0.25 % a crossing about 1 % a round trip.
        let way = Impairment { delay: Duration::from_millis(5), jitter: Duration::from_millis(1), loss: 0.0025, rate_bps: Some(50_000_000) };
        let relay = impaired_path(way);
        let lifetime = (seconds + 300).to_string();
        let server = |side: u8| {
            let room = format!("ws://10.{side}.0.1:3536/soak");
            relayed_peer(side, &["--role", "server", "--room", &room, "--key", KEY, "--plan", INT8_PLAN, "--lifetime-s", &lifetime, "--owner", OWNER_PUBLIC])
        };
        let (server_a, server_b) = (server(2), server(3));
        let for_s = seconds.to_string();
        // The asker's frames pause (10 ms unless SOAK_FRAME_SLEEP_US says otherwise), so that an
        // hour of it leaves a 2-core machine some CPU for other work.
        let frame_sleep = std::env::var("SOAK_FRAME_SLEEP_US").unwrap_or_else(|_| "10000".into());
        let mut asker = relayed_peer(
            1,
            &["--role", "asker", "--room", "ws://10.1.0.1:3536/soak", "--key", KEY, "--plan", INT8_PLAN, "--for-s", &for_s, "--servers", "2", "--k", "2", "--lifetime-s", &lifetime, "--owner-key", OWNER_SECRET, "--frame-sleep-us", &frame_sleep],
        );
        let players = [("asker", asker.child.id()), ("server_a", server_a.child.id()), ("server_b", server_b.child.id())];
        let mut samples: Vec<Vec<u64>> = vec![Vec::new(); players.len()];
        let mut csv = String::from("seconds,player,rss_kb\n");
        let start = Clock::now();
        while asker.child.try_wait().expect("wait").is_none() {
            thread::sleep(Duration::from_secs(60).min(Duration::from_secs(seconds / 4).max(Duration::from_secs(5))));
            let at = start.elapsed().as_secs();
            for ((name, pid), kept) in players.iter().zip(&mut samples) {
                if let Some(kb) = resident_kb(*pid) {
                    kept.push(kb);
                    csv.push_str(&format!("{at},{name},{kb}\n"));
                    eprintln!("{at:>6} s  {name:<9} {:>8.1} MB", kb as f64 / 1024.0);
                }
            }
        }
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"), std::path::PathBuf::from);
        let _ = std::fs::write(target.join("soak-memory.csv"), &csv);
        let (events, err) = asker.finish(Duration::from_secs(60));
        let json = summary(&events, &err);
        let requests = json["requests"].as_u64().unwrap_or(0);
        eprintln!("soak: {seconds} s, {requests} requests, median {} ms, p95 {} ms, relay dropped {:?}", json["median_ms"], json["p95_ms"], *relay.dropped.lock().unwrap());
        assert!(requests > 0, "{json}");
        assert_every_request_matched(&events, json, requests);
        let alive = resident_kb(server_a.child.id()).is_some() && resident_kb(server_b.child.id()).is_some();
        if !alive {
            // What the servers said last, to tell why one left.
            let tail = |(events, err): (Vec<Value>, String)| format!("{:?}\n{}", &events[events.len().saturating_sub(5)..], &err[err.len().saturating_sub(2_000)..]);
            panic!("a server left during the soak:\n{}\n{}", tail(server_a.finish(Duration::from_secs(1))), tail(server_b.finish(Duration::from_secs(1))));
        }
        for ((name, _), kept) in players.iter().zip(&samples) {
            assert_eq!(flat(kept), Some(true), "{name}'s memory grew (or too few samples): {kept:?} kB");
        }
    });
}
