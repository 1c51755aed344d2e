//! Compiles this crate with `--cfg percore_loom`, which switches the engine's `sync` shim
//! (included below through `#[path]`) from std to loom. Only this crate sees the cfg; the
//! engine itself is never built with it.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(percore_loom)");
    println!("cargo::rustc-cfg=percore_loom");
    println!("cargo::rerun-if-changed=build.rs");
}
