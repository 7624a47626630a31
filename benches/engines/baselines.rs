//! The other engines, on the same inputs: ONNX Runtime and PyTorch through the Python helpers in
//! `tools/`, and tract (feature `bench-tract`).

use bevy_p2p_inference::prelude::*;
use npyz::WriterBuilder;

pub fn save_npy(path: &std::path::Path, t: &Tensor) {
    let shape: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut w = npyz::WriteOptions::new().default_dtype().shape(&shape).writer(file).begin_nd().unwrap();
    w.extend(t.data().iter().copied()).unwrap();
    w.finish().unwrap();
}

/// The number after `"name": ` in a JSON line printed by the Python helpers.
pub fn json_field(text: &str, name: &str) -> Option<f64> {
    let rest = text.split(&format!("\"{name}\": ")).nth(1)?;
    rest.split([',', '}']).next()?.trim().parse().ok()
}

pub fn ort(model: &str, input: &std::path::Path, seconds: f64) -> Result<(f64, f64), String> {
    let out = std::process::Command::new("python3")
        .args(["tools/bench_ort.py", model, input.to_str().unwrap(), "--seconds", &seconds.to_string()])
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| json_field(&text, name);
    match (field("median_ms"), field("p95_ms")) {
        (Some(m), Some(p)) => Ok((m, p)),
        _ => Err(format!("ORT failed: {}", String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or(""))),
    }
}

/// PyTorch eager on CUDA (and the CUDA-graph GPU time at batch 1) for the synthetic models.
pub fn torch(model: &str, input: &std::path::Path, seconds: f64) -> Result<((f64, f64), Option<f64>), String> {
    let which = if model.contains("cifar") { "cifar" } else if model.contains("imagenet") { "imagenet" } else { return Err("not a torchvision model".into()) };
    let out = std::process::Command::new("python3")
        .args(["tools/bench_torch.py", which, input.to_str().unwrap(), "--seconds", &seconds.to_string()])
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| json_field(&text, name);
    match (field("eager_median_ms"), field("eager_p95_ms")) {
        (Some(m), Some(p)) => Ok(((m, p), field("graph_gpu_median_ms"))),
        _ => Err(format!("PyTorch unavailable: {}", text.trim().lines().last().unwrap_or("").chars().take(60).collect::<String>())),
    }
}

pub fn ratio(ours: &Result<(f64, f64), String>, torch: &Result<((f64, f64), Option<f64>), String>) -> String {
    match (ours, torch) {
        (Ok((ours, _)), Ok(((eager, _), _))) => format!("{:.2}x", ours / eager),
        _ => "-".into(),
    }
}

/// tract (CPU) on the same input, optimised for its shape.
#[cfg(feature = "bench-tract")]
pub fn tract(path: &str, x: &Tensor, seconds: f64) -> Result<(f64, f64), String> {
    use tract_onnx::prelude::{tvec, Datum, Framework, InferenceFact, InferenceModelExt};
    let e = |e: tract_onnx::prelude::TractError| e.to_string();
    let model = tract_onnx::onnx()
        .model_for_path(path)
        .map_err(e)?
        .with_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), x.shape()))
        .map_err(e)?
        .into_optimized()
        .map_err(e)?
        .into_runnable()
        .map_err(e)?;
    let input: tract_onnx::prelude::Tensor =
        tract_onnx::prelude::tract_ndarray::ArrayD::from_shape_vec(x.shape(), x.data().to_vec()).map_err(|e| e.to_string())?.into();
    time_it(seconds, || model.run(tvec!(input.clone().into())).map(|_| ()).map_err(e))
}

#[cfg(not(feature = "bench-tract"))]
pub fn tract(_path: &str, _x: &Tensor, _seconds: f64) -> Result<(f64, f64), String> {
    Err("build with --features bench-tract".into())
}

