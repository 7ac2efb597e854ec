//! The measurements, one module per phase (numbers as in e2e/BENCHMARKS.md).

pub mod admission;
pub mod ceiling;
pub mod issuance;
pub mod steady;
