//! [`StagedModel`]: a model cut into its partition plan's stages, once per batch where the
//! model's graph depends on its input shape (exported with a dynamic batch).

use std::collections::HashMap;
use std::sync::Arc;

use thiserror::Error;

use super::ir::Graph;
use super::plan::{PartitionPlan, PlanError};
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
}

impl StagedModel {
    /// Cuts `model` into `plan`'s stages (for its declared input, symbolic dimensions as 1).
    pub fn new(model: Model, plan: PartitionPlan) -> Result<Self, StagingError> {
        let graph = model.graph().clone();
        let batch = graph.input.dims.first().copied().flatten().unwrap_or(1);
        let (input_dtypes, stages) = cut(&graph, &plan, batch)?;
        let (any_batch, by_batch) = if model.needs_input_shape() { (None, HashMap::from([(batch, stages)])) } else { (Some(stages), HashMap::new()) };
        Ok(Self { model, plan, input_dtypes, any_batch, by_batch })
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
            let mut shape: Vec<usize> = self.model.graph().input.dims.iter().map(|d| d.unwrap_or(1)).collect();
            if let Some(first) = shape.first_mut() {
                *first = batch;
            }
            let graph = self.model.graph_for(&shape)?;
            let (_, stages) = cut(&graph, &self.plan, batch)?;
            self.by_batch.insert(batch, stages);
        }
        Ok(self.by_batch[&batch][stage].clone())
    }
}

/// `graph` cut into `plan`'s stages: each stage's input dtype and graph.
fn cut(graph: &Graph, plan: &PartitionPlan, batch: usize) -> Result<(Vec<TransferDtype>, Vec<Arc<Graph>>), StagingError> {
    let validated = plan.validate(graph).map_err(|error| StagingError::Plan { batch, error })?;
    let dtypes = validated.stages.iter().map(|s| s.input_dtype).collect();
    Ok((dtypes, validated.stage_graphs(graph).into_iter().map(Arc::new).collect()))
}
