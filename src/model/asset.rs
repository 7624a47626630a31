//! The [`Model`] asset and its `.onnx` loader.

use std::sync::Arc;

use bevy::asset::{io::Reader, Asset, AssetLoader, LoadContext};
use bevy::reflect::TypePath;
use thiserror::Error;

use super::error::ModelError;
use super::ir::Graph;
use super::onnx::import_onnx;

/// An imported model: the simplified graph IR, shared with the render world without copying.
#[derive(Asset, TypePath, Clone, Debug)]
pub struct Model {
    graph: Arc<Graph>,
}

impl Model {
    /// Imports ONNX bytes.
    pub fn from_onnx_bytes(bytes: &[u8]) -> Result<Self, ModelError> {
        Ok(Self { graph: Arc::new(import_onnx(bytes)?) })
    }

    /// The graph IR.
    pub fn graph(&self) -> &Arc<Graph> {
        &self.graph
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
