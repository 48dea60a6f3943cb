//! Generates the Rust types of `proto/kv.proto`.
//!
//! protox (a protobuf compiler written in Rust) parses the schema into a
//! `FileDescriptorSet`, and prost-build generates code from it, so a fresh
//! machine builds with cargo alone: no system `protoc`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_dir = manifest_dir.join("../../proto");
    let proto_file = proto_dir.join("kv.proto");
    println!("cargo:rerun-if-changed={}", proto_file.display());

    let fds = protox::compile([&proto_file], [&proto_dir])?;
    prost_build::Config::new()
        // Every `bytes` field becomes `bytes::Bytes`: decoding a frame then
        // slices keys and values out of the received buffer without copying.
        .bytes(["."])
        // An auth token must not reach a log through `{:?}`: its Debug is
        // written by hand (lib.rs) and leaves the token out.
        .skip_debug(["kv.v1.AuthRequest"])
        .compile_fds(fds)?;
    Ok(())
}
