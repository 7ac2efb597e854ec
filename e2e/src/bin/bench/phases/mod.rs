//! The measurements, one module per phase (numbered as in e2e/BENCHMARKS.md). A phase records
//! what it measured in the report; a phase that fails records its error and the run goes on.

pub mod admission;
pub mod ceiling;
pub mod issuance;
pub mod node;
pub mod selector;
pub mod steady;

use crate::Phase;
use crate::ctx::Ctx;
use crate::report::Report;
use crate::systems::Systems;

pub async fn run(phase: Phase, ctx: &Ctx, systems: &Systems, report: &mut Report) {
    match phase {
        Phase::Ceiling => ceiling::run(ctx, report).await,
        Phase::Issuance => issuance::run(ctx, systems, report).await,
        Phase::Steady => steady::run(ctx, systems, report).await,
        Phase::Admission => admission::run(ctx, &systems.step_operator, report).await,
        Phase::Selector => selector::run(ctx, &systems.step_operator, report).await,
        Phase::Node => node::run(ctx, report).await,
    }
}
