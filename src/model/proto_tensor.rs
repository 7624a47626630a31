//! ONNX `TensorProto`s (initializers, `Constant` values) as `f32` tensors.

use super::error::ModelError;
use super::onnx_pb::{self as pb, tensor_proto::DataType};
use crate::tensor::Tensor;

/// Converts an initializer (raw_data or typed fields) to an `f32` tensor.
pub(super) fn tensor_from_proto(name: &str, t: &pb::TensorProto) -> Result<Tensor, ModelError> {
    let bad = |reason: String| ModelError::BadInitializer { name: name.to_string(), reason };
    if t.data_location == Some(pb::tensor_proto::DataLocation::External as i32) {
        return Err(bad("its external data was not read (import with `ImportOptions::external_files`)".into()));
    }
    let dims = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| bad(format!("negative dimension {d}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad("dimensions overflow".into()))?;
    let raw = t.raw_data.as_deref().filter(|r| !r.is_empty());
    let data_type = t.data_type.unwrap_or(0);
    let values: Vec<f32> = match DataType::try_from(data_type) {
        Ok(DataType::Float) => match raw {
            Some(r) => fixed_width(r, 4, count, &bad)?
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            None => t.float_data.clone(),
        },
        Ok(DataType::Double) => match raw {
            Some(r) => fixed_width(r, 8, count, &bad)?
                .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            None => t.double_data.iter().map(|&v| v as f32).collect(),
        },
        Ok(DataType::Int64) => match raw {
            Some(r) => fixed_width(r, 8, count, &bad)?
                .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            None => t.int64_data.iter().map(|&v| v as f32).collect(),
        },
        Ok(DataType::Int32) => match raw {
            Some(r) => fixed_width(r, 4, count, &bad)?
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32)
                .collect(),
            None => t.int32_data.iter().map(|&v| v as f32).collect(),
        },
        _ => return Err(bad(format!("data type {data_type} is not supported"))),
    };
    Tensor::new(dims, values).map_err(|e| bad(e.to_string()))
}

fn fixed_width<'a>(
    raw: &'a [u8],
    width: usize,
    count: usize,
    bad: &dyn Fn(String) -> ModelError,
) -> Result<std::slice::ChunksExact<'a, u8>, ModelError> {
    if raw.len() != count * width {
        return Err(bad(format!("raw_data has {} bytes, {} expected", raw.len(), count * width)));
    }
    Ok(raw.chunks_exact(width))
}

