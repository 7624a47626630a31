//! Hands finished readbacks to the main world as soon as the GPU is done with them.
//!
//! A map callback only runs inside `Device::poll`. Polling once per frame (in the render
//! world's cleanup) delivers a result one frame after the GPU finished at best, two when the
//! GPU finishes after that frame's poll. [`ReadbackPoller`] polls from its own thread while
//! maps are outstanding, so the callback sends the result over the channel within a fraction
//! of a millisecond of the GPU finishing, and the next frame's `PreUpdate` picks it up.
//!
//! It polls without waiting: a waiting poll holds the device's fence lock for the whole wait,
//! which would block the render thread's next submission.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Keeps a thread polling `device` while any registered readback is still unmapped. On wasm
/// (no threads) it does nothing and the frame's own poll delivers the results.
pub struct ReadbackPoller {
    outstanding: Arc<AtomicUsize>,
    #[cfg(not(target_arch = "wasm32"))]
    wake: crossbeam_channel::Sender<()>,
}

/// How long the thread sleeps between polls while maps are outstanding.
#[cfg(not(target_arch = "wasm32"))]
const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_micros(50);

impl ReadbackPoller {
    /// Starts the polling thread for `device`. It ends when the poller is dropped.
    pub fn new(device: wgpu::Device) -> Self {
        let outstanding = Arc::new(AtomicUsize::new(0));
        #[cfg(not(target_arch = "wasm32"))]
        {
            // One pending wake is enough: the thread rechecks the count before it sleeps again.
            let (wake, woken) = crossbeam_channel::bounded::<()>(1);
            let pending = outstanding.clone();
            let spawned = std::thread::Builder::new().name("inference readback".into()).spawn(move || {
                while woken.recv().is_ok() {
                    while pending.load(Ordering::Acquire) > 0 {
                        let _ = device.poll(wgpu::PollType::Poll);
                        std::thread::sleep(POLL_INTERVAL);
                    }
                }
            });
            if let Err(error) = spawned {
                bevy::log::warn!("no readback thread ({error}): results arrive with the frame's poll");
            }
            Self { outstanding, wake }
        }
        #[cfg(target_arch = "wasm32")]
        {
            let _ = device;
            Self { outstanding }
        }
    }

    /// Counts one more outstanding map; the returned guard, dropped in the map callback,
    /// counts it done.
    pub fn register(&self) -> OutstandingMap {
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        OutstandingMap(self.outstanding.clone())
    }

    /// Wakes the thread after maps were registered.
    pub fn wake(&self) {
        #[cfg(not(target_arch = "wasm32"))]
        let _ = self.wake.try_send(());
    }
}

/// One outstanding map, counted until dropped.
pub struct OutstandingMap(Arc<AtomicUsize>);

impl Drop for OutstandingMap {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
