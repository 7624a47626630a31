//! Prints a fresh room key: 256 random bits as 64 hex digits, to pass to every player of a
//! room (`peer --key`, the web page's `?key=`) and to no one else.
//!
//! ```text
//! cargo run --example room_key
//! ```

use std::process::ExitCode;

use bevy_p2p_inference::net::RoomKey;

fn main() -> ExitCode {
    match RoomKey::generate() {
        Ok(key) => {
            println!("{}", key.to_hex().as_str());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
