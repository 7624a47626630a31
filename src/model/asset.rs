//! The [`Model`] asset and its `.onnx` loader.

use std::sync::Arc;

use bevy::asset::{io::Reader, Asset, AssetLoader, LoadContext};
use bevy::reflect::TypePath;
use thiserror::Error;

use super::error::ModelError;
use super::ir::Graph;
use super::onnx::import_onnx;
use super::plan::{PartitionPlan, PlanError};

/// An imported model: the simplified graph IR, shared with the render world without copying.
#[derive(Asset, TypePath, Clone, Debug)]
pub struct Model {
    graph: Arc<Graph>,
    hash: [u8; 32],
}

impl Model {
    /// Imports ONNX bytes.
    pub fn from_onnx_bytes(bytes: &[u8]) -> Result<Self, ModelError> {
        use sha2::Digest;
        Ok(Self { graph: Arc::new(import_onnx(bytes)?), hash: sha2::Sha256::digest(bytes).into() })
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
