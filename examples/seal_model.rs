//! Seals a model file for shipping: encrypts and authenticates it under a key (a fresh one,
//! printed, unless `--key` gives one), so that only a game given that key
//! (`P2pInferencePlugin::model_key`) can load it.
//!
//! ```text
//! cargo run --example seal_model -- assets/models/fashion_mobilenetv2.onnx fashion.onnx.sealed
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use bevy_p2p_inference::model::seal_model;
use bevy_p2p_inference::secret::SecretKey;
use clap::Parser;

/// Command-line arguments.
#[derive(Parser)]
#[command(about = "Seals an ONNX model with XChaCha20-Poly1305")]
struct Args {
    /// The model file.
    input: PathBuf,
    /// Where the sealed file goes (name it `*.onnx.sealed`).
    output: PathBuf,
    /// The key, as 64 hex digits; a fresh one is made and printed without it.
    #[arg(long)]
    key: Option<String>,
}

fn run(args: &Args) -> Result<(), String> {
    let key = match &args.key {
        Some(hex) => SecretKey::from_hex(hex).map_err(|e| format!("--key: {e}"))?,
        None => {
            let key = SecretKey::generate().map_err(|e| e.to_string())?;
            println!("{}", key.to_hex().as_str());
            key
        }
    };
    let model = std::fs::read(&args.input).map_err(|e| format!("{}: {e}", args.input.display()))?;
    let sealed = seal_model(&model, &key).map_err(|e| e.to_string())?;
    std::fs::write(&args.output, sealed).map_err(|e| format!("{}: {e}", args.output.display()))
}

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
