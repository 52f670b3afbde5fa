//! The logic behind `cargo run -p xtask -- <task>`, kept in a library so tests can call it.

pub mod bench;
pub mod crossval;
pub mod fixtures;
pub mod gen_mini;
pub mod progress;
pub mod quantize;
pub mod suite;

/// Exit code for a failed task (DESIGN.md): usage problems are 2, everything else is a
/// runtime error, 3. A bare `Err` from `main` would exit 1, which means "diverged".
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<UsageError>().is_some() {
        2
    } else {
        3
    }
}

/// An error in what the user asked for (bad flag combination, invalid value): exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
