//! The folder against values worked out by hand (NumPy's semantics, as ONNX specifies them).

use super::*;
use crate::model::onnx_pb as pb;

fn int(shape: &[usize], values: &[i64]) -> Constant {
    Constant::int(Tensor::new(shape.to_vec(), values.iter().map(|&v| v as f32).collect()).unwrap())
}

fn float(shape: &[usize], values: &[f32]) -> Constant {
    Constant { tensor: Tensor::new(shape.to_vec(), values.to_vec()).unwrap(), integer: false }
}

fn attr_int(name: &str, value: i64) -> pb::AttributeProto {
    pb::AttributeProto { name: Some(name.into()), i: Some(value), ..Default::default() }
}

fn attr_ints(name: &str, values: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto { name: Some(name.into()), ints: values.to_vec(), ..Default::default() }
}

fn eval(op: &str, attributes: &[pb::AttributeProto], inputs: &[Option<&Constant>]) -> Constant {
    evaluate(op, &Attributes { node: "n", list: attributes }, inputs).unwrap_or_else(|e| panic!("{op}: {e}"))
}

fn values(c: &Constant) -> (Vec<usize>, Vec<f32>) {
    (c.tensor.shape().to_vec(), c.tensor.data().to_vec())
}

#[test]
fn the_flatten_pattern_of_exporters_folds_to_a_reshape_target() {
    // Shape(x) -> Gather(0) -> Unsqueeze(0) -> Concat([n], [-1]): [n, -1].
    let shape = shape_of(&Attributes { node: "shape", list: &[] }, &[8, 16, 7, 7]).unwrap();
    assert_eq!(values(&shape), (vec![4], vec![8.0, 16.0, 7.0, 7.0]));
    assert!(shape.integer);
    let n = eval("Gather", &[attr_int("axis", 0)], &[Some(&shape), Some(&int(&[], &[0]))]);
    assert_eq!(values(&n), (vec![], vec![8.0]));
    let n = eval("Unsqueeze", &[], &[Some(&n), Some(&int(&[1], &[0]))]);
    assert_eq!(values(&n), (vec![1], vec![8.0]));
    let target = eval("Concat", &[attr_int("axis", 0)], &[Some(&n), Some(&int(&[1], &[-1]))]);
    assert_eq!(values(&target), (vec![2], vec![8.0, -1.0]));
    assert!(target.integer);
}

#[test]
fn shape_takes_opset_15_start_and_end() {
    let attrs = [attr_int("start", 1), attr_int("end", -1)];
    let shape = shape_of(&Attributes { node: "s", list: &attrs }, &[2, 3, 4, 5]).unwrap();
    assert_eq!(values(&shape), (vec![2], vec![3.0, 4.0]));
}

#[test]
fn squeeze_and_unsqueeze_take_axes_from_an_input_or_the_older_attribute() {
    let x = float(&[3], &[1.0, 2.0, 3.0]);
    let from_input = eval("Unsqueeze", &[], &[Some(&x), Some(&int(&[2], &[0, -1]))]);
    let from_attribute = eval("Unsqueeze", &[attr_ints("axes", &[0, 2])], &[Some(&x)]);
    assert_eq!(from_input.tensor.shape(), &[1, 3, 1]);
    assert_eq!(from_attribute.tensor.shape(), &[1, 3, 1]);
    assert_eq!(eval("Squeeze", &[], &[Some(&from_input)]).tensor.shape(), &[3]);
    assert_eq!(eval("Squeeze", &[], &[Some(&from_input), Some(&int(&[1], &[2]))]).tensor.shape(), &[1, 3]);
    let not_one = evaluate("Squeeze", &Attributes { node: "sq", list: &[] }, &[Some(&from_input), Some(&int(&[1], &[1]))]);
    assert!(matches!(not_one, Err(ModelError::Shape { ref node, .. }) if node == "sq"), "{not_one:?}");
}

#[test]
fn gather_picks_along_an_axis_with_negative_indices() {
    let data = float(&[2, 3], &[0.0, 1.0, 2.0, 10.0, 11.0, 12.0]);
    let picked = eval("Gather", &[attr_int("axis", 1)], &[Some(&data), Some(&int(&[2], &[-1, 0]))]);
    assert_eq!(values(&picked), (vec![2, 2], vec![2.0, 0.0, 12.0, 10.0]));
    let out_of_range = evaluate("Gather", &Attributes { node: "g", list: &[] }, &[Some(&data), Some(&int(&[1], &[2]))]);
    assert!(matches!(out_of_range, Err(ModelError::Shape { .. })));
}

#[test]
fn slice_clamps_bounds_and_walks_negative_steps() {
    let x = float(&[2, 5], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
    let starts = int(&[1], &[-1]);
    let ends = int(&[1], &[i64::MIN]);
    let axes = int(&[1], &[1]);
    let steps = int(&[1], &[-2]);
    let reversed = eval("Slice", &[], &[Some(&x), Some(&starts), Some(&ends), Some(&axes), Some(&steps)]);
    assert_eq!(values(&reversed), (vec![2, 3], vec![4.0, 2.0, 0.0, 9.0, 7.0, 5.0]));
    let tail = eval("Slice", &[], &[Some(&x), Some(&int(&[1], &[1])), Some(&int(&[1], &[i64::MAX])), Some(&int(&[1], &[0])), None]);
    assert_eq!(values(&tail), (vec![1, 5], vec![5.0, 6.0, 7.0, 8.0, 9.0]));
}

#[test]
fn integer_division_truncates_and_mod_follows_the_fmod_attribute() {
    let (a, b) = (int(&[2], &[7, -7]), int(&[1], &[2]));
    assert_eq!(values(&eval("Div", &[], &[Some(&a), Some(&b)])).1, vec![3.0, -3.0]);
    assert_eq!(values(&eval("Div", &[], &[Some(&float(&[1], &[7.0])), Some(&float(&[1], &[2.0]))])).1, vec![3.5]);
    assert_eq!(values(&eval("Mod", &[], &[Some(&a), Some(&int(&[1], &[3]))])).1, vec![1.0, 2.0]);
    assert_eq!(values(&eval("Mod", &[attr_int("fmod", 1)], &[Some(&a), Some(&int(&[1], &[3]))])).1, vec![1.0, -1.0]);
}

#[test]
fn cast_truncates_into_integers_and_equal_where_broadcast() {
    let x = float(&[3], &[1.7, -1.7, 0.0]);
    let cast = eval("Cast", &[attr_int("to", DataType::Int64 as i64)], &[Some(&x)]);
    assert_eq!(values(&cast).1, vec![1.0, -1.0, 0.0]);
    assert!(cast.integer);
    let to_bool = eval("Cast", &[attr_int("to", DataType::Bool as i64)], &[Some(&x)]);
    assert_eq!(values(&to_bool).1, vec![1.0, 1.0, 0.0]);
    let is_minus_one = eval("Equal", &[], &[Some(&int(&[3], &[4, -1, 2])), Some(&int(&[], &[-1]))]);
    assert_eq!(values(&is_minus_one).1, vec![0.0, 1.0, 0.0]);
    let chosen = eval("Where", &[], &[Some(&is_minus_one), Some(&int(&[], &[1])), Some(&int(&[3], &[4, -1, 2]))]);
    assert_eq!(values(&chosen), (vec![3], vec![4.0, 1.0, 2.0]));
}

#[test]
fn range_constant_of_shape_expand_and_transpose() {
    let range = eval("Range", &[], &[Some(&int(&[], &[0])), Some(&int(&[], &[7])), Some(&int(&[], &[3]))]);
    assert_eq!(values(&range), (vec![3], vec![0.0, 3.0, 6.0]));
    let value = pb::AttributeProto {
        name: Some("value".into()),
        t: Some(pb::TensorProto { dims: vec![1], data_type: Some(DataType::Float as i32), float_data: vec![0.5], ..Default::default() }),
        ..Default::default()
    };
    let filled = eval("ConstantOfShape", &[value], &[Some(&int(&[2], &[2, 2]))]);
    assert_eq!(values(&filled), (vec![2, 2], vec![0.5; 4]));
    let expanded = eval("Expand", &[], &[Some(&float(&[2, 1], &[1.0, 2.0])), Some(&int(&[2], &[2, 3]))]);
    assert_eq!(values(&expanded), (vec![2, 3], vec![1.0, 1.0, 1.0, 2.0, 2.0, 2.0]));
    let transposed = eval("Transpose", &[attr_ints("perm", &[1, 0])], &[Some(&float(&[2, 3], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]))]);
    assert_eq!(values(&transposed), (vec![3, 2], vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]));
}

#[test]
fn a_reshape_of_a_constant_resolves_zero_and_minus_one() {
    let x = float(&[2, 3, 2], &[0.0; 12]);
    let reshaped = eval("Reshape", &[], &[Some(&x), Some(&int(&[2], &[0, -1]))]);
    assert_eq!(reshaped.tensor.shape(), &[2, 6]);
}
