//! [`DeviceCheck`]: what the device found wrong with work done inside a GPU error scope.
//!
//! wgpu reports a shader the driver rejects, or a buffer or bind group it cannot make, to an
//! error scope if one is open and otherwise to the device's uncaptured-error handler (Bevy's
//! stops rendering, and a request would wait forever). Natively the verdict is known when the
//! scope closes; in a browser it arrives after the page's next task. Work is used only once its
//! check has passed, and a failed check fails the requests that needed it, naming what the
//! device refused.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use thiserror::Error;

/// The verdict of one error filter's scope.
type ScopeVerdict = Pin<Box<dyn Future<Output = Option<wgpu::Error>> + Send>>;

/// The device refused something (a shader, a pipeline, a buffer): what, and its message.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("the GPU refused {what}: {message}")]
pub struct DeviceRefusal {
    /// What was refused (a kernel's name, a block).
    pub what: String,
    /// The device's own message.
    pub message: String,
}

/// The device's verdict on the work done inside [`DeviceCheck::around`], pending until known.
pub struct DeviceCheck {
    what: String,
    state: Mutex<CheckState>,
}

enum CheckState {
    Pending(Vec<ScopeVerdict>),
    Done(Result<(), DeviceRefusal>),
}

impl DeviceCheck {
    /// Runs `work` inside validation, out-of-memory and internal error scopes on `device`, and
    /// returns its result with the check of what it did (`what` names it in a refusal).
    pub fn around<T>(device: &wgpu::Device, what: impl Into<String>, work: impl FnOnce() -> T) -> (T, Self) {
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let memory = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
        let value = work();
        // Popped innermost first.
        let verdicts: Vec<ScopeVerdict> = vec![Box::pin(internal.pop()), Box::pin(memory.pop()), Box::pin(validation.pop())];
        (value, Self { what: what.into(), state: Mutex::new(CheckState::Pending(verdicts)) })
    }

    /// A check that has passed (for work that needs none).
    pub fn passed(what: impl Into<String>) -> Self {
        Self { what: what.into(), state: Mutex::new(CheckState::Done(Ok(()))) }
    }

    /// The verdict, if the device has given it: `Ready(Ok)` once every scope came back empty,
    /// `Ready(Err)` with the first error found.
    pub fn poll(&self) -> Poll<Result<(), DeviceRefusal>> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let CheckState::Pending(verdicts) = &mut *state {
            let mut context = Context::from_waker(Waker::noop());
            let mut refusal = None;
            let mut waiting = Vec::new();
            for mut verdict in verdicts.drain(..) {
                match verdict.as_mut().poll(&mut context) {
                    Poll::Ready(Some(error)) => {
                        refusal.get_or_insert_with(|| DeviceRefusal { what: self.what.clone(), message: error.to_string() });
                    }
                    Poll::Ready(None) => {}
                    Poll::Pending => waiting.push(verdict),
                }
            }
            *state = match refusal {
                Some(refusal) => CheckState::Done(Err(refusal)),
                None if waiting.is_empty() => CheckState::Done(Ok(())),
                None => CheckState::Pending(waiting),
            };
        }
        match &*state {
            CheckState::Pending(_) => Poll::Pending,
            CheckState::Done(verdict) => Poll::Ready(verdict.clone()),
        }
    }
}
