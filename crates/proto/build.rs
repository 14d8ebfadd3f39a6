//! Compiles `vane/v1/sidecar.proto`: messages always (the wasm filter needs only those),
//! tonic client and server stubs when the `grpc` feature is on (the native sidecar).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    // The vendored protoc: no system install needed. Build scripts are single-threaded here.
    unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    tonic_build::configure()
        .build_client(grpc)
        .build_server(grpc)
        .compile_protos(&["vane/v1/sidecar.proto"], &["."])?;
    println!("cargo:rerun-if-changed=vane/v1/sidecar.proto");
    Ok(())
}
