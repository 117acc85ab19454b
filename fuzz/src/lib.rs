//! The bodies of the fuzz targets, shared by the cargo-fuzz binaries in `fuzz_targets/` and by
//! the corpus replay in `tests/corpus.rs` (which runs on stable, so a crash once found stays
//! fixed). Each body checks invariants, not just the absence of panics.

pub mod frame;
pub mod netconsole;
pub mod netoops;
pub mod receiver;
