//! Lowering of transposed convolutions, resizes and recurrent layers: one dispatch each.

use super::dispatch_grid::{grid_1d, unsupported, CompileError, MAX_GROUPS};
use super::kernel::Kernel;
use super::params::{ConvTransposeParams, KernelParams, RecurrentParams, ResizeParams};
use crate::model::ir::{Conv2d, NearestRounding, Node, RecurrentCell, ResizeCoordinates};
use crate::model::shape::resize_shape;

/// A kernel call: the kernel, its parameters and its grid.
type Call = (Kernel, KernelParams, [u32; 3]);

fn u(v: usize) -> u32 {
    v as u32
}

/// A transposed convolution of `x` by weights of shape `w` into `out` (shapes checked by shape
/// inference).
pub(super) fn conv_transpose(x: &[usize], w: &[usize], out: &[usize], conv: &Conv2d, has_bias: bool) -> Call {
    let total: usize = out.iter().product();
    let params = ConvTransposeParams {
        total: u(total),
        batch: u(x[0]),
        in_channels: u(x[1]),
        in_height: u(x[2]),
        in_width: u(x[3]),
        out_channels: u(out[1]),
        out_height: u(out[2]),
        out_width: u(out[3]),
        kernel_height: u(w[2]),
        kernel_width: u(w[3]),
        stride_y: u(conv.strides[0]),
        stride_x: u(conv.strides[1]),
        pad_top: u(conv.pads[0]),
        pad_left: u(conv.pads[1]),
        dilation_y: u(conv.dilations[0]),
        dilation_x: u(conv.dilations[1]),
        groups: u(conv.groups),
        has_bias: u(has_bias as usize),
    };
    (Kernel::ConvTranspose, KernelParams::ConvTranspose(params), grid_1d(total))
}

/// A resize of `x` into `out`, with the coordinate mapping and rounding, and the scales or sizes
/// the model gave.
pub(super) fn resize(
    node: &Node,
    x: &[usize],
    out: &[usize],
    linear: bool,
    (coordinates, nearest): (ResizeCoordinates, NearestRounding),
    (scales, sizes): (Option<&[f32]>, Option<&[usize]>),
) -> Result<Call, CompileError> {
    let (_, [scale_y, scale_x]) = resize_shape(node, x, scales, sizes)?;
    let total: usize = out.iter().product();
    let params = ResizeParams {
        total: u(total),
        in_height: u(x[2]),
        in_width: u(x[3]),
        out_height: u(out[2]),
        out_width: u(out[3]),
        linear: u(linear as usize),
        coordinates: match coordinates {
            ResizeCoordinates::HalfPixel => 0,
            ResizeCoordinates::PytorchHalfPixel => 1,
            ResizeCoordinates::Asymmetric => 2,
            ResizeCoordinates::AlignCorners => 3,
        },
        nearest: match nearest {
            NearestRounding::RoundPreferFloor => 0,
            NearestRounding::RoundPreferCeil => 1,
            NearestRounding::Floor => 2,
            NearestRounding::Ceil => 3,
        },
        scale_y,
        scale_x,
    };
    Ok((Kernel::Resize, KernelParams::Resize(params), grid_1d(total)))
}

/// Hidden units the recurrent kernel's workgroup memory holds.
const MAX_HIDDEN: usize = 256;

/// A recurrent layer over `x` (`[seq, batch, input]`), with or without biases and an initial
/// state bound: one workgroup per batch element.
pub(super) fn recurrent(node: &Node, x: &[usize], cell: RecurrentCell, hidden: usize, (has_bias, has_initial): (bool, bool)) -> Result<Call, CompileError> {
    if hidden > MAX_HIDDEN || x[1] > MAX_GROUPS {
        return Err(unsupported(node, format!("{hidden} hidden units and a batch of {} (at most {MAX_HIDDEN} and {MAX_GROUPS})", x[1])));
    }
    let params = RecurrentParams {
        seq: u(x[0]),
        batch: u(x[1]),
        input_size: u(x[2]),
        hidden: u(hidden),
        gru: u((cell == RecurrentCell::Gru) as usize),
        has_bias: u(has_bias as usize),
        has_initial: u(has_initial as usize),
    };
    Ok((Kernel::Recurrent, KernelParams::Recurrent(params), [u(x[1]), 1, 1]))
}
