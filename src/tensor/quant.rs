//! Transfer encodings of activations: f32 as is, f16, and int8 with a per-tensor scale and zero
//! point computed from the values being sent.

use half::f16;
use thiserror::Error;

use super::transfer::TransferDtype;

/// Affine int8 parameters: `value = (q - zero_point) * scale`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuantParams {
    /// Step between consecutive codes.
    pub scale: f32,
    /// The code that represents 0.0.
    pub zero_point: i32,
}

impl QuantParams {
    /// Parameters for f32 and f16, which need none.
    pub const NONE: QuantParams = QuantParams { scale: 1.0, zero_point: 0 };

    /// Parameters covering `values`' range (and 0, so zero padding stays exact).
    /// Non-finite values are ignored when choosing the range and clamp when encoded.
    pub fn for_values(values: &[f32]) -> Self {
        let (lo, hi) = values
            .iter()
            .filter(|v| v.is_finite())
            .fold((0.0f32, 0.0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        if hi - lo <= f32::MIN_POSITIVE {
            return Self::NONE;
        }
        let scale = (hi - lo) / 255.0;
        let zero_point = (-128.0 - lo / scale).round().clamp(-128.0, 127.0) as i32;
        Self { scale, zero_point }
    }

    /// Whether decoding with these parameters yields finite values.
    pub fn is_valid(self) -> bool {
        self.scale.is_finite() && self.scale > 0.0 && (-128..=127).contains(&self.zero_point)
    }
}

/// Why encoded values could not be decoded.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum DecodeValuesError {
    /// The byte count is not the value count times the dtype's width.
    #[error("{bytes} bytes do not hold {values} values of {bytes_per_value} bytes")]
    Length {
        /// Bytes given.
        bytes: usize,
        /// Values expected.
        values: usize,
        /// Width of one value.
        bytes_per_value: usize,
    },
    /// The int8 scale or zero point is out of range (non-finite, zero, negative).
    #[error("invalid int8 parameters: scale {scale}, zero point {zero_point}")]
    Params {
        /// Scale given.
        scale: f32,
        /// Zero point given.
        zero_point: i32,
    },
}

/// Encodes `values` as `dtype` (little-endian), returning the bytes and the int8 parameters.
pub fn encode_values(values: &[f32], dtype: TransferDtype) -> (Vec<u8>, QuantParams) {
    match dtype {
        TransferDtype::F32 => (values.iter().flat_map(|v| v.to_le_bytes()).collect(), QuantParams::NONE),
        TransferDtype::F16 => (values.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect(), QuantParams::NONE),
        TransferDtype::Int8 => {
            let params = QuantParams::for_values(values);
            let bytes = values
                .iter()
                .map(|&v| {
                    let v = if v.is_nan() { 0.0 } else { v };
                    let q = (v / params.scale).round() + params.zero_point as f32;
                    q.clamp(-128.0, 127.0) as i8 as u8
                })
                .collect();
            (bytes, params)
        }
    }
}

/// Decodes `count` values of `dtype` from `bytes`.
pub fn decode_values(bytes: &[u8], count: usize, dtype: TransferDtype, params: QuantParams) -> Result<Vec<f32>, DecodeValuesError> {
    let width = dtype.bytes_per_value();
    if Some(bytes.len()) != count.checked_mul(width) {
        return Err(DecodeValuesError::Length { bytes: bytes.len(), values: count, bytes_per_value: width });
    }
    Ok(match dtype {
        TransferDtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        TransferDtype::F16 => bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        TransferDtype::Int8 => {
            if !params.is_valid() {
                return Err(DecodeValuesError::Params { scale: params.scale, zero_point: params.zero_point });
            }
            bytes.iter().map(|&b| (b as i8 as i32 - params.zero_point) as f32 * params.scale).collect()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_round_trips_bit_exactly() {
        let values = [0.0, -1.5, f32::MIN_POSITIVE, 3.0e38, -0.0];
        let (bytes, params) = encode_values(&values, TransferDtype::F32);
        let back = decode_values(&bytes, values.len(), TransferDtype::F32, params).unwrap();
        assert_eq!(back.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), values.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    }

    #[test]
    fn f16_keeps_three_significant_digits() {
        let values = [0.1234, -6.5, 1000.0];
        let (bytes, _) = encode_values(&values, TransferDtype::F16);
        assert_eq!(bytes.len(), 6);
        for (a, b) in values.iter().zip(decode_values(&bytes, 3, TransferDtype::F16, QuantParams::NONE).unwrap()) {
            assert!((a - b).abs() <= a.abs() * 1e-3, "{a} vs {b}");
        }
    }

    #[test]
    fn int8_error_is_at_most_one_step_and_zero_is_exact() {
        let values: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin() * 5.0 + 1.0).chain([0.0]).collect();
        let (bytes, params) = encode_values(&values, TransferDtype::Int8);
        assert_eq!(bytes.len(), values.len());
        let back = decode_values(&bytes, values.len(), TransferDtype::Int8, params).unwrap();
        for (a, b) in values.iter().zip(&back) {
            assert!((a - b).abs() <= params.scale * 1.0001, "{a} vs {b} (scale {})", params.scale);
        }
        assert_eq!(*back.last().unwrap(), 0.0);
    }

    #[test]
    fn int8_of_a_constant_tensor_and_of_non_finite_values_stays_finite() {
        let (bytes, params) = encode_values(&[0.0; 8], TransferDtype::Int8);
        assert_eq!(decode_values(&bytes, 8, TransferDtype::Int8, params).unwrap(), vec![0.0; 8]);
        let (bytes, params) = encode_values(&[f32::NAN, f32::INFINITY, 1.0], TransferDtype::Int8);
        assert!(decode_values(&bytes, 3, TransferDtype::Int8, params).unwrap().iter().all(|v| v.is_finite()));
    }

    #[test]
    fn decoding_rejects_wrong_lengths_and_bad_parameters() {
        assert!(matches!(decode_values(&[0; 7], 2, TransferDtype::F32, QuantParams::NONE), Err(DecodeValuesError::Length { .. })));
        assert!(matches!(decode_values(&[0; 2], usize::MAX, TransferDtype::F16, QuantParams::NONE), Err(DecodeValuesError::Length { .. })));
        let bad = QuantParams { scale: f32::NAN, zero_point: 0 };
        assert!(matches!(decode_values(&[0; 2], 2, TransferDtype::Int8, bad), Err(DecodeValuesError::Params { .. })));
        let bad = QuantParams { scale: 1.0, zero_point: 500 };
        assert!(matches!(decode_values(&[0; 2], 2, TransferDtype::Int8, bad), Err(DecodeValuesError::Params { .. })));
    }
}
