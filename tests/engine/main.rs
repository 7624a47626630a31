//! Specification of the single-peer engine, checked on whatever adapter wgpu finds (lavapipe on CI).

mod support;

mod bad_input;
mod bevy_app;
mod buffer_output;
mod exporter_patterns;
mod gpu_timing;
mod half_precision;
mod image_input;
mod image_output;
mod image_requests;
mod layer_slices;
mod model_zoo;
mod models_match_onnx_runtime;
// Draws a 3D scene into a texture: Bevy's 3D renderer, feature `scene` (the README's test
// command turns it on).
#[cfg(feature = "scene")]
mod render_target;
mod ops_match_cpu_reference;
mod staged_models;
mod top_k;
