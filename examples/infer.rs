//! Runs any ONNX model built from the supported ops on a float32 `.npy` input, on the GPU
//! inside a headless Bevy app, and writes the float32 output as `.npy`.
//!
//! ```text
//! cargo run --release --example infer -- --model M.onnx --input X.npy --output Y.npy [--repeat N]
//!     [--gpu-per-frame-ms B]   # run each request across frames, at most B ms of GPU time per frame
//! cargo run --release --example infer -- --check M.onnx   # does it import and compile? which ops?
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bevy::prelude::*;
use bevy_p2p_inference::gpu::compile;
use bevy_p2p_inference::model::{external_data_locations, ExternalFiles};
use bevy_p2p_inference::prelude::*;
use bevy_p2p_inference::{headless_plugins, update_until_prediction};
use clap::Parser;
use npyz::WriterBuilder;

/// Command-line arguments.
#[derive(Parser)]
#[command(about = "Run an ONNX model on a .npy input on the GPU")]
struct Args {
    /// Only check that this model imports and compiles for its declared input shape (batch 1
    /// where it is symbolic), and list its operators; no GPU is used.
    #[arg(long, value_name = "MODEL", conflicts_with_all = ["model", "input", "output"])]
    check: Option<PathBuf>,
    /// The ONNX model.
    #[arg(long, required_unless_present = "check")]
    model: Option<PathBuf>,
    /// A float32 .npy input (first dimension is the batch).
    #[arg(long, required_unless_present = "check")]
    input: Option<PathBuf>,
    /// Where to write the float32 .npy output.
    #[arg(long, required_unless_present = "check")]
    output: Option<PathBuf>,
    /// Also run N more times and print latency (median, p95) to stderr.
    #[arg(long, default_value_t = 0)]
    repeat: usize,
    /// Run each request across frames in layer slices of at most this much GPU time
    /// (`SliceAcrossFrames`), and print the GPU time each frame spent on it.
    #[arg(long, value_name = "MS")]
    gpu_per_frame_ms: Option<f64>,
}

fn read_input(path: &PathBuf) -> Result<Tensor, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let npy = npyz::NpyFile::new(&bytes[..]).map_err(|e| format!("{} is not a .npy file: {e}", path.display()))?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    if npy.order() != npyz::Order::C {
        return Err(format!("{}: only C-order arrays are supported", path.display()));
    }
    let data = npy.into_vec::<f32>().map_err(|e| format!("{}: expected float32 data: {e}", path.display()))?;
    Tensor::new(shape, data).map_err(|e| e.to_string())
}

fn write_output(path: &PathBuf, tensor: &Tensor) -> Result<(), String> {
    let file = std::fs::File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let shape: Vec<u64> = tensor.shape().iter().map(|&d| d as u64).collect();
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(std::io::BufWriter::new(file))
        .begin_nd()
        .map_err(|e| e.to_string())?;
    writer.extend(tensor.data().iter().copied()).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())
}

/// Imports `path`, compiles it for its declared input shape and prints what it is made of.
/// Reads an ONNX file and the external data files beside it that it names.
fn read_model(path: &PathBuf) -> Result<Model, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let folder = path.parent().unwrap_or(std::path::Path::new("."));
    let mut files = ExternalFiles::new();
    for location in external_data_locations(&bytes).map_err(|e| format!("{}: {e}", path.display()))? {
        let file = folder.join(&location);
        let data = std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        files.insert(location, data);
    }
    Model::from_onnx_files(&bytes, files).map_err(|e| format!("{}: {e}", path.display()))
}

fn check(path: &PathBuf) -> Result<(), String> {
    let model = read_model(path)?;
    let graph = model.graph();
    let shape: Vec<usize> = graph.input.dims.iter().map(|d| d.unwrap_or(1)).collect();
    let program = compile(graph, &shape).map_err(|e| format!("{}: imports, but does not compile for input {shape:?}: {e}", path.display()))?;
    let mut ops: BTreeMap<String, usize> = BTreeMap::new();
    for node in &graph.nodes {
        let name = format!("{:?}", node.op);
        *ops.entry(name.split(['(', ' ', '{']).next().unwrap_or_default().to_string()).or_default() += 1;
    }
    let ops: Vec<String> = ops.into_iter().map(|(op, n)| format!("{op} x{n}")).collect();
    println!(
        "{}: ok, input {shape:?} -> output {:?}, {} nodes after folding ({}), {} GPU dispatches",
        path.display(),
        program.output_shape,
        graph.nodes.len(),
        ops.join(", "),
        program.dispatches.len()
    );
    Ok(())
}

fn run(args: Args) -> Result<(), String> {
    if let Some(path) = &args.check {
        return check(path);
    }
    let (Some(model_path), Some(input_path), Some(output_path)) = (&args.model, &args.input, &args.output) else {
        return Err("--model, --input and --output are needed (or --check MODEL)".into());
    };
    let model = read_model(model_path)?;
    let input = read_input(input_path)?;

    let mut app = App::new();
    app.add_plugins((headless_plugins().set(bevy::log::LogPlugin { level: bevy::log::Level::ERROR, ..default() }), P2pInferencePlugin::default()));
    app.finish();
    app.cleanup();
    let handle = app.world_mut().resource_mut::<Assets<Model>>().add(model);
    let timeout = Duration::from_secs(600);
    let mut latencies = Vec::new();
    // Per run: the most GPU time one frame spent on it, and the frames it was spread over.
    let mut per_frame = Vec::new();
    let mut output = None;
    for _ in 0..=args.repeat {
        let request = InferenceRequest::new(handle.clone(), input.clone());
        let entity = match args.gpu_per_frame_ms {
            Some(ms) => app.world_mut().spawn((request, SliceAcrossFrames { gpu_per_frame: Duration::from_secs_f64(ms / 1e3) })).id(),
            None => app.world_mut().spawn(request).id(),
        };
        let (prediction, _) = update_until_prediction(&mut app, entity, timeout).map_err(|e| e.to_string())?;
        latencies.push(prediction.latency);
        per_frame.push(match prediction.slices.as_slice() {
            [] => (prediction.gpu, 1),
            slices => (slices.iter().filter_map(|s| s.gpu).max(), slices.len()),
        });
        output = Some(prediction.output);
        app.world_mut().despawn(entity);
    }
    write_output(output_path, output.as_ref().expect("ran at least once"))?;
    if args.repeat > 0 {
        // The first run compiles the pipelines and uploads the weights: leave it out.
        let mut timed: Vec<Duration> = latencies[1..].to_vec();
        timed.sort();
        let pick = |q: f64| timed[((timed.len() - 1) as f64 * q).round() as usize];
        eprintln!(
            "latency over {} runs: median {:.3} ms, p95 {:.3} ms (first run {:.3} ms)",
            timed.len(),
            pick(0.5).as_secs_f64() * 1e3,
            pick(0.95).as_secs_f64() * 1e3,
            latencies[0].as_secs_f64() * 1e3
        );
        let mut gpu: Vec<Duration> = per_frame[1..].iter().filter_map(|(gpu, _)| *gpu).collect();
        gpu.sort();
        let frames: Vec<usize> = per_frame[1..].iter().map(|(_, frames)| *frames).collect();
        if let (Some(median), Some(max)) = (gpu.get(gpu.len() / 2), gpu.last()) {
            eprintln!(
                "GPU time per frame: median {:.3} ms, max {:.3} ms; frames per request {}..{} (first run {})",
                median.as_secs_f64() * 1e3,
                max.as_secs_f64() * 1e3,
                frames.iter().min().unwrap_or(&1),
                frames.iter().max().unwrap_or(&1),
                per_frame[0].1
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    // Without a desktop session, Mesa's Vulkan device-selection layer only looks for a Wayland
    // display and prints two "XDG_RUNTIME_DIR is invalid" errors: it is turned off there. Set
    // before any thread starts.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: the first thing main does, while this is the only thread.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
