//! Admission webhook: pod annotations, the name policy and the pure pod mutation.
pub mod annotations;
pub mod mutate;
pub mod policy;
