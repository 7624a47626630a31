//! The [`Model`] asset and its `.onnx` loader.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bevy::asset::{io::Reader, Asset, AssetLoader, LoadContext};
use bevy::reflect::TypePath;
use thiserror::Error;

use super::error::ModelError;
use super::ir::Graph;
use super::external_data::{external_data_locations, ExternalFiles};
use super::onnx::{import_onnx_with, ImportOptions};
use super::plan::{PartitionPlan, PlanError};
use super::sealed::{model_bytes, SealError};
use crate::secret::SecretKey;
use zeroize::Zeroizing;

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

/// The graphs of a model that needs its input shape, by shape, and the files to import them from.
#[derive(Debug)]
struct PerShape {
    bytes: Vec<u8>,
    external_files: ExternalFiles,
    graphs: Mutex<HashMap<Vec<usize>, Arc<Graph>>>,
}

impl Model {
    /// Imports ONNX bytes. Where the graph depends on the input's symbolic dimensions, [`Self::graph`]
    /// is the graph for those dimensions set to 1.
    pub fn from_onnx_bytes(bytes: &[u8]) -> Result<Self, ModelError> {
        Self::from_onnx_files(bytes, ExternalFiles::new())
    }

    /// Imports ONNX bytes whose initializers read `external_files` (the files
    /// [`super::external_data_locations`] lists, by location). The hash covers them too.
    pub fn from_onnx_files(bytes: &[u8], external_files: ExternalFiles) -> Result<Self, ModelError> {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        hasher.update(bytes);
        let mut locations: Vec<&String> = external_files.keys().collect();
        locations.sort();
        for location in locations {
            hasher.update(&external_files[location]);
        }
        let hash = hasher.finalize().into();
        let options = ImportOptions { external_files: Some(&external_files), ..Default::default() };
        match import_onnx_with(bytes, &options) {
            Ok(graph) => Ok(Self { graph: Arc::new(graph), hash, per_shape: None }),
            Err(ModelError::NeedsInputShape { .. }) => {
                let graph = Arc::new(import_onnx_with(bytes, &ImportOptions { symbolic_dims_as: Some(1), ..options })?);
                let unit: Vec<usize> = graph.input.dims.iter().map(|d| d.unwrap_or(1)).collect();
                let graphs = Mutex::new(HashMap::from([(unit, graph.clone())]));
                Ok(Self { graph, hash, per_shape: Some(Arc::new(PerShape { bytes: bytes.to_vec(), external_files, graphs })) })
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
        let options = ImportOptions { input_shape: Some(shape), external_files: Some(&per_shape.external_files), ..Default::default() };
        let graph = Arc::new(import_onnx_with(&per_shape.bytes, &options)?);
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

/// Loads `.onnx` files (and `.onnx.sealed` ones, with [`Self::key`]) as [`Model`] assets.
#[derive(Default, TypePath)]
pub struct OnnxLoader {
    /// The key sealed models are opened with ([`crate::P2pInferencePlugin::model_key`]).
    pub key: Option<SecretKey>,
}

/// Why an `.onnx` asset failed to load.
#[derive(Debug, Error)]
pub enum OnnxLoadError {
    /// The file could not be read.
    #[error("cannot read the model file: {0}")]
    Io(#[from] std::io::Error),
    /// The file could not be imported.
    #[error(transparent)]
    Import(#[from] ModelError),
    /// The file is sealed and did not open.
    #[error(transparent)]
    Sealed(#[from] SealError),
    /// An external data file the model names could not be read.
    #[error("cannot read the model's external data '{location}': {reason}")]
    ExternalData {
        /// The location the model names.
        location: String,
        /// Why.
        reason: String,
    },
}

impl AssetLoader for OnnxLoader {
    type Asset = Model;
    type Settings = ();
    type Error = OnnxLoadError;

    async fn load(
        &self,
        reader: &mut dyn Reader,
        _settings: &(),
        load_context: &mut LoadContext<'_>,
    ) -> Result<Model, OnnxLoadError> {
        let mut bytes = Zeroizing::new(Vec::new());
        reader.read_to_end(&mut bytes).await?;
        let bytes = model_bytes(bytes, self.key.as_ref())?;
        // Initializers stored beside the model (`model.onnx.data`) are read from the same source.
        let mut external_files = ExternalFiles::new();
        for location in external_data_locations(&bytes)? {
            let path = load_context.path().resolve_embed_str(&location).map_err(|e| OnnxLoadError::ExternalData { location: location.clone(), reason: e.to_string() })?;
            let data = load_context.read_asset_bytes(path).await.map_err(|e| OnnxLoadError::ExternalData { location: location.clone(), reason: e.to_string() })?;
            external_files.insert(location, data);
        }
        Ok(Model::from_onnx_files(&bytes, external_files)?)
    }

    fn extensions(&self) -> &[&str] {
        &["onnx", "onnx.sealed"]
    }
}
