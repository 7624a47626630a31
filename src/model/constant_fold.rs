//! Import-time constant folding. Exporters compute a great deal from constants alone: shared
//! weights routed through `Identity`, `Constant` nodes, casts, and the shape arithmetic that
//! feeds `Reshape` (`Shape → Gather → Unsqueeze → Concat`). A node whose inputs are all known
//! constants is evaluated here on the CPU and becomes a constant itself, so that the graph IR
//! holds only the operations that compute on the input.

use super::attributes::Attributes;
use super::error::{ModelError, UnsupportedOp};
use super::ir::{Node, Op};
use super::onnx_pb::tensor_proto::DataType;
use super::proto_tensor::tensor_from_proto;
use super::layout::{self, slice_ranges};
use super::shape::{broadcast, node_output_shape, normalize_axis};
use crate::tensor::Tensor;

/// A constant value: its values as f32 (integers are exact up to 2^24, far beyond any shape) and
/// whether ONNX types it as an integer or a bool, which decides how division and casts round.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Constant {
    /// The values.
    pub tensor: Tensor,
    /// Typed as an integer (or bool) in the file.
    pub integer: bool,
}

impl Constant {
    fn int(tensor: Tensor) -> Self {
        Self { tensor, integer: true }
    }
}

/// Whether ONNX's element type `data_type` is an integer or bool type.
pub(super) fn is_integer_type(data_type: i32) -> bool {
    use DataType as D;
    matches!(
        DataType::try_from(data_type),
        Ok(D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::Uint8 | D::Uint16 | D::Uint32 | D::Uint64 | D::Bool)
    )
}

/// The operators this folder evaluates when all their inputs are constants.
pub(super) fn is_foldable(op_type: &str) -> bool {
    matches!(
        op_type,
        "Identity"
            | "Cast"
            | "Neg"
            | "Abs"
            | "Sqrt"
            | "Exp"
            | "Log"
            | "Floor"
            | "Ceil"
            | "Reciprocal"
            | "Not"
            | "Add"
            | "Sub"
            | "Mul"
            | "Div"
            | "Pow"
            | "Mod"
            | "Min"
            | "Max"
            | "Equal"
            | "Less"
            | "Greater"
            | "LessOrEqual"
            | "GreaterOrEqual"
            | "GatherElements"
            | "And"
            | "Or"
            | "Where"
            | "Unsqueeze"
            | "Squeeze"
            | "Concat"
            | "Gather"
            | "ConstantOfShape"
            | "Range"
            | "Expand"
            | "Slice"
            | "Reshape"
            | "Transpose"
    )
}

fn err(node: &str, reason: impl Into<String>) -> ModelError {
    ModelError::Shape { node: node.into(), reason: reason.into() }
}

fn missing(node: &str, index: usize) -> ModelError {
    ModelError::BadInput { node: node.into(), index, reason: "is missing".into() }
}

/// Values of a constant read as integers (axes, shapes, indices).
fn ints(c: &Constant) -> Vec<i64> {
    c.tensor.data().iter().map(|&v| v as i64).collect()
}

fn tensor(node: &str, shape: Vec<usize>, values: Vec<f32>) -> Result<Tensor, ModelError> {
    Tensor::new(shape, values).map_err(|e| err(node, e.to_string()))
}

/// `f` over tensors broadcast to one shape, NumPy style (`target`: a shape to broadcast to as
/// well, Expand's).
fn broadcast_map(node: &str, inputs: &[&Tensor], target: &[usize], f: impl Fn(&[f32]) -> f32) -> Result<Tensor, ModelError> {
    let mut out: Vec<usize> = target.to_vec();
    for t in inputs {
        out = broadcast(&out, t.shape()).ok_or_else(|| err(node, format!("shapes {out:?} and {:?} do not broadcast", t.shape())))?;
    }
    let values = layout::broadcast_map(inputs, &out, f);
    tensor(node, out, values)
}

/// The output shape the IR's shape inference gives `op` of `node` on inputs of `shapes`: the
/// folder and the graph share one set of shape rules.
fn shape_of_op(node: &str, op: Op, shapes: &[&[usize]]) -> Result<Vec<usize>, ModelError> {
    node_output_shape(&Node { name: node.into(), op, inputs: Vec::new(), output: String::new() }, shapes)
}

/// Evaluates ONNX operator `op_type` of node `attrs.node` on constant inputs (`None` for an
/// absent optional input).
pub(super) fn evaluate(op_type: &str, attrs: &Attributes, inputs: &[Option<&Constant>]) -> Result<Constant, ModelError> {
    let node = attrs.node;
    let input = |i: usize| inputs.get(i).copied().flatten().ok_or_else(|| missing(node, i));
    let present: Vec<&Constant> = inputs.iter().copied().flatten().collect();
    let all_integer = present.iter().all(|c| c.integer);
    let unary = |f: fn(f32) -> f32| -> Result<Constant, ModelError> {
        let x = input(0)?;
        let values = x.tensor.data().iter().map(|&v| f(v)).collect();
        Ok(Constant { tensor: tensor(node, x.tensor.shape().to_vec(), values)?, integer: x.integer })
    };
    let binary = |integer: bool, f: &dyn Fn(f32, f32) -> f32| -> Result<Constant, ModelError> {
        let (a, b) = (input(0)?, input(1)?);
        Ok(Constant { tensor: broadcast_map(node, &[&a.tensor, &b.tensor], &[], |v| f(v[0], v[1]))?, integer })
    };
    let boolean = |v: bool| v as u8 as f32;
    Ok(match op_type {
        "Identity" => input(0)?.clone(),
        "Cast" => {
            let to = attrs.int("to", DataType::Float as i64) as i32;
            let x = input(0)?;
            let values: Vec<f32> = match DataType::try_from(to) {
                Ok(DataType::Bool) => x.tensor.data().iter().map(|&v| boolean(v != 0.0)).collect(),
                _ if is_integer_type(to) => x.tensor.data().iter().map(|v| v.trunc()).collect(),
                _ => x.tensor.data().to_vec(),
            };
            Constant { tensor: tensor(node, x.tensor.shape().to_vec(), values)?, integer: is_integer_type(to) }
        }
        "Neg" => unary(|v| -v)?,
        "Abs" => unary(f32::abs)?,
        "Sqrt" => unary(f32::sqrt)?,
        "Exp" => unary(f32::exp)?,
        "Log" => unary(f32::ln)?,
        "Floor" => unary(f32::floor)?,
        "Ceil" => unary(f32::ceil)?,
        "Reciprocal" => unary(|v| 1.0 / v)?,
        "Not" => Constant::int(unary(|v| (v == 0.0) as u8 as f32)?.tensor),
        "Add" => binary(all_integer, &|a, b| a + b)?,
        "Sub" => binary(all_integer, &|a, b| a - b)?,
        "Mul" => binary(all_integer, &|a, b| a * b)?,
        // Integer division truncates toward zero.
        "Div" if all_integer => binary(true, &|a, b| (a / b).trunc())?,
        "Div" => binary(false, &|a, b| a / b)?,
        "Pow" => binary(input(0)?.integer, &|a, b| a.powf(b))?,
        // fmod = 0: the remainder takes the divisor's sign (Python's %); 1: the dividend's (C's).
        "Mod" if attrs.int("fmod", 0) != 0 => binary(all_integer, &|a, b| a % b)?,
        "Mod" => binary(all_integer, &|a, b| a - b * (a / b).floor())?,
        "Equal" => binary(true, &|a, b| boolean(a == b))?,
        "Less" => binary(true, &|a, b| boolean(a < b))?,
        "Greater" => binary(true, &|a, b| boolean(a > b))?,
        "LessOrEqual" => binary(true, &|a, b| boolean(a <= b))?,
        "GreaterOrEqual" => binary(true, &|a, b| boolean(a >= b))?,
        "GatherElements" => gather_elements(attrs, input(0)?, input(1)?)?,
        "And" => binary(true, &|a, b| boolean(a != 0.0 && b != 0.0))?,
        "Or" => binary(true, &|a, b| boolean(a != 0.0 || b != 0.0))?,
        "Min" | "Max" => {
            let tensors: Vec<&Tensor> = present.iter().map(|c| &c.tensor).collect();
            let min = op_type == "Min";
            let pick = move |v: &[f32]| v.iter().copied().reduce(|a, b| if min { a.min(b) } else { a.max(b) }).unwrap_or(0.0);
            Constant { tensor: broadcast_map(node, &tensors, &[], pick)?, integer: all_integer }
        }
        "Where" => {
            let (c, x, y) = (input(0)?, input(1)?, input(2)?);
            let tensor = broadcast_map(node, &[&c.tensor, &x.tensor, &y.tensor], &[], |v| if v[0] != 0.0 { v[1] } else { v[2] })?;
            Constant { tensor, integer: x.integer && y.integer }
        }
        "Unsqueeze" | "Squeeze" => squeeze_or_unsqueeze(op_type, attrs, input(0)?, inputs.get(1).copied().flatten())?,
        "Concat" => concat(attrs, &present)?,
        "Gather" => gather(attrs, input(0)?, input(1)?)?,
        "ConstantOfShape" => {
            let shape: Vec<usize> = ints(input(0)?).iter().map(|&d| d.max(0) as usize).collect();
            let (value, integer) = match attrs.get("value").and_then(|a| a.t.as_ref()) {
                Some(t) => {
                    let v = tensor_from_proto(node, t)?;
                    (v.data().first().copied().unwrap_or(0.0), is_integer_type(t.data_type.unwrap_or(1)))
                }
                None => (0.0, false),
            };
            let len = shape.iter().product();
            Constant { tensor: tensor(node, shape, vec![value; len])?, integer }
        }
        "Range" => {
            let scalar = |i: usize| -> Result<f32, ModelError> { input(i)?.tensor.data().first().copied().ok_or_else(|| missing(node, i)) };
            let (start, limit, delta) = (scalar(0)?, scalar(1)?, scalar(2)?);
            if delta == 0.0 {
                return Err(err(node, "Range with a zero delta"));
            }
            let count = ((limit - start) / delta).ceil().max(0.0) as usize;
            let values: Vec<f32> = (0..count).map(|i| start + i as f32 * delta).collect();
            Constant { tensor: tensor(node, vec![count], values)?, integer: all_integer }
        }
        "Expand" => {
            let (x, shape) = (input(0)?, input(1)?);
            let target: Vec<usize> = ints(shape).iter().map(|&d| d.max(0) as usize).collect();
            Constant { tensor: broadcast_map(node, &[&x.tensor], &target, |v| v[0])?, integer: x.integer }
        }
        "Slice" => slice(node, inputs)?,
        "Reshape" => {
            let (x, shape) = (input(0)?, input(1)?);
            let op = Op::Reshape { shape: ints(shape), allow_zero: attrs.int("allowzero", 0) != 0 };
            let out = shape_of_op(node, op, &[x.tensor.shape()])?;
            Constant { tensor: tensor(node, out, x.tensor.data().to_vec())?, integer: x.integer }
        }
        "Transpose" => transpose(attrs, input(0)?)?,
        other => return Err(ModelError::UnsupportedOps(vec![UnsupportedOp { node: node.into(), op: other.into() }])),
    })
}

/// The axes a Squeeze/Unsqueeze names: its second input (opset 13+) or its `axes` attribute.
fn axes(attrs: &Attributes, from_input: Option<&Constant>) -> Option<Vec<i64>> {
    from_input.map(ints).or_else(|| attrs.ints("axes"))
}

fn squeeze_or_unsqueeze(op_type: &str, attrs: &Attributes, x: &Constant, axes_input: Option<&Constant>) -> Result<Constant, ModelError> {
    let node = attrs.node;
    let op = match (op_type, axes(attrs, axes_input)) {
        ("Squeeze", axes) => Op::Squeeze { axes },
        (_, Some(axes)) => Op::Unsqueeze { axes },
        (_, None) => return Err(missing(node, 1)),
    };
    let out = shape_of_op(node, op, &[x.tensor.shape()])?;
    Ok(Constant { tensor: tensor(node, out, x.tensor.data().to_vec())?, integer: x.integer })
}

fn concat(attrs: &Attributes, inputs: &[&Constant]) -> Result<Constant, ModelError> {
    let node = attrs.node;
    let first = inputs.first().ok_or_else(|| missing(node, 0))?;
    let shapes: Vec<&[usize]> = inputs.iter().map(|c| c.tensor.shape()).collect();
    let axis = attrs.int("axis", 0);
    let shape = shape_of_op(node, Op::Concat { axis }, &shapes)?;
    let axis = normalize_axis(axis, first.tensor.shape().len()).expect("shape inference checked it");
    let tensors: Vec<&Tensor> = inputs.iter().map(|c| &c.tensor).collect();
    Ok(Constant { tensor: tensor(node, shape, layout::concat(&tensors, axis))?, integer: inputs.iter().all(|c| c.integer) })
}

fn gather(attrs: &Attributes, data: &Constant, indices: &Constant) -> Result<Constant, ModelError> {
    let node = attrs.node;
    let shape = data.tensor.shape();
    let axis = normalize_axis(attrs.int("axis", 0), shape.len()).ok_or_else(|| err(node, "axis out of range"))?;
    let extent = shape[axis] as i64;
    // Out of range indices are an error here (the kernels clamp them).
    if let Some(i) = ints(indices).into_iter().find(|&i| !(-extent..extent).contains(&i)) {
        return Err(err(node, format!("index {i} out of range for {extent}")));
    }
    let values = layout::gather(&data.tensor, axis, &indices.tensor);
    let out: Vec<usize> = shape[..axis].iter().chain(indices.tensor.shape()).chain(&shape[axis + 1..]).copied().collect();
    Ok(Constant { tensor: tensor(node, out, values)?, integer: data.integer })
}

/// GatherElements: the output has the indices' shape; each value is data's at the same position
/// but with the coordinate along `axis` taken from the indices.
fn gather_elements(attrs: &Attributes, data: &Constant, indices: &Constant) -> Result<Constant, ModelError> {
    let node = attrs.node;
    let (shape, index_shape) = (data.tensor.shape(), indices.tensor.shape());
    let axis = normalize_axis(attrs.int("axis", 0), shape.len()).ok_or_else(|| err(node, "axis out of range"))?;
    if index_shape.len() != shape.len() {
        return Err(err(node, format!("indices {index_shape:?} and data {shape:?} differ in rank")));
    }
    let data_strides = layout::strides(shape);
    let mut values = Vec::with_capacity(indices.tensor.len());
    for (i, &index) in indices.tensor.data().iter().enumerate() {
        let (mut rem, mut source) = (i, 0);
        for d in (0..index_shape.len()).rev() {
            let coord = rem % index_shape[d];
            rem /= index_shape[d];
            let coord = if d == axis {
                let j = index as i64;
                let j = if j < 0 { j + shape[d] as i64 } else { j };
                usize::try_from(j).ok().filter(|&j| j < shape[d]).ok_or_else(|| err(node, format!("index {index} out of range for {}", shape[d])))?
            } else {
                coord
            };
            source += coord * data_strides[d];
        }
        values.push(data.tensor.data()[source]);
    }
    Ok(Constant { tensor: tensor(node, index_shape.to_vec(), values)?, integer: data.integer })
}

fn slice(node: &str, inputs: &[Option<&Constant>]) -> Result<Constant, ModelError> {
    let get = |i: usize| inputs.get(i).copied().flatten();
    let x = get(0).ok_or_else(|| missing(node, 0))?;
    let starts = ints(get(1).ok_or_else(|| missing(node, 1))?);
    let ends = ints(get(2).ok_or_else(|| missing(node, 2))?);
    let axes: Vec<i64> = get(3).map(ints).unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps: Vec<i64> = get(4).map(ints).unwrap_or_else(|| vec![1; starts.len()]);
    let ranges = slice_ranges(x.tensor.shape(), &starts, &ends, &axes, &steps).map_err(|reason| err(node, reason))?;
    Ok(Constant { tensor: layout::slice(&x.tensor, &ranges), integer: x.integer })
}

fn transpose(attrs: &Attributes, x: &Constant) -> Result<Constant, ModelError> {
    let perm = permutation(attrs, x.tensor.shape().len())?;
    Ok(Constant { tensor: layout::transpose(&x.tensor, &perm), integer: x.integer })
}

/// A Transpose's `perm` (default: the axes reversed), checked to be a permutation of `rank` axes.
pub(super) fn permutation(attrs: &Attributes, rank: usize) -> Result<Vec<usize>, ModelError> {
    let node = attrs.node;
    let perm: Vec<usize> = match attrs.ints("perm") {
        Some(p) => p.iter().map(|&a| normalize_axis(a, rank).ok_or_else(|| err(node, format!("perm {p:?} is not a permutation")))).collect::<Result<_, _>>()?,
        None => (0..rank).rev().collect(),
    };
    if perm.len() != rank || (0..rank).any(|a| !perm.contains(&a)) {
        return Err(err(node, format!("perm {perm:?} is not a permutation of {rank} axes")));
    }
    Ok(perm)
}

/// `Shape`'s output for a value of shape `shape` (with opset 15's `start` and `end`).
pub(super) fn shape_of(attrs: &Attributes, shape: &[usize]) -> Result<Constant, ModelError> {
    let rank = shape.len() as i64;
    let bound = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
    let (start, end) = (bound(attrs.int("start", 0)), bound(attrs.int("end", rank)));
    let dims: Vec<f32> = shape[start..end.max(start)].iter().map(|&d| d as f32).collect();
    Ok(Constant::int(tensor(attrs.node, vec![dims.len()], dims)?))
}

#[cfg(test)]
#[path = "constant_fold_tests.rs"]
mod tests;
