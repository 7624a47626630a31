//! Prints a fresh room key: 256 random bits as 64 hex digits, to pass to every player of a
//! room (`peer --key`, the web page's `?key=`) and to no one else. With `--owner`, prints a
//! fresh room owner's key pair instead: the secret (64 hex digits) for the owner's `peer
//! --owner-key` alone, then the public key for every member's `peer --owner`.
//!
//! ```text
//! cargo run --example room_key
//! cargo run --example room_key -- --owner
//! ```

use std::process::ExitCode;

use bevy_p2p_inference::net::{OwnerKey, RoomKey};
use clap::Parser;

/// Command-line arguments.
#[derive(Parser)]
#[command(about = "Prints a fresh room key, or a room owner's key pair")]
struct Args {
    /// Print an owner's secret and public key (one per line) instead of a room key.
    #[arg(long)]
    owner: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let printed = if args.owner {
        OwnerKey::generate().map(|owner| {
            println!("{}", owner.to_secret().to_hex().as_str());
            println!("{}", owner.public().to_hex());
        }).map_err(|e| e.to_string())
    } else {
        RoomKey::generate().map(|key| println!("{}", key.to_hex().as_str())).map_err(|e| e.to_string())
    };
    match printed {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
