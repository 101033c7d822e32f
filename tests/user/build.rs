//! Links the user programs as static, non-PIE ELF executables at 0x400000
//! with `user.ld`, for the bare-metal targets (the same files run on Linux).
fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("user.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    if !target.ends_with("-none") {
        return;
    }
    println!("cargo:rustc-link-arg-bins=-T{}", script.display());
    println!("cargo:rustc-link-arg-bins=-static");
    println!("cargo:rustc-link-arg-bins=--no-pie");
    println!("cargo:rustc-link-arg-bins=-zmax-page-size=4096");
    println!("cargo:rustc-link-arg-bins=--build-id=none");
}
