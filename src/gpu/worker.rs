//! The render side's submission thread: a request whose block already has its commands
//! recorded is submitted the moment the main world sends it, instead of waiting for the frame's
//! extract and the render world's next `RenderGraph` run.
//!
//! With Bevy's pipelined rendering the render world runs a frame behind the main world, so a
//! request that waits for the render world starts on the GPU a frame or more after it was made
//! (16 ms at 60 frames per second). Recorded commands need nothing from the render world but a
//! filled upload buffer and a `Queue::submit`, which this thread does. Requests without recorded
//! commands (the first of a block, or more at once than are recorded) are forwarded to the render
//! world, which compiles the block if needed and records them into its frame. The thread also
//! polls the device while maps are outstanding, so that results reach the main world as soon as
//! the GPU is done (see [`super::readback`]).
//!
//! No main-world code touches a wgpu object: the main world only sends jobs over a channel.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{select, Receiver, Sender};

use super::readback::ResultRoute;
use super::submission::{lock, SubmissionPool};
use crate::schedule::StageJob;

/// How long the thread waits for a job between polls while maps are outstanding.
const POLL_INTERVAL: Duration = Duration::from_micros(50);

/// How long the thread waits for a job when no map is outstanding; a registered map wakes it.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// A running submission thread; it ends when this is dropped or the main world's job sender is.
pub(super) struct SubmissionWorker {
    wake: Sender<()>,
}

/// What the submission thread works with.
pub(super) struct WorkerSetup<K> {
    /// Submits recorded commands; polls for map callbacks.
    pub device: wgpu::Device,
    /// Where recorded commands are submitted.
    pub queue: wgpu::Queue,
    /// Jobs from the main world.
    pub jobs: Receiver<StageJob>,
    /// Jobs for the render world to record.
    pub to_record: Sender<StageJob>,
    /// Recorded submissions, shared with the render world, which records them.
    pub pool: Arc<Mutex<SubmissionPool<K>>>,
    /// Where outcomes and returned buffers go.
    pub route: ResultRoute<K>,
    /// Which block a job runs on.
    pub block_of: fn(&StageJob) -> K,
}

impl SubmissionWorker {
    /// Starts the thread.
    pub fn start<K: std::hash::Hash + Eq + Clone + Send + 'static>(setup: WorkerSetup<K>) -> std::io::Result<Self> {
        let (wake, woken) = crossbeam_channel::bounded::<()>(1);
        std::thread::Builder::new().name("inference submission".into()).spawn(move || run(setup, woken))?;
        Ok(Self { wake })
    }

    /// Wakes the thread to poll for maps registered by the render world.
    pub fn wake(&self) {
        let _ = self.wake.try_send(());
    }
}

fn run<K: std::hash::Hash + Eq + Clone + Send + 'static>(setup: WorkerSetup<K>, woken: Receiver<()>) {
    let WorkerSetup { device, queue, jobs, to_record, pool, route, block_of } = setup;
    loop {
        let wait = if route.outstanding.any() { POLL_INTERVAL } else { IDLE_WAIT };
        select! {
            recv(jobs) -> job => {
                let Ok(job) = job else { break };
                let block = block_of(&job);
                let armed = lock(&pool).take(&block);
                match armed {
                    Some(armed) => {
                        let (commands, request) = armed.start(job, block);
                        queue.submit([commands]);
                        route.map(request);
                    }
                    None => {
                        if to_record.send(job).is_err() {
                            break;
                        }
                    }
                }
            }
            recv(woken) -> message => {
                if message.is_err() {
                    break;
                }
            }
            default(wait) => {}
        }
        if route.outstanding.any() {
            let _ = device.poll(wgpu::PollType::Poll);
        }
    }
}
