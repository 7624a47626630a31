//! Proposes a partition plan: cuts for N stages that balance FLOPs and keep the bytes crossing
//! each cut small, printed as a table and written as RON.
//!
//! ```text
//! cargo run --example plan -- --stages 3 --dtype int8 --output assets/plans/fashion_3_int8.plan.ron
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use bevy_p2p_inference::model::plan::{propose_plan, stage_costs};
use bevy_p2p_inference::tensor::TransferDtype;
use bevy_p2p_inference::model::import_onnx;
use clap::{Parser, ValueEnum};

/// Transfer dtype of every cut.
#[derive(Clone, Copy, ValueEnum)]
enum Dtype {
    F32,
    F16,
    Int8,
}

/// Command-line arguments.
#[derive(Parser)]
#[command(about = "Propose a partition plan for an ONNX model")]
struct Args {
    /// The ONNX model.
    #[arg(long, default_value = "assets/models/fashion_mobilenetv2.onnx")]
    model: PathBuf,
    /// Number of stages.
    #[arg(long, default_value_t = 3)]
    stages: usize,
    /// Transfer dtype of the cuts.
    #[arg(long, value_enum, default_value = "int8")]
    dtype: Dtype,
    /// Batch size used to size the cuts.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Write the plan here (otherwise to stdout).
    #[arg(long)]
    output: Option<PathBuf>,
}

fn run(args: Args) -> Result<(), String> {
    let bytes = std::fs::read(&args.model).map_err(|e| format!("cannot read {}: {e}", args.model.display()))?;
    let graph = import_onnx(&bytes).map_err(|e| format!("{}: {e}", args.model.display()))?;
    let mut input: Vec<usize> = graph.input.dims.iter().map(|d| d.unwrap_or(1)).collect();
    if let Some(batch) = input.first_mut() {
        *batch = args.batch;
    }
    let dtype = match args.dtype {
        Dtype::F32 => TransferDtype::F32,
        Dtype::F16 => TransferDtype::F16,
        Dtype::Int8 => TransferDtype::Int8,
    };
    let plan = propose_plan(&graph, &input, args.stages, dtype).map_err(|e| e.to_string())?;
    let validated = plan.validate(&graph).map_err(|e| e.to_string())?;
    let costs = stage_costs(&graph, &validated, &input).map_err(|e| e.to_string())?;
    eprintln!("{:>5} {:>6} {:>12} {:>13} {:>14} {:>15}  first .. last", "stage", "nodes", "MFLOPs", "weight bytes", "cut bytes f32", "cut bytes int8");
    for ((s, stage), cost) in validated.stages.iter().enumerate().zip(&costs) {
        eprintln!(
            "{s:>5} {:>6} {:>12.3} {:>13} {:>14} {:>15}  {} .. {}",
            stage.nodes.clone().count(),
            cost.flops as f64 / 1e6,
            cost.weight_bytes,
            cost.cut_bytes_f32,
            cost.cut_bytes_int8,
            plan.stages[s].first,
            plan.stages[s].last
        );
    }
    let text = plan.to_ron();
    match args.output {
        Some(path) => std::fs::write(&path, text + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))?,
        None => println!("{text}"),
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
