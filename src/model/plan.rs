//! Partition plans: a model cut into stages (contiguous node ranges, by ONNX node name) with the
//! dtype each cut's activation travels in. Plans are RON files, validated against the graph.

use std::collections::{HashMap, HashSet};
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::cost::{node_flops, value_bytes};
use super::ir::{Graph, GraphInput};
use super::shape::{infer_shapes, Shapes};
use crate::tensor::TransferDtype;

/// The plan format version this crate reads and writes.
pub const PLAN_VERSION: u32 = 1;

/// One stage of a plan: the nodes from `first` to `last` (inclusive, by ONNX node name).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct StageRange {
    /// Name of the stage's first node.
    pub first: String,
    /// Name of the stage's last node.
    pub last: String,
}

/// A partition plan as written in a `.plan.ron` file: what a user edits or `plan` proposes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, bevy::asset::Asset, bevy::reflect::TypePath)]
pub struct PartitionPlan {
    /// Format version ([`PLAN_VERSION`]).
    pub version: u32,
    /// Stages in execution order; together they cover every node exactly once.
    pub stages: Vec<StageRange>,
    /// The transfer dtype of each cut (one fewer than stages).
    pub cuts: Vec<TransferDtype>,
}

/// Why a plan cannot be read or does not fit its model.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// The RON text does not parse as a plan.
    #[error("the plan is not valid RON: {0}")]
    Syntax(String),
    /// The plan was written for another format version.
    #[error("plan version {found} is not supported (this crate reads version {PLAN_VERSION})")]
    UnsupportedVersion {
        /// The file's version.
        found: u32,
    },
    /// The plan has no stages.
    #[error("the plan has no stages")]
    NoStages,
    /// The number of cut dtypes is not one fewer than the number of stages.
    #[error("{stages} stages need {} cut dtypes, the plan lists {cuts}", stages.saturating_sub(1))]
    CutCount {
        /// Stages in the plan.
        stages: usize,
        /// Cut dtypes in the plan.
        cuts: usize,
    },
    /// A stage names a node the model does not have (a node folded away at import, such as a
    /// BatchNormalization merged into its Conv, cannot be named either).
    #[error("stage {stage}: the model has no node named '{name}'")]
    UnknownNode {
        /// Stage index.
        stage: usize,
        /// The name given.
        name: String,
    },
    /// A stage does not start right after the previous one ends (or the first not at the first
    /// node), so some nodes are skipped, repeated or out of order.
    #[error("stage {stage} starts at node '{found}' but must start at '{expected}' to follow the previous stage")]
    NotContiguous {
        /// Stage index.
        stage: usize,
        /// The node it starts at.
        found: String,
        /// The node it must start at.
        expected: String,
    },
    /// A stage's last node comes before its first.
    #[error("stage {stage} ends at '{last}', which comes before its first node")]
    EmptyStage {
        /// Stage index.
        stage: usize,
        /// Its last node.
        last: String,
    },
    /// The last stage does not end at the last node.
    #[error("the stages end at '{found}' but the model's last node is '{expected}'")]
    Uncovered {
        /// Where the plan ends.
        found: String,
        /// The model's last node.
        expected: String,
    },
    /// More than one activation crosses a cut (a skip connection spans it): the next stage
    /// would need several inputs.
    #[error("cut {cut} (after '{after}') is crossed by {} values ({}); a cut must be crossed by exactly one", values.len(), values.join(", "))]
    SeveralCrossingValues {
        /// Cut index.
        cut: usize,
        /// The node the cut follows.
        after: String,
        /// The values that cross it.
        values: Vec<String>,
    },
    /// The graph's output is not produced by the last node.
    #[error("the model output '{0}' is not produced by its last node, so it cannot be staged")]
    OutputNotLast(String),
    /// Fewer cut points exist than the requested stages need.
    #[error("{stages} stages were asked for but the model has only {candidates} places where one value crosses")]
    TooManyStages {
        /// Stages asked for.
        stages: usize,
        /// Valid cut points.
        candidates: usize,
    },
    /// Shape inference failed while sizing the cuts.
    #[error("cannot size the cuts: {0}")]
    Shapes(String),
}

/// One stage of a validated plan: node indices and the values it reads and writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stage {
    /// Indices into [`Graph::nodes`].
    pub nodes: RangeInclusive<usize>,
    /// The value the stage reads (the graph input or the previous cut).
    pub input: String,
    /// The value the stage writes (the next cut or the graph output).
    pub output: String,
    /// How the stage's input travels (F32 for the first stage, which reads the request).
    pub input_dtype: TransferDtype,
}

/// A plan checked against a graph: stage boundaries as node indices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatedPlan {
    /// Stages in execution order.
    pub stages: Vec<Stage>,
}

impl PartitionPlan {
    /// Parses RON text.
    pub fn from_ron(text: &str) -> Result<Self, PlanError> {
        ron::from_str(text).map_err(|e| PlanError::Syntax(e.to_string()))
    }

    /// Writes the plan as pretty RON.
    pub fn to_ron(&self) -> String {
        ron::ser::to_string_pretty(self, ron::ser::PrettyConfig::default()).expect("plans always serialize")
    }

    /// A one-stage plan: the whole model on one peer.
    pub fn single_stage(graph: &Graph) -> Self {
        let name = |i: usize| graph.nodes.get(i).map(|n| n.name.clone()).unwrap_or_default();
        Self {
            version: PLAN_VERSION,
            stages: vec![StageRange { first: name(0), last: name(graph.nodes.len().saturating_sub(1)) }],
            cuts: Vec::new(),
        }
    }

    /// Checks the plan against `graph`: version, node names, contiguous full coverage, and a
    /// single value crossing each cut.
    pub fn validate(&self, graph: &Graph) -> Result<ValidatedPlan, PlanError> {
        if self.version != PLAN_VERSION {
            return Err(PlanError::UnsupportedVersion { found: self.version });
        }
        if self.stages.is_empty() {
            return Err(PlanError::NoStages);
        }
        if self.cuts.len() + 1 != self.stages.len() {
            return Err(PlanError::CutCount { stages: self.stages.len(), cuts: self.cuts.len() });
        }
        let last_node = graph.nodes.len() - 1;
        if graph.nodes[last_node].output != graph.output {
            return Err(PlanError::OutputNotLast(graph.output.clone()));
        }
        let index: HashMap<&str, usize> = graph.nodes.iter().enumerate().map(|(i, n)| (n.name.as_str(), i)).collect();
        let lookup = |stage: usize, name: &str| {
            index.get(name).copied().ok_or_else(|| PlanError::UnknownNode { stage, name: name.to_string() })
        };
        let crossing = crossing_values(graph);
        let mut stages = Vec::with_capacity(self.stages.len());
        let mut next = 0;
        let mut input = graph.input.name.clone();
        let mut input_dtype = TransferDtype::F32;
        for (s, range) in self.stages.iter().enumerate() {
            let (first, last) = (lookup(s, &range.first)?, lookup(s, &range.last)?);
            if first != next {
                return Err(PlanError::NotContiguous {
                    stage: s,
                    found: range.first.clone(),
                    expected: graph.nodes[next].name.clone(),
                });
            }
            if last < first {
                return Err(PlanError::EmptyStage { stage: s, last: range.last.clone() });
            }
            let is_last_stage = s + 1 == self.stages.len();
            if last != last_node {
                if is_last_stage {
                    return Err(PlanError::Uncovered {
                        found: range.last.clone(),
                        expected: graph.nodes[last_node].name.clone(),
                    });
                }
                if crossing[last].len() != 1 {
                    return Err(PlanError::SeveralCrossingValues { cut: s, after: range.last.clone(), values: crossing[last].clone() });
                }
            } else if !is_last_stage {
                return Err(PlanError::NotContiguous {
                    stage: s + 1,
                    found: self.stages[s + 1].first.clone(),
                    expected: "nothing (the previous stage already ends at the last node)".into(),
                });
            }
            let output = if last == last_node { graph.output.clone() } else { crossing[last][0].clone() };
            stages.push(Stage { nodes: first..=last, input: input.clone(), output: output.clone(), input_dtype });
            input = output;
            input_dtype = self.cuts.get(s).copied().unwrap_or(TransferDtype::F32);
            next = last + 1;
        }
        Ok(ValidatedPlan { stages })
    }
}

/// For each node index `j`, the activations produced at or before `j` (the graph input
/// included) that are still needed after `j`.
fn crossing_values(graph: &Graph) -> Vec<Vec<String>> {
    let mut last_use: HashMap<&str, usize> = HashMap::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        for input in &node.inputs {
            if !graph.initializers.contains_key(input) {
                last_use.insert(input.as_str(), i);
            }
        }
    }
    let mut live: Vec<&str> = vec![graph.input.name.as_str()];
    let mut crossing = Vec::with_capacity(graph.nodes.len());
    for (j, node) in graph.nodes.iter().enumerate() {
        live.push(node.output.as_str());
        live.retain(|v| last_use.get(v).is_some_and(|&u| u > j));
        crossing.push(live.iter().map(|v| v.to_string()).collect());
    }
    crossing
}

impl ValidatedPlan {
    /// The sub-graph of stage `stage`: its nodes, the initializers they read, its input (with
    /// dimensions taken from `shapes`, batch left open) and output.
    pub fn stage_graph(&self, graph: &Graph, stage: usize, shapes: Option<&Shapes>) -> Graph {
        let spec = &self.stages[stage];
        let nodes = graph.nodes[spec.nodes.clone()].to_vec();
        let used: HashSet<&str> = nodes.iter().flat_map(|n| n.inputs.iter().map(String::as_str)).collect();
        let initializers = graph
            .initializers
            .iter()
            .filter(|(name, _)| used.contains(name.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let dims = match (stage, shapes.and_then(|s| s.get(&spec.input))) {
            (0, _) => graph.input.dims.clone(),
            (_, Some(dims)) => dims.iter().enumerate().map(|(i, &d)| (i > 0).then_some(d)).collect(),
            (_, None) => Vec::new(),
        };
        Graph {
            input: GraphInput { name: spec.input.clone(), dims },
            output: spec.output.clone(),
            nodes,
            initializers,
        }
    }

    /// Every stage's sub-graph, with cut dimensions inferred for a batch of one.
    pub fn stage_graphs(&self, graph: &Graph) -> Vec<Graph> {
        let input: Vec<usize> = graph.input.dims.iter().map(|d| d.unwrap_or(1)).collect();
        let shapes = infer_shapes(graph, &input).ok();
        (0..self.stages.len()).map(|s| self.stage_graph(graph, s, shapes.as_ref())).collect()
    }
}

/// What one stage of a proposed plan costs, as `plan` prints it.
#[derive(Clone, Debug, PartialEq)]
pub struct StageCost {
    /// Floating-point operations of the stage.
    pub flops: u64,
    /// Bytes of the weights the stage reads.
    pub weight_bytes: u64,
    /// Bytes of the stage's output as f32 (zero for the last stage, whose output is the result).
    pub cut_bytes_f32: u64,
    /// The same output as int8.
    pub cut_bytes_int8: u64,
}

/// Per-stage costs of a validated plan for `input_shape`.
pub fn stage_costs(graph: &Graph, plan: &ValidatedPlan, input_shape: &[usize]) -> Result<Vec<StageCost>, PlanError> {
    let shapes = infer_shapes(graph, input_shape).map_err(|e| PlanError::Shapes(e.to_string()))?;
    let last = plan.stages.len() - 1;
    Ok(plan
        .stages
        .iter()
        .enumerate()
        .map(|(s, stage)| {
            let nodes = &graph.nodes[stage.nodes.clone()];
            let weights: HashSet<&str> = nodes
                .iter()
                .flat_map(|n| n.inputs.iter().map(String::as_str))
                .filter(|v| graph.initializers.contains_key(*v))
                .collect();
            let cut = if s == last { 0 } else { value_bytes(&shapes, &stage.output) };
            StageCost {
                flops: nodes.iter().map(|n| node_flops(n, &shapes)).sum(),
                weight_bytes: weights.iter().map(|w| graph.initializers[*w].len() as u64 * 4).sum(),
                cut_bytes_f32: cut,
                cut_bytes_int8: cut / 4,
            }
        })
        .collect())
}

/// How many stages `graph` can be cut into at most: one more than the places where exactly
/// one value crosses.
pub fn most_stages(graph: &Graph) -> usize {
    let n = graph.nodes.len();
    crossing_values(graph).iter().take(n.saturating_sub(1)).filter(|values| values.len() == 1).count() + 1
}

/// Proposes cuts for `stages` stages: the smallest possible largest-stage FLOPs, and among
/// the plans within 10% of it, the fewest bytes crossing the cuts. Every cut gets `dtype`.
pub fn propose_plan(graph: &Graph, input_shape: &[usize], stages: usize, dtype: TransferDtype) -> Result<PartitionPlan, PlanError> {
    if stages == 0 {
        return Err(PlanError::NoStages);
    }
    let shapes = infer_shapes(graph, input_shape).map_err(|e| PlanError::Shapes(e.to_string()))?;
    let n = graph.nodes.len();
    let crossing = crossing_values(graph);
    // Cut candidates: after node j (j < n-1) where exactly one value crosses.
    let candidates: Vec<usize> = (0..n - 1).filter(|&j| crossing[j].len() == 1).collect();
    if candidates.len() < stages - 1 {
        return Err(PlanError::TooManyStages { stages, candidates: candidates.len() });
    }
    let mut prefix = vec![0u64; n + 1];
    for (i, node) in graph.nodes.iter().enumerate() {
        prefix[i + 1] = prefix[i] + node_flops(node, &shapes);
    }
    // Boundaries: a stage ends at one of the candidates or at the last node.
    let ends: Vec<usize> = candidates.iter().copied().chain([n - 1]).collect();
    let flops = |start: usize, end: usize| prefix[end + 1] - prefix[start];
    let cut_bytes = |end: usize| value_bytes(&shapes, &crossing[end][0]);
    let best_max = min_max_flops(&ends, stages, flops);
    let bound = best_max + best_max / 10;
    let cuts = fewest_cut_bytes(&ends, stages, bound, flops, cut_bytes).expect("the optimal split is within the bound");
    let mut ranges = Vec::with_capacity(stages);
    let mut start = 0;
    for end in cuts.into_iter().chain([n - 1]) {
        ranges.push(StageRange { first: graph.nodes[start].name.clone(), last: graph.nodes[end].name.clone() });
        start = end + 1;
    }
    Ok(PartitionPlan { version: PLAN_VERSION, stages: ranges, cuts: vec![dtype; stages - 1] })
}

/// The smallest achievable largest-stage FLOPs when splitting into `stages` stages that end
/// at `ends` (whose last entry is the last node).
fn min_max_flops(ends: &[usize], stages: usize, flops: impl Fn(usize, usize) -> u64) -> u64 {
    // best[k][e]: stages 0..=k covering nodes up to ends[e].
    let mut best = vec![vec![u64::MAX; ends.len()]; stages];
    for (e, &end) in ends.iter().enumerate() {
        best[0][e] = flops(0, end);
    }
    for k in 1..stages {
        for e in 0..ends.len() {
            for p in 0..e {
                if best[k - 1][p] == u64::MAX {
                    continue;
                }
                let cost = best[k - 1][p].max(flops(ends[p] + 1, ends[e]));
                best[k][e] = best[k][e].min(cost);
            }
        }
    }
    best[stages - 1][ends.len() - 1]
}

/// The cut positions (node indices) with the fewest total cut bytes whose stages all stay
/// within `bound` FLOPs.
fn fewest_cut_bytes(
    ends: &[usize],
    stages: usize,
    bound: u64,
    flops: impl Fn(usize, usize) -> u64,
    cut_bytes: impl Fn(usize) -> u64,
) -> Option<Vec<usize>> {
    let last = ends.len() - 1;
    // best[k][e]: (bytes, previous end index) for stages 0..=k ending at ends[e].
    /// Cut bytes so far and the previous stage's end index.
    type Best = Option<(u64, Option<usize>)>;
    let mut best: Vec<Vec<Best>> = vec![vec![None; ends.len()]; stages];
    for (e, &end) in ends.iter().enumerate() {
        if flops(0, end) <= bound {
            best[0][e] = Some((if e == last { 0 } else { cut_bytes(end) }, None));
        }
    }
    for k in 1..stages {
        for e in 0..ends.len() {
            for p in 0..e {
                let Some((bytes, _)) = best[k - 1][p] else { continue };
                if flops(ends[p] + 1, ends[e]) > bound {
                    continue;
                }
                let total = bytes + if e == last { 0 } else { cut_bytes(ends[e]) };
                if best[k][e].is_none_or(|(b, _)| total < b) {
                    best[k][e] = Some((total, Some(p)));
                }
            }
        }
    }
    let mut cuts = Vec::new();
    let mut e = last;
    for k in (1..stages).rev() {
        let (_, prev) = best[k][e]?;
        e = prev?;
        cuts.push(ends[e]);
    }
    best[0][e]?;
    cuts.reverse();
    Some(cuts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ir::{Activation, BinaryOp, Node, Op};
    use crate::tensor::Tensor;

    /// input -> a (relu) -> b (relu) -> c = a + b -> d = c * w: the skip from a to c means no
    /// cut may fall after `b`.
    fn skip_graph() -> Graph {
        let node = |name: &str, op: Op, inputs: &[&str]| Node {
            name: name.into(),
            op,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            output: format!("{name}_out"),
        };
        Graph {
            input: GraphInput { name: "x".into(), dims: vec![None, Some(4)] },
            output: "d_out".into(),
            nodes: vec![
                node("a", Op::Activation(Activation::Relu), &["x"]),
                node("b", Op::Activation(Activation::Relu), &["a_out"]),
                node("c", Op::Binary(BinaryOp::Add), &["a_out", "b_out"]),
                node("d", Op::Binary(BinaryOp::Mul), &["c_out", "w"]),
            ],
            initializers: [("w".to_string(), Tensor::new(vec![4], vec![1.0, 2.0, 3.0, 4.0]).unwrap())].into(),
        }
    }

    fn plan(stages: &[(&str, &str)], cuts: &[TransferDtype]) -> PartitionPlan {
        PartitionPlan {
            version: PLAN_VERSION,
            stages: stages.iter().map(|(f, l)| StageRange { first: f.to_string(), last: l.to_string() }).collect(),
            cuts: cuts.to_vec(),
        }
    }

    #[test]
    fn a_plan_round_trips_through_ron() {
        let p = plan(&[("a", "c"), ("d", "d")], &[TransferDtype::Int8]);
        assert_eq!(PartitionPlan::from_ron(&p.to_ron()).unwrap(), p);
    }

    #[test]
    fn a_valid_plan_gives_each_stage_its_input_output_and_dtype() {
        let v = plan(&[("a", "c"), ("d", "d")], &[TransferDtype::Int8]).validate(&skip_graph()).unwrap();
        assert_eq!(v.stages[0], Stage { nodes: 0..=2, input: "x".into(), output: "c_out".into(), input_dtype: TransferDtype::F32 });
        assert_eq!(v.stages[1], Stage { nodes: 3..=3, input: "c_out".into(), output: "d_out".into(), input_dtype: TransferDtype::Int8 });
    }

    #[test]
    fn stage_graphs_carry_only_their_nodes_and_weights() {
        let g = skip_graph();
        let v = plan(&[("a", "c"), ("d", "d")], &[TransferDtype::F32]).validate(&g).unwrap();
        let graphs = v.stage_graphs(&g);
        assert_eq!(graphs[0].nodes.len(), 3);
        assert!(graphs[0].initializers.is_empty());
        assert_eq!(graphs[1].input, GraphInput { name: "c_out".into(), dims: vec![None, Some(4)] });
        assert!(graphs[1].initializers.contains_key("w"));
    }

    #[test]
    fn a_cut_crossed_by_a_skip_connection_is_rejected_naming_the_values() {
        let err = plan(&[("a", "b"), ("c", "d")], &[TransferDtype::F32]).validate(&skip_graph()).unwrap_err();
        assert_eq!(err, PlanError::SeveralCrossingValues { cut: 0, after: "b".into(), values: vec!["a_out".into(), "b_out".into()] });
    }

    #[test]
    fn gaps_overlaps_unknown_nodes_and_short_plans_are_rejected() {
        let g = skip_graph();
        let f32 = [TransferDtype::F32];
        assert!(matches!(plan(&[("a", "a"), ("c", "d")], &f32).validate(&g), Err(PlanError::NotContiguous { stage: 1, .. })));
        assert!(matches!(plan(&[("a", "c"), ("c", "d")], &f32).validate(&g), Err(PlanError::NotContiguous { stage: 1, .. })));
        assert!(matches!(plan(&[("a", "zz"), ("d", "d")], &f32).validate(&g), Err(PlanError::UnknownNode { stage: 0, .. })));
        assert!(matches!(plan(&[("a", "c")], &[]).validate(&g), Err(PlanError::Uncovered { .. })));
        assert!(matches!(plan(&[("c", "a"), ("d", "d")], &f32).validate(&g), Err(PlanError::NotContiguous { stage: 0, .. })));
        assert!(matches!(plan(&[("a", "d")], &f32).validate(&g), Err(PlanError::CutCount { stages: 1, cuts: 1 })));
        assert!(matches!(plan(&[], &[]).validate(&g), Err(PlanError::NoStages)));
        let mut old = plan(&[("a", "d")], &[]);
        old.version = 0;
        assert_eq!(old.validate(&g), Err(PlanError::UnsupportedVersion { found: 0 }));
        assert!(matches!(PartitionPlan::from_ron("(version: 1, stages: ["), Err(PlanError::Syntax(_))));
    }

    #[test]
    fn proposals_only_cut_where_one_value_crosses() {
        let g = skip_graph();
        let p = propose_plan(&g, &[1, 4], 3, TransferDtype::Int8).unwrap();
        let ends: Vec<&str> = p.stages.iter().map(|s| s.last.as_str()).collect();
        assert_eq!(ends, ["a", "c", "d"]);
        assert_eq!(p.cuts, [TransferDtype::Int8; 2]);
        p.validate(&g).unwrap();
        assert_eq!(propose_plan(&g, &[1, 4], 4, TransferDtype::Int8), Err(PlanError::TooManyStages { stages: 4, candidates: 2 }));
        assert_eq!(most_stages(&g), 3);
    }
}
