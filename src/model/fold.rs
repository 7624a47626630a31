//! Shape-independent simplifications applied right after import: pass-through nodes are
//! removed and per-channel affines (BatchNormalization) are folded into the preceding Conv.

use super::error::ModelError;
use super::ir::{Graph, Op};
use crate::tensor::Tensor;

/// Removes Identity/Dropout nodes and folds ChannelAffine into a Conv that only it reads.
pub fn simplify(graph: &mut Graph) -> Result<(), ModelError> {
    remove_identities(graph);
    fold_affine_into_conv(graph)
}

fn rename_value(graph: &mut Graph, from: &str, to: &str) {
    for node in &mut graph.nodes {
        for input in &mut node.inputs {
            if input == from {
                *input = to.to_string();
            }
        }
    }
}

fn remove_identities(graph: &mut Graph) {
    let mut i = 0;
    while i < graph.nodes.len() {
        if graph.nodes[i].op != Op::Identity {
            i += 1;
            continue;
        }
        let node = graph.nodes.remove(i);
        let source = node.inputs[0].clone();
        if node.output == graph.output {
            // Keep the graph's output name: the producer of `source` writes it instead.
            if let Some(producer) = graph.nodes.iter_mut().find(|n| n.output == source) {
                producer.output = node.output.clone();
                rename_value(graph, &source, &node.output);
                continue;
            }
            graph.nodes.insert(i, node);
            i += 1;
            continue;
        }
        rename_value(graph, &node.output, &source);
    }
}

fn fold_affine_into_conv(graph: &mut Graph) -> Result<(), ModelError> {
    let mut i = 0;
    while i < graph.nodes.len() {
        let foldable = graph.nodes[i].op == Op::ChannelAffine && {
            let source = &graph.nodes[i].inputs[0];
            let counts = graph.consumer_counts();
            counts.get(source.as_str()) == Some(&1)
                && graph.nodes[..i].iter().any(|n| &n.output == source && matches!(n.op, Op::Conv(_)))
        };
        if !foldable {
            i += 1;
            continue;
        }
        let affine = graph.nodes.remove(i);
        let conv_index = graph.nodes.iter().position(|n| n.output == affine.inputs[0]).expect("checked above");
        let scale = graph.initializers[&affine.inputs[1]].data().to_vec();
        let shift = graph.initializers[&affine.inputs[2]].data().to_vec();
        let conv = &graph.nodes[conv_index];
        let weight = &graph.initializers[&conv.inputs[1]];
        let out_channels = weight.shape()[0];
        if scale.len() != out_channels {
            return Err(ModelError::Shape {
                node: affine.name,
                reason: format!("normalises {} channels but '{}' has {out_channels}", scale.len(), conv.name),
            });
        }
        let per_channel = weight.len() / out_channels;
        let mut w = weight.data().to_vec();
        for (oc, chunk) in w.chunks_mut(per_channel).enumerate() {
            chunk.iter_mut().for_each(|v| *v *= scale[oc]);
        }
        let bias: Vec<f32> = (0..out_channels)
            .map(|oc| {
                let b = conv.inputs.get(2).map_or(0.0, |name| graph.initializers[name].data()[oc]);
                b * scale[oc] + shift[oc]
            })
            .collect();
        let (w_name, b_name) = (format!("{}::folded_weight", conv.name), format!("{}::folded_bias", conv.name));
        let w_shape = weight.shape().to_vec();
        graph.initializers.insert(w_name.clone(), Tensor::new(w_shape, w).expect("same shape"));
        graph.initializers.insert(b_name.clone(), Tensor::new(vec![out_channels], bias).expect("channels"));
        let conv = &mut graph.nodes[conv_index];
        conv.inputs = vec![conv.inputs[0].clone(), w_name, b_name];
        conv.output = affine.output;
    }
    Ok(())
}
