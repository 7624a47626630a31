//! GPU execution: the block compiler (graph → dispatch list), the kernel library built from
//! `shaders/`, resident weights and pooled buffers, and the render-world systems.

pub mod compile;
mod engine;
mod library;
mod precision;
mod readback;
mod render;
mod submission;
mod timing;
#[cfg(not(target_arch = "wasm32"))]
mod worker;

pub use compile::{compile, CompileError, Kernel, Program};
pub use engine::{read_mapped, request_device, run_blocking, GpuBlock, GpuError, ResidentWeights};
pub use library::{KernelLibrary, KernelOptions};
pub use precision::StoragePrecision;
pub(crate) use render::RenderInferencePlugin;
pub use timing::{gpu_time, profile_dispatches, DispatchTime, TimingError};
