//! Runs a test body inside a fresh network namespace (recipe from DESIGN.md): the test binary
//! re-runs itself under `unshare -n` with loopback up and a veth pair with a default route, so
//! WebRTC finds a non-loopback interface while nothing can leave the namespace.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

const INSIDE: &str = "BEVY_P2P_INFERENCE_TEST_NETNS";

const SETUP: &str = "ip link set lo up && ip link add v0 type veth peer name v1 && ip addr add 10.99.0.1/24 dev v0 \
    && ip link set v0 up && ip link set v1 up && ip route add default dev v0 && exec \"$0\" \"$@\"";

/// Runs `body` inside a namespace made for this test: directly when already inside, else by
/// re-running this one test under `unshare -n` and asserting that it passed there.
pub fn in_namespace(test: &str, body: impl FnOnce()) {
    if std::env::var_os(INSIDE).is_some() {
        return body();
    }
    if let Err(why) = namespaces_available() {
        // CI runs as root: there a missing namespace is a failure, not a skip.
        assert!(std::env::var_os("CI").is_none(), "{test}: {why}");
        eprintln!("skipped {test}: {why}");
        return;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let output = Command::new("unshare")
        .args(["-n", "sh", "-c", SETUP])
        .arg(&exe)
        // The test asked for runs, ignored or not (the soak is ignored unless asked for).
        .args(["--exact", test, "--include-ignored", "--nocapture", "--test-threads", "1"])
        .env(INSIDE, "1")
        .output()
        .expect("cannot run unshare (the p2p tests need root and util-linux)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{test} failed inside its network namespace ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    eprintln!("{stderr}");
}

/// Whether this process may make a network namespace with a veth pair in it: root (or
/// CAP_SYS_ADMIN), util-linux's `unshare` and iproute2's `ip`.
fn namespaces_available() -> Result<(), String> {
    let probe = Command::new("unshare").args(["-n", "sh", "-c", "ip link add v0 type veth peer name v1"]).output();
    match probe {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => Err(format!(
            "needs a network namespace of its own, which needs root and iproute2 (`unshare -n ... ip link add` said: {})",
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(error) => Err(format!("needs util-linux's `unshare` ({error})")),
    }
}

/// Where cargo put the examples this test drives (`cargo test` builds them).
pub fn examples_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps").join("examples")
}

/// Runs the multi-process tests one at a time: each starts three GPU processes.
pub struct Serial(#[allow(dead_code)] MutexGuard<'static, ()>);

impl Serial {
    /// Waits for the other multi-process tests to finish.
    pub fn lock() -> Serial {
        static LOCK: Mutex<()> = Mutex::new(());
        Serial(LOCK.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
