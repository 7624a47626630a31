//! The [`Model`] asset and its `.onnx` loader.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bevy::asset::{io::Reader, Asset, AssetLoader, LoadContext};
use bevy::reflect::TypePath;
use thiserror::Error;

use super::error::ModelError;
use super::ir::Graph;
use super::onnx::{declared_input_dims, import_onnx, import_onnx_for_input};
use super::plan::{PartitionPlan, PlanError};

/// An imported model: the simplified graph IR, shared with the render world without copying.
///
/// A model whose shape arithmetic reads a symbolic input dimension (exported with dynamic axes)
/// has one graph per input shape: [`Model::graph_for`] imports it for a request's shape the
/// first time one comes, and keeps it.
#[derive(Asset, TypePath, Clone, Debug)]
pub struct Model {
    graph: Arc<Graph>,
    hash: [u8; 32],
    per_shape: Option<Arc<PerShape>>,
}

/// The graphs of a model that needs its input shape, by shape, and the file to import them from.
#[derive(Debug)]
struct PerShape {
    bytes: Vec<u8>,
    graphs: Mutex<HashMap<Vec<usize>, Arc<Graph>>>,
}

impl Model {
    /// Imports ONNX bytes. Where the graph depends on the input's symbolic dimensions, [`Self::graph`]
    /// is the graph for those dimensions set to 1.
    pub fn from_onnx_bytes(bytes: &[u8]) -> Result<Self, ModelError> {
        use sha2::Digest;
        let hash = sha2::Sha256::digest(bytes).into();
        match import_onnx(bytes) {
            Ok(graph) => Ok(Self { graph: Arc::new(graph), hash, per_shape: None }),
            Err(ModelError::NeedsInputShape { .. }) => {
                let declared = declared_input_dims(bytes)?;
                let unit: Vec<usize> = declared.iter().map(|d| d.unwrap_or(1)).collect();
                let graph = Arc::new(import_onnx_for_input(bytes, &unit)?);
                let graphs = Mutex::new(HashMap::from([(unit, graph.clone())]));
                Ok(Self { graph, hash, per_shape: Some(Arc::new(PerShape { bytes: bytes.to_vec(), graphs })) })
            }
            Err(error) => Err(error),
        }
    }

    /// The graph for an input of `shape`: [`Self::graph`], or for a model that needs its input
    /// shape, the graph imported for this one (once per shape).
    pub fn graph_for(&self, shape: &[usize]) -> Result<Arc<Graph>, ModelError> {
        let Some(per_shape) = &self.per_shape else { return Ok(self.graph.clone()) };
        let mut graphs = per_shape.graphs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(graph) = graphs.get(shape) {
            return Ok(graph.clone());
        }
        let graph = Arc::new(import_onnx_for_input(&per_shape.bytes, shape)?);
        graphs.insert(shape.to_vec(), graph.clone());
        Ok(graph)
    }

    /// Whether the graph depends on the input's shape beyond its batch.
    pub fn needs_input_shape(&self) -> bool {
        self.per_shape.is_some()
    }

    /// SHA-256 of the ONNX file: peers check in their handshake that they run the same model.
    pub fn hash(&self) -> [u8; 32] {
        self.hash
    }

    /// The graph IR.
    pub fn graph(&self) -> &Arc<Graph> {
        &self.graph
    }
}

/// Loads `.plan.ron` files as [`PartitionPlan`] assets (validated against a model when used).
#[derive(Default, TypePath)]
pub struct PlanLoader;

/// Why a `.plan.ron` asset failed to load.
#[derive(Debug, Error)]
pub enum PlanLoadError {
    /// The file could not be read.
    #[error("cannot read the plan file: {0}")]
    Io(#[from] std::io::Error),
    /// The file is not UTF-8.
    #[error("the plan file is not UTF-8")]
    Utf8,
    /// The file is not a plan.
    #[error(transparent)]
    Plan(#[from] PlanError),
}

impl AssetLoader for PlanLoader {
    type Asset = PartitionPlan;
    type Settings = ();
    type Error = PlanLoadError;

    async fn load(&self, reader: &mut dyn Reader, _settings: &(), _load_context: &mut LoadContext<'_>) -> Result<PartitionPlan, PlanLoadError> {
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).await?;
        let text = String::from_utf8(bytes).map_err(|_| PlanLoadError::Utf8)?;
        Ok(PartitionPlan::from_ron(&text)?)
    }

    fn extensions(&self) -> &[&str] {
        &["plan.ron"]
    }
}

/// Loads `.onnx` files as [`Model`] assets.
#[derive(Default, TypePath)]
pub struct OnnxLoader;

/// Why an `.onnx` asset failed to load.
#[derive(Debug, Error)]
pub enum OnnxLoadError {
    /// The file could not be read.
    #[error("cannot read the model file: {0}")]
    Io(#[from] std::io::Error),
    /// The file could not be imported.
    #[error(transparent)]
    Import(#[from] ModelError),
}

impl AssetLoader for OnnxLoader {
    type Asset = Model;
    type Settings = ();
    type Error = OnnxLoadError;

    async fn load(
        &self,
        reader: &mut dyn Reader,
        _settings: &(),
        _load_context: &mut LoadContext<'_>,
    ) -> Result<Model, OnnxLoadError> {
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).await?;
        Ok(Model::from_onnx_bytes(&bytes)?)
    }

    fn extensions(&self) -> &[&str] {
        &["onnx"]
    }
}
