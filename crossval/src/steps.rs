//! Greedy steps after the prompt, teacher-forced: at every step each side picks its arg-max,
//! and both continue from the *reference's* pick, so step k always compares the two sides on
//! the same prefix. Free-running steps would compare different prefixes after the first
//! disagreement, and every later difference would be an echo of that one; here each step's
//! logits are compared on their own, and the first step where the picks differ is named with
//! its label ([`crate::verdict`]).

use bitnet_cpp::Session;
use bitnet_inference::{ops::argmax, Model, State};

use crate::logits_compare::{compare_position, PositionMetrics};
use crate::receipt::DecodeStep;

/// One step: what each side picked from the same prefix, and how their logits compare.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The picks (and the label).
    pub decode: DecodeStep,
    /// The logits the picks came from, compared (position = the prefix's last position).
    pub metrics: PositionMetrics,
}

/// Run `n` teacher-forced steps. `rust_row` and `cpp_row` are the logits after the prompt
/// (position `last`); `state` and `cpp` hold the prompt.
///
/// # Errors
/// A message naming the side that failed.
#[allow(clippy::too_many_arguments)]
pub fn teacher_forced(
    model: &Model,
    state: &mut State,
    cpp: &mut Session,
    mut rust_row: Vec<f32>,
    mut cpp_row: Vec<f32>,
    last: usize,
    n: usize,
    cos_tol: f64,
) -> Result<Vec<Step>, String> {
    let mut steps = Vec::with_capacity(n);
    for step in 0..n {
        let metrics = compare_position(last + step, &rust_row, &cpp_row, cos_tol)
            .map_err(|e| e.to_string())?;
        let (rust_token, cpp_token) = (argmax(&rust_row), argmax(&cpp_row));
        steps.push(Step {
            decode: DecodeStep {
                step,
                rust_token,
                cpp_token,
                matched: rust_token == cpp_token,
                fed_token: cpp_token,
                label: metrics.label,
            },
            metrics,
        });
        if step + 1 == n {
            break;
        }
        rust_row = model
            .forward(state, &[cpp_token])
            .map_err(|e| format!("Rust engine: {e}"))?;
        cpp_row = cpp
            .decode_next(cpp_token as i32)
            .map_err(|e| e.to_string())?;
    }
    Ok(steps)
}

/// The first step whose picks differ.
pub fn first_differing(steps: &[Step]) -> Option<&Step> {
    steps.iter().find(|s| !s.decode.matched)
}
