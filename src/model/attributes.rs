//! A node's ONNX attributes, with typed accessors whose errors name the node.

use super::error::ModelError;
use super::onnx_pb as pb;

/// A node's attributes with typed accessors that name the node in their errors.
pub(super) struct Attributes<'a> {
    /// The node's name, for errors.
    pub node: &'a str,
    /// Its attributes.
    pub list: &'a [pb::AttributeProto],
}

impl Attributes<'_> {
    pub fn get(&self, name: &str) -> Option<&pb::AttributeProto> {
        self.list.iter().find(|a| a.name.as_deref() == Some(name))
    }
    pub fn int(&self, name: &str, default: i64) -> i64 {
        self.get(name).and_then(|a| a.i).unwrap_or(default)
    }
    pub fn float(&self, name: &str, default: f32) -> f32 {
        self.get(name).and_then(|a| a.f).unwrap_or(default)
    }
    pub fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.get(name).map(|a| a.ints.clone())
    }
    pub fn string(&self, name: &str) -> Option<String> {
        self.get(name).and_then(|a| a.s.as_ref()).map(|s| String::from_utf8_lossy(s).into_owned())
    }
    pub fn unsupported(&self, attribute: &str, reason: impl Into<String>) -> ModelError {
        ModelError::UnsupportedAttribute {
            node: self.node.into(),
            attribute: attribute.into(),
            reason: reason.into(),
        }
    }
    /// A list of `n` non-negative integers, or `default` when absent.
    pub fn usizes<const N: usize>(&self, name: &str, default: [usize; N]) -> Result<[usize; N], ModelError> {
        let Some(values) = self.ints(name) else { return Ok(default) };
        if values.len() != N || values.iter().any(|&v| v < 0) {
            return Err(self.unsupported(name, format!("expected {N} non-negative values, got {values:?}")));
        }
        Ok(std::array::from_fn(|i| values[i] as usize))
    }
    /// Stride and padding (explicit or from `auto_pad`) for a 2-D window; `auto_pad` SAME_* is
    /// resolved here for stride 1 and rejected otherwise (it would depend on the input size).
    pub fn window(&self, kernel: [usize; 2]) -> Result<([usize; 2], [usize; 4]), ModelError> {
        let strides = self.usizes("strides", [1, 1])?;
        let pads = match self.string("auto_pad").as_deref() {
            None | Some("NOTSET") => self.usizes("pads", [0, 0, 0, 0])?,
            Some("VALID") => [0, 0, 0, 0],
            Some(mode @ ("SAME_UPPER" | "SAME_LOWER")) if strides == [1, 1] => {
                let total = [kernel[0] - 1, kernel[1] - 1];
                let small = [total[0] / 2, total[1] / 2];
                let big = [total[0] - small[0], total[1] - small[1]];
                if mode == "SAME_UPPER" {
                    [small[0], small[1], big[0], big[1]]
                } else {
                    [big[0], big[1], small[0], small[1]]
                }
            }
            Some(other) => return Err(self.unsupported("auto_pad", format!("'{other}' with strides {strides:?}"))),
        };
        // ONNX orders pads as [top, left, bottom, right] for 2-D windows.
        Ok((strides, pads))
    }
}
