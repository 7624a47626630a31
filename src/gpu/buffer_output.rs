//! Model outputs kept on the GPU in a storage buffer of the game's, for its own shaders: the
//! block's output (f32, row-major in the output's shape) is copied into the buffer in the
//! same command encoder as the block, so that a shader bound to it sees the result in the same
//! or the next frame.

use thiserror::Error;

/// Why a model's output cannot be copied into a storage buffer.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BufferOutputError {
    /// The buffer cannot be written by a copy, or never reaches the GPU.
    #[error("the buffer cannot be written: {0}")]
    NotWritable(&'static str),
    /// The buffer is smaller than the output.
    #[error("the output takes {needed} bytes but the buffer holds {size}")]
    TooSmall {
        /// The output's bytes.
        needed: u64,
        /// The buffer's bytes.
        size: u64,
    },
    /// The buffer asset never reached the render world.
    #[error("the output buffer was not on the GPU after {frames} frames")]
    NotOnGpu {
        /// How many frames the request waited.
        frames: u32,
    },
}

/// Checks a buffer of `usage` and `size` bytes for a copy of an output of `needed` bytes into it.
pub fn check_target(usage: wgpu::BufferUsages, size: u64, needed: u64) -> Result<(), BufferOutputError> {
    if !usage.contains(wgpu::BufferUsages::COPY_DST) {
        return Err(BufferOutputError::NotWritable("its usage lacks COPY_DST"));
    }
    if size < needed {
        return Err(BufferOutputError::TooSmall { needed, size });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgpu::BufferUsages as U;

    #[test]
    fn a_buffer_must_take_copies_and_hold_the_whole_output() {
        assert_eq!(check_target(U::STORAGE | U::COPY_DST, 40, 40), Ok(()));
        assert_eq!(check_target(U::STORAGE | U::COPY_DST, 64, 40), Ok(()));
        assert_eq!(check_target(U::STORAGE, 40, 40), Err(BufferOutputError::NotWritable("its usage lacks COPY_DST")));
        assert_eq!(check_target(U::STORAGE | U::COPY_DST, 36, 40), Err(BufferOutputError::TooSmall { needed: 40, size: 36 }));
    }
}
