//! Passes the per-architecture linker script to the kernel binary.
fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    let arch = if target.starts_with("x86_64") {
        "x86_64"
    } else if target.starts_with("aarch64") {
        "aarch64"
    } else {
        return;
    };
    if !target.ends_with("-none") {
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("boot").join(arch).join("linker.ld");
    let script = script.canonicalize().expect("linker script");
    println!("cargo:rustc-link-arg-bins=-T{}", script.display());
    println!("cargo:rerun-if-changed={}", script.display());
}
