//! Compiles `proto/` into the server's gRPC code with `protox`, a pure-Rust
//! protobuf compiler, so that building Herald never needs a system `protoc`.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files = [
        "proto/herald/v1/common.proto",
        "proto/herald/v1/subscriptions.proto",
        "proto/herald/v1/events.proto",
        "proto/herald/v1/streams.proto",
        "proto/herald/v1/admin.proto",
    ];
    let descriptors = protox::compile(files, ["proto"])?;
    // `compile_fds` ignores `file_descriptor_set_path`, so the set that server
    // reflection serves is written out by hand.
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("herald_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
