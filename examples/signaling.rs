//! A local matchbox signaling server (full mesh) for the `peer` example and the tests.
//!
//! ```text
//! cargo run --example signaling -- --port 3536
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use clap::Parser;
use matchbox_signaling::SignalingServer;

/// Command-line arguments.
#[derive(Parser)]
#[command(about = "Run a matchbox signaling server (on 127.0.0.1 unless --host says otherwise)")]
struct Args {
    /// TCP port.
    #[arg(long, default_value_t = 3536)]
    port: u16,
    /// The address to listen on (0.0.0.0 for players on other hosts or namespaces).
    #[arg(long, default_value_t = Ipv4Addr::LOCALHOST)]
    host: Ipv4Addr,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let address = SocketAddr::from((args.host, args.port));
    let mut server = SignalingServer::full_mesh_builder(address).build();
    match server.bind() {
        Ok(bound) => println!("signaling on ws://{bound}"),
        Err(error) => {
            eprintln!("error: cannot bind {address}: {error}");
            return ExitCode::FAILURE;
        }
    }
    match server.serve().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: signaling server stopped: {error}");
            ExitCode::FAILURE
        }
    }
}
