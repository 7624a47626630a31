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
//! The thread is supervised: if it panics, the job it held fails with
//! [`JobError::SubmissionThreadLost`], and [`SubmissionThread::stopped`] tells the render world,
//! which logs it and takes the jobs itself from then on.
//!
//! No main-world code touches a wgpu object: the main world only sends jobs over a channel.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{select, Receiver, Sender, TryRecvError};

use super::readback::ResultRoute;
use super::submission::{lock, SubmissionPool};
use crate::job::{JobError, JobOutcome, StageJob};

/// How long the thread waits on the GPU (or, with nothing submitted, for a job) between looks
/// for new jobs while maps are outstanding.
const POLL_INTERVAL: Duration = Duration::from_micros(50);

/// How long the thread waits for a job when no map is outstanding; a registered map wakes it.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// A running submission thread; it ends when this is dropped or the main world's job sender is.
pub(super) struct SubmissionThread {
    wake: Sender<()>,
    handle: Option<JoinHandle<()>>,
}

/// What the submission thread works with.
pub(super) struct ThreadSetup<K> {
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
    /// Makes the thread panic on its next job (feature `fault-injection`).
    #[cfg(feature = "fault-injection")]
    pub panic_on_next_job: Arc<std::sync::atomic::AtomicBool>,
}

impl SubmissionThread {
    /// Starts the thread.
    pub fn start<K: std::hash::Hash + Eq + Clone + Send + 'static>(setup: ThreadSetup<K>) -> std::io::Result<Self> {
        let (wake, woken) = crossbeam_channel::bounded::<()>(1);
        let handle = std::thread::Builder::new().name("inference submission".into()).spawn(move || run(setup, woken))?;
        Ok(Self { wake, handle: Some(handle) })
    }

    /// Wakes the thread to poll for maps registered by the render world.
    pub fn wake(&self) {
        let _ = self.wake.try_send(());
    }

    /// `None` while the thread runs; once it has stopped, how.
    pub fn stopped(&mut self) -> Option<ThreadEnd> {
        if !self.handle.as_ref()?.is_finished() {
            return None;
        }
        let handle = self.handle.take()?;
        Some(match handle.join() {
            Ok(()) => ThreadEnd::SenderGone,
            Err(payload) => ThreadEnd::Panicked(panic_message(payload.as_ref())),
        })
    }
}

impl Drop for SubmissionThread {
    /// Stops the thread and waits for it, so that it has let go of the device before the app
    /// (or the process) goes on tearing down: a driver that is unloaded while a thread still
    /// polls its device can crash the process at exit.
    fn drop(&mut self) {
        let (wake, _) = crossbeam_channel::bounded(1);
        drop(std::mem::replace(&mut self.wake, wake));
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// How the submission thread ended.
pub(super) enum ThreadEnd {
    /// The main world's job sender is gone: the app is shutting down.
    SenderGone,
    /// It panicked, with this message.
    Panicked(String),
}

/// The text of a panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

fn run<K: std::hash::Hash + Eq + Clone + Send + 'static>(setup: ThreadSetup<K>, woken: Receiver<()>) {
    let ThreadSetup { device, queue, jobs, to_record, pool, route, block_of, .. } = &setup;
    // This thread's latest submission: what it waits on (never on Bevy's frames).
    let submitted = std::cell::Cell::new(None::<wgpu::SubmissionIndex>);
    // Submits `job` (or forwards it to the render world); false once the render world is gone.
    let handle = |job: StageJob| {
        let handled = catch_unwind(AssertUnwindSafe(|| {
            #[cfg(feature = "fault-injection")]
            if setup.panic_on_next_job.swap(false, std::sync::atomic::Ordering::AcqRel) {
                panic!("injected fault: the submission thread panics");
            }
            let block = block_of(&job);
            // A job that reads or writes a texture, or reads back less than its output, is
            // recorded by the render world, which holds the textures and kernels.
            let armed = match (job.input.tensor(), job.output.read_back_whole_only()) {
                (Some(input), true) => lock(pool).take(&block).map(|armed| (armed, input)),
                _ => None,
            };
            match armed {
                Some((armed, input)) => {
                    let (commands, request) = armed.start(job.clone(), input, block);
                    submitted.set(Some(queue.submit([commands])));
                    route.map(request);
                    true
                }
                None => to_record.send(job.clone()).is_ok(),
            }
        }));
        match handled {
            Ok(going_on) => going_on,
            Err(payload) => {
                let error = JobError::SubmissionThreadLost(panic_message(payload.as_ref()));
                job.deliver(JobOutcome::of(&job, Err(error)), &route.results);
                resume_unwind(payload);
            }
        }
    };
    loop {
        // Maps are outstanding: take a job that is there, else wait on the GPU for this thread's
        // latest submission (woken by the driver the moment it is done, where a sleep would add
        // the timer's slack to every request) for at most POLL_INTERVAL, so that new jobs wait
        // no longer. The wait holds the device's fence, so Bevy's own submissions may wait as
        // long; maps of the render world's submissions are polled for as before. Not on Apple
        // platforms, where wgpu waits in steps of a millisecond.
        if route.outstanding.any() && !cfg!(target_vendor = "apple") {
            match jobs.try_recv() {
                Ok(job) => match handle(job) {
                    true => continue,
                    false => break,
                },
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {}
            }
            if matches!(woken.try_recv(), Err(TryRecvError::Disconnected)) {
                break;
            }
            // Some(true): still running after POLL_INTERVAL.
            let waited = submitted.take().map(|index| {
                let waited = device.poll(wgpu::PollType::Wait { submission_index: Some(index.clone()), timeout: Some(POLL_INTERVAL) });
                let running = matches!(waited, Err(wgpu::PollError::Timeout));
                if running {
                    submitted.set(Some(index));
                }
                running
            });
            // This thread's work is done, yet a map waits (for the render world's submissions):
            // wait for a job or POLL_INTERVAL and poll, as before, instead of spinning.
            if waited == Some(true) || !route.outstanding.any() {
                continue;
            }
        }
        let wait = if route.outstanding.any() { POLL_INTERVAL } else { IDLE_WAIT };
        select! {
            recv(jobs) -> job => {
                if !job.is_ok_and(handle) {
                    break;
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
