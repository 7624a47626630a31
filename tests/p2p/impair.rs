//! A userspace network impairment relay for tests and benchmarks (these machines' kernel has no
//! `netem` qdisc): UDP in, UDP out, with per-direction delay, jitter, loss and rate. Put on the
//! players' path (between the players and a TURN server, which every packet then crosses), it
//! gives a room the round trips, loss and uplinks of the internet.
//!
//! [`Lane`] is one direction, sans IO: packets in with `now`, packets out when due. [`Relay`]
//! is the thin UDP adapter: it listens on one address and forwards each client's datagrams to
//! the upstream address from a socket of its own (so replies find their way back), each
//! direction through its own lane.

#![allow(dead_code, reason = "the internet-grade session tests build on it")]

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// What one direction does to the packets that cross it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Impairment {
    /// Added to every packet's trip.
    pub delay: Duration,
    /// Each packet's delay varies uniformly by up to this much either way (order is kept, as
    /// on a single path).
    pub jitter: Duration,
    /// The share of packets dropped, 0 to 1.
    pub loss: f64,
    /// The link's rate in bits per second (`None`: unlimited); packets queue behind each other.
    pub rate_bps: Option<u64>,
}

impl Impairment {
    /// Nothing done to the packets.
    pub const NONE: Impairment = Impairment { delay: Duration::ZERO, jitter: Duration::ZERO, loss: 0.0, rate_bps: None };
}

/// One direction of the relay, sans IO.
pub struct Lane {
    impairment: Impairment,
    queue: VecDeque<(Instant, Vec<u8>)>,
    /// When the last packet queued leaves (the rate's and the order's floor for the next).
    last_departure: Option<Instant>,
    random: u64,
    /// Packets dropped so far.
    pub dropped: u64,
}

impl Lane {
    /// A lane doing `impairment`, its randomness drawn from `seed`.
    pub fn new(impairment: Impairment, seed: u64) -> Self {
        Self { impairment, queue: VecDeque::new(), last_departure: None, random: seed | 1, dropped: 0 }
    }

    /// A number in [0, 1) (xorshift64*).
    fn uniform(&mut self) -> f64 {
        self.random ^= self.random >> 12;
        self.random ^= self.random << 25;
        self.random ^= self.random >> 27;
        (self.random.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A packet that arrived at `now`: dropped, or queued to leave when its delay, jitter and
    /// the rate say.
    pub fn push(&mut self, packet: Vec<u8>, now: Instant) {
        if self.uniform() < self.impairment.loss {
            self.dropped += 1;
            return;
        }
        let jitter = self.impairment.jitter.as_secs_f64() * (2.0 * self.uniform() - 1.0);
        let trip = (self.impairment.delay.as_secs_f64() + jitter).max(0.0);
        let mut leaves = now + Duration::from_secs_f64(trip);
        if let Some(last) = self.last_departure {
            let serialization = self.impairment.rate_bps.map_or(Duration::ZERO, |bps| Duration::from_secs_f64(packet.len() as f64 * 8.0 / bps as f64));
            leaves = leaves.max(last + serialization);
        }
        self.last_departure = Some(leaves);
        self.queue.push_back((leaves, packet));
    }

    /// The packets due by `now`, in order.
    pub fn due(&mut self, now: Instant) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while self.queue.front().is_some_and(|(at, _)| *at <= now) {
            out.push(self.queue.pop_front().expect("checked").1);
        }
        out
    }

    /// When the next packet is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.front().map(|(at, _)| *at)
    }
}

/// A running relay: datagrams to [`Relay::addr`] go to the upstream address through `up`, the
/// replies come back through `down`. Stops when dropped.
pub struct Relay {
    /// Where clients send.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    worker: Option<thread::JoinHandle<()>>,
    /// Packets dropped (up, down).
    pub dropped: Arc<Mutex<(u64, u64)>>,
    /// Until when every packet, either way, is dropped (a blackout of the path).
    dark_until: Arc<Mutex<Option<Instant>>>,
}

impl Relay {
    /// Listens on `listen` and relays to `upstream`.
    pub fn start(listen: SocketAddr, upstream: SocketAddr, up: Impairment, down: Impairment) -> std::io::Result<Relay> {
        let front = UdpSocket::bind(listen)?;
        front.set_nonblocking(true)?;
        let addr = front.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(Mutex::new((0, 0)));
        let dark_until = Arc::new(Mutex::new(None::<Instant>));
        let (stop_flag, dropped_count, dark) = (stop.clone(), dropped.clone(), dark_until.clone());
        let worker = thread::spawn(move || {
            // Per client: its own upstream socket and a lane each way.
            let mut clients: HashMap<SocketAddr, (UdpSocket, Lane, Lane)> = HashMap::new();
            let mut buffer = vec![0u8; 65_536];
            let mut seed = 0x9e37_79b9_7f4a_7c15u64;
            let (mut dark_up, mut dark_down) = (0u64, 0u64);
            while !stop_flag.load(Ordering::Relaxed) {
                let now = Instant::now();
                let in_the_dark = dark.lock().expect("not poisoned").is_some_and(|until| now < until);
                while let Ok((n, from)) = front.recv_from(&mut buffer) {
                    if in_the_dark {
                        dark_up += 1;
                        continue;
                    }
                    let client = clients.entry(from).or_insert_with(|| {
                        let socket = UdpSocket::bind(SocketAddr::new(listen.ip(), 0)).expect("an upstream socket");
                        socket.set_nonblocking(true).expect("non-blocking");
                        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
                        (socket, Lane::new(up, seed), Lane::new(down, seed.rotate_left(17)))
                    });
                    client.1.push(buffer[..n].to_vec(), now);
                }
                for (addr, (socket, up_lane, down_lane)) in &mut clients {
                    while let Ok((n, from)) = socket.recv_from(&mut buffer) {
                        if in_the_dark {
                            dark_down += 1;
                        } else if from == upstream {
                            down_lane.push(buffer[..n].to_vec(), now);
                        }
                    }
                    for packet in up_lane.due(now) {
                        let _ = socket.send_to(&packet, upstream);
                    }
                    for packet in down_lane.due(now) {
                        let _ = front.send_to(&packet, *addr);
                    }
                }
                let (up_dropped, down_dropped) = clients.values().fold((0, 0), |(u, d), (_, a, b)| (u + a.dropped, d + b.dropped));
                *dropped_count.lock().expect("not poisoned") = (up_dropped + dark_up, down_dropped + dark_down);
                thread::sleep(Duration::from_micros(200));
            }
        });
        Ok(Relay { addr, stop, worker: Some(worker), dropped, dark_until })
    }

    /// Drops every packet, either way, for `duration` from now: the path goes dark.
    pub fn black_out(&self, duration: Duration) {
        *self.dark_until.lock().expect("not poisoned") = Some(Instant::now() + duration);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A UDP server on loopback that sends every datagram back to its sender.
    fn echo_server() -> SocketAddr {
        let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
        let upstream = echo.local_addr().unwrap();
        thread::spawn(move || {
            let mut buffer = [0u8; 1500];
            while let Ok((n, from)) = echo.recv_from(&mut buffer) {
                let _ = echo.send_to(&buffer[..n], from);
            }
        });
        upstream
    }

    #[test]
    fn a_lane_delays_every_packet_within_its_jitter_and_keeps_their_order() {
        let mut lane = Lane::new(Impairment { delay: 25 * MS, jitter: 5 * MS, ..Impairment::NONE }, 7);
        let start = Instant::now();
        for i in 0..200u32 {
            lane.push(i.to_le_bytes().to_vec(), start + i * MS / 10);
        }
        assert!(lane.due(start + 19 * MS).is_empty(), "none before delay - jitter");
        let mut out = Vec::new();
        let mut at = start;
        while let Some(next) = lane.next_due() {
            at = next;
            out.extend(lane.due(at));
        }
        assert_eq!(out.len(), 200);
        assert!(out.windows(2).all(|w| u32::from_le_bytes(w[0][..4].try_into().unwrap()) < u32::from_le_bytes(w[1][..4].try_into().unwrap())));
        assert!(at <= start + 20 * MS + 31 * MS, "the last leaves by its arrival + delay + jitter: {:?}", at - start);
    }

    #[test]
    fn a_lane_drops_its_share_of_packets() {
        let mut lane = Lane::new(Impairment { loss: 0.02, ..Impairment::NONE }, 11);
        let now = Instant::now();
        for _ in 0..50_000 {
            lane.push(vec![0; 100], now);
        }
        let share = lane.dropped as f64 / 50_000.0;
        assert!((0.017..0.023).contains(&share), "2 % lost, got {share}");
        assert_eq!(lane.due(now).len() as u64, 50_000 - lane.dropped);
    }

    #[test]
    fn a_lane_at_a_rate_spaces_packets_by_their_size() {
        // 100 packets of 1,250 B at 10 Mbit/s: 1 ms each, 99 ms from the first to the last.
        let mut lane = Lane::new(Impairment { rate_bps: Some(10_000_000), ..Impairment::NONE }, 3);
        let now = Instant::now();
        for _ in 0..100 {
            lane.push(vec![0; 1_250], now);
        }
        assert_eq!(lane.due(now).len(), 1);
        assert_eq!(lane.due(now + 49 * MS + MS / 2).len(), 49);
        assert_eq!(lane.due(now + 99 * MS + MS / 2).len(), 50);
    }

    #[test]
    fn a_relay_on_loopback_adds_its_delay_to_each_round_trip() {
        let upstream = echo_server();
        let way = Impairment { delay: 10 * MS, ..Impairment::NONE };
        let relay = Relay::start("127.0.0.1:0".parse().unwrap(), upstream, way, way).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut rtts = Vec::new();
        for i in 0..10u8 {
            let sent = Instant::now();
            client.send_to(&[i], relay.addr).unwrap();
            let mut reply = [0u8; 4];
            let (n, _) = client.recv_from(&mut reply).expect("the echo came back through the relay");
            assert_eq!(&reply[..n], &[i]);
            rtts.push(sent.elapsed());
        }
        rtts.sort();
        let median = rtts[5];
        assert!(median >= 20 * MS && median < 35 * MS, "two 10 ms trips: {median:?}");
    }

    #[test]
    fn a_blacked_out_relay_drops_everything_until_the_blackout_ends() {
        let upstream = echo_server();
        let relay = Relay::start("127.0.0.1:0".parse().unwrap(), upstream, Impairment::NONE, Impairment::NONE).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let echoed = |byte: u8| {
            client.send_to(&[byte], relay.addr).unwrap();
            let mut reply = [0u8; 4];
            client.recv_from(&mut reply).is_ok_and(|(n, _)| reply[..n] == [byte])
        };
        assert!(echoed(1), "through before the blackout");
        relay.black_out(Duration::from_millis(500));
        thread::sleep(5 * MS);
        assert!(!echoed(2) && !echoed(3), "nothing gets through in the dark");
        thread::sleep(400 * MS);
        assert!(echoed(4), "through again after it");
        assert_eq!(relay.dropped.lock().unwrap().0, 2);
    }
}
