//! Compiles `proto/` into the client crate's gRPC code with `protox`, a pure-Rust
//! protobuf compiler, so that building the client never needs a system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto");
    let files = [
        "../proto/herald/v1/common.proto",
        "../proto/herald/v1/subscriptions.proto",
        "../proto/herald/v1/events.proto",
        "../proto/herald/v1/streams.proto",
        "../proto/herald/v1/admin.proto",
    ];
    let descriptors = protox::compile(files, ["../proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(descriptors)?;
    Ok(())
}
