//! The GPU engine, usable without Bevy: the block compiler (graph → dispatch list: lowering,
//! fusion, slot allocation), the kernel library built from `shaders/`, resident weights, blocks
//! over pooled buffers, timing, and a blocking host API for tools, tests and benchmarks. The Bevy
//! integration lives in the `render` module.

pub mod buffer_output;
pub mod compile;
mod device_check;
mod dispatch_grid;
mod edge_kernel;
mod engine;
pub mod image_input;
mod image_input_error;
pub mod image_output;
pub mod kernel;
mod library;
mod lower_layout;
mod lower_matmul;
mod lower_spatial;
pub mod params;
mod precision;
mod program;
mod slots;
mod timing;
pub mod top_k;

pub use compile::{compile, compile_with, CompileError};
pub use device_check::{DeviceCheck, DeviceRefusal};
pub use program::{Dispatch, Operand, Program};
pub use kernel::{Kernel, KernelFamily};
pub use params::KernelParams;
pub use image_input::{ImageInputError, ImageInputKernel, TextureReading};
pub use image_output::{ImageOutputError, ImageOutputKernel, TextureWriting};
pub use top_k::TopKKernel;
pub use buffer_output::BufferOutputError;
pub use engine::{read_mapped, request_device, run_blocking, GpuBlock, GpuError, ResidentWeights};
pub use library::{KernelLibrary, KernelOptions};
pub use precision::StoragePrecision;
pub use timing::{gpu_time, profile_dispatches, read_timed, read_timed_scores, DispatchTime, GpuClock, RequestTimestamps, TimingError};
