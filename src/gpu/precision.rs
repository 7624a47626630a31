//! The element type blocks store their tensors in on the GPU, and what it changes for the shaders
//! and for the bytes uploaded.

use half::f16;

/// The element type of the tensors a block keeps on the GPU: its activations and its model's
/// weights. Kernels compute in f32 either way, and a block's input and output stay f32 on the
/// host; only what sits in GPU memory between kernels changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StoragePrecision {
    /// 32-bit floats: outputs match the CPU reference and ONNX Runtime within 1e-4.
    #[default]
    F32,
    /// 16-bit floats, where the device offers `SHADER_F16`: half the memory traffic, at about
    /// three significant digits per stored value (see `docs/performance-notes.md` for the
    /// tolerance the tests hold it to).
    F16,
}

impl StoragePrecision {
    /// Bytes per stored value.
    pub fn value_bytes(self) -> usize {
        match self {
            StoragePrecision::F32 => 4,
            StoragePrecision::F16 => 2,
        }
    }

    /// Bytes of a buffer holding `values` stored values (storage bindings are sized in whole
    /// 4-byte words).
    pub fn buffer_bytes(self, values: usize) -> u64 {
        (values.max(1) * self.value_bytes()).next_multiple_of(4) as u64
    }

    /// The lines that open every shader module: the `elem` alias the kernels store tensors as.
    pub(super) fn wgsl_prelude(self) -> &'static str {
        match self {
            StoragePrecision::F32 => "alias elem = f32;\n",
            StoragePrecision::F16 => "enable f16;\nalias elem = f16;\n",
        }
    }

    /// `values` as the bytes of a buffer of this element type (padded to whole words).
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        let mut bytes: Vec<u8> = match self {
            StoragePrecision::F32 => bytemuck::cast_slice(values).to_vec(),
            StoragePrecision::F16 => values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect(),
        };
        bytes.resize(self.buffer_bytes(values.len()) as usize, 0);
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_buffers_round_up_to_whole_words() {
        assert_eq!(StoragePrecision::F16.buffer_bytes(3), 8);
        assert_eq!(StoragePrecision::F16.buffer_bytes(4), 8);
        assert_eq!(StoragePrecision::F32.buffer_bytes(3), 12);
        assert_eq!(StoragePrecision::F32.buffer_bytes(0), 4, "an empty tensor still binds one word");
    }

    #[test]
    fn encoded_half_values_round_to_nearest_and_pad_with_zeros() {
        let bytes = StoragePrecision::F16.encode(&[1.0, -2.5, 1.0 / 3.0]);
        assert_eq!(bytes.len(), 8);
        let halves: Vec<f32> = bytes.chunks(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect();
        assert_eq!(halves[..2], [1.0, -2.5]);
        assert!((halves[2] - 1.0 / 3.0).abs() < 2e-4, "{}", halves[2]);
        assert_eq!(halves[3], 0.0);
        assert_eq!(StoragePrecision::F32.encode(&[1.5]), 1.5f32.to_le_bytes());
    }
}
