//! [`StagedModel`]: a model cut into its partition plan's stages, once per batch where the
//! model's graph depends on its input shape (exported with a dynamic batch).

use std::collections::HashMap;
use std::sync::Arc;

use thiserror::Error;

use super::cost::graph_cost;
use super::ir::Graph;
use super::plan::{PartitionPlan, PlanError};
use super::shape::infer_shapes;
use super::{Model, ModelError};
use crate::tensor::TransferDtype;

/// Why a model could not be cut into its plan's stages for an input's batch.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum StagingError {
    /// The model has no graph for this batch.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The plan does not fit the model's graph for this batch.
    #[error("the partition plan does not fit the model at batch {batch}: {error}")]
    Plan {
        /// The batch.
        batch: usize,
        /// Why it does not fit.
        error: PlanError,
    },
    /// Shape inference gave no shape for the value a cut passes on.
    #[error("no shape was inferred for '{0}', which a cut passes on")]
    NoCutShape(String),
}

/// A model and its partition plan, with each stage's graph per batch: the stages a split
/// session runs. A model whose graph leaves the batch open has one set of stages for every
/// batch; one that needs its input shape is imported and cut again for each batch it is asked
/// for (once per batch).
#[derive(Debug)]
pub struct StagedModel {
    model: Model,
    plan: PartitionPlan,
    /// How each stage's input travels to it.
    input_dtypes: Vec<TransferDtype>,
    /// The stages for every batch, where the graph leaves the batch open; else by batch.
    any_batch: Option<Vec<Arc<Graph>>>,
    by_batch: HashMap<usize, Vec<Arc<Graph>>>,
    /// What crosses each cut, by batch.
    boundaries: HashMap<usize, Arc<BoundaryShapes>>,
    /// Each stage's floating-point operations, by batch.
    flops: HashMap<usize, Vec<u64>>,
}

/// The shapes of the tensors that cross a staged model's cuts for one batch: each stage's
/// input and the last stage's output. A tensor a peer sends across a cut must have exactly
/// its boundary's shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundaryShapes {
    inputs: Vec<Vec<usize>>,
    output: Vec<usize>,
}

impl BoundaryShapes {
    /// The shape of stage `stage`'s input (`None` past the last stage).
    pub fn stage_input(&self, stage: usize) -> Option<&[usize]> {
        self.inputs.get(stage).map(Vec::as_slice)
    }

    /// The shape of stage `stage`'s output: the next stage's input, or the model's output
    /// (`None` past the last stage).
    pub fn stage_output(&self, stage: usize) -> Option<&[usize]> {
        match stage + 1 {
            next if next < self.inputs.len() => Some(&self.inputs[next]),
            next if next == self.inputs.len() => Some(&self.output),
            _ => None,
        }
    }
}

impl StagedModel {
    /// Cuts `model` into `plan`'s stages (for its declared input, symbolic dimensions as 1).
    pub fn new(model: Model, plan: PartitionPlan) -> Result<Self, StagingError> {
        let graph = model.graph().clone();
        let batch = graph.input.dims.first().copied().flatten().unwrap_or(1);
        let (input_dtypes, stages) = cut(&graph, &plan, batch)?;
        let (any_batch, by_batch) = if model.needs_input_shape() { (None, HashMap::from([(batch, stages)])) } else { (Some(stages), HashMap::new()) };
        Ok(Self { model, plan, input_dtypes, any_batch, by_batch, boundaries: HashMap::new(), flops: HashMap::new() })
    }

    /// How many stages the plan has.
    pub fn stage_count(&self) -> usize {
        self.input_dtypes.len()
    }

    /// How each stage's input travels to it (stage 0's is the request's own input).
    pub fn input_dtypes(&self) -> &[TransferDtype] {
        &self.input_dtypes
    }

    /// The stages for the model's declared input (what warm-up runs compile).
    pub fn declared_stages(&self) -> Vec<Arc<Graph>> {
        match &self.any_batch {
            Some(stages) => stages.clone(),
            None => self.by_batch.values().next().cloned().unwrap_or_default(),
        }
    }

    /// Stage `stage`'s graph for inputs of batch `batch` (their first axis).
    pub fn stage(&mut self, stage: usize, batch: usize) -> Result<Arc<Graph>, StagingError> {
        if let Some(stages) = &self.any_batch {
            return Ok(stages[stage].clone());
        }
        if !self.by_batch.contains_key(&batch) {
            let shape = self.input_shape(batch);
            let graph = self.model.graph_for(&shape)?;
            let (_, stages) = cut(&graph, &self.plan, batch)?;
            self.by_batch.insert(batch, stages);
        }
        Ok(self.by_batch[&batch][stage].clone())
    }

    /// The shapes crossing the cuts for inputs of batch `batch` (inferred once per batch).
    pub fn boundary_shapes(&mut self, batch: usize) -> Result<Arc<BoundaryShapes>, StagingError> {
        if let Some(shapes) = self.boundaries.get(&batch) {
            return Ok(shapes.clone());
        }
        let shape = self.input_shape(batch);
        let graph = self.model.graph_for(&shape)?;
        let values = infer_shapes(&graph, &shape)?;
        let missing = |name: &str| StagingError::NoCutShape(name.to_string());
        let mut inputs = Vec::with_capacity(self.stage_count());
        for stage in 0..self.stage_count() {
            let input = &self.stage(stage, batch)?.input.name;
            let shape = if stage == 0 { shape.clone() } else { values.get(input).cloned().ok_or_else(|| missing(input))? };
            inputs.push(shape);
        }
        let output = values.get(&graph.output).cloned().ok_or_else(|| missing(&graph.output))?;
        let shapes = Arc::new(BoundaryShapes { inputs, output });
        self.boundaries.insert(batch, shapes.clone());
        Ok(shapes)
    }

    /// Each stage's floating-point operations for inputs of batch `batch` (counted once per
    /// batch): what the scheduler divides measured times by.
    pub fn stage_flops(&mut self, batch: usize) -> Result<Vec<u64>, StagingError> {
        if let Some(flops) = self.flops.get(&batch) {
            return Ok(flops.clone());
        }
        let shapes = self.boundary_shapes(batch)?;
        let mut flops = Vec::with_capacity(self.stage_count());
        for stage in 0..self.stage_count() {
            let graph = self.stage(stage, batch)?;
            let input = shapes.stage_input(stage).unwrap_or_default();
            let values = infer_shapes(&graph, input)?;
            flops.push(graph_cost(&graph, &values).0);
        }
        self.flops.insert(batch, flops.clone());
        Ok(flops)
    }

    /// The model's input shape for batch `batch`, its symbolic dimensions taken as 1 (as the
    /// stages are cut).
    fn input_shape(&self, batch: usize) -> Vec<usize> {
        let mut shape: Vec<usize> = self.model.graph().input.dims.iter().map(|d| d.unwrap_or(1)).collect();
        if let Some(first) = shape.first_mut() {
            *first = batch;
        }
        shape
    }
}

/// `graph` cut into `plan`'s stages: each stage's input dtype and graph.
fn cut(graph: &Graph, plan: &PartitionPlan, batch: usize) -> Result<(Vec<TransferDtype>, Vec<Arc<Graph>>), StagingError> {
    let validated = plan.validate(graph).map_err(|error| StagingError::Plan { batch, error })?;
    let dtypes = validated.stages.iter().map(|s| s.input_dtype).collect();
    Ok((dtypes, validated.stage_graphs(graph).into_iter().map(Arc::new).collect()))
}
