//! A comparison session: our engine and a C++ reference, each with its model loaded once, kept
//! across any number of prompts or windows.
//!
//! Loading is what a suite must not pay per item: the engine maps its model once, the
//! reference process loads its copy once, and every item then costs only its evaluation. The
//! two sides evaluate **at the same time** — the request goes to the reference process, the
//! engine runs while it computes, then the answer is read — so an item takes as long as the
//! slower side, not the sum of both.
//!
//! The session knows nothing about prompts, templates or statistics; callers
//! ([`crate::suite`]) tokenize, gate and compare. It only evaluates the same token ids on both
//! sides from empty caches ([`ComparisonSession::eval_both`]) and extends both by one token
//! ([`ComparisonSession::step_both`]).

use std::path::{Path, PathBuf};

use bitnet_cpp::{BackendChoice, CppError, Logits, Session, SessionOptions};
use bitnet_inference::{Eval, InferenceError, Model, Outputs, State};

/// Which side failed, and why.
#[derive(Debug, thiserror::Error)]
pub enum SideError {
    /// Our engine refused the request.
    #[error("Rust engine: {0}")]
    Rust(#[from] InferenceError),
    /// The reference failed (it may have died: see [`SideError::reference_is_gone`]).
    #[error(transparent)]
    Cpp(#[from] CppError),
}

impl SideError {
    /// Whether the reference process is gone (crashed, killed, hung), so that the session
    /// needs [`ComparisonSession::restart_reference`] before it can serve another item.
    pub fn reference_is_gone(&self) -> bool {
        matches!(
            self,
            SideError::Cpp(CppError::Died { .. } | CppError::Timeout { .. })
        )
    }
}

/// Both sides of a comparison, loaded.
pub struct ComparisonSession {
    model: Model,
    state: State,
    cpp: Session,
    cpp_model: PathBuf,
    backend: BackendChoice,
    options: SessionOptions,
}

impl ComparisonSession {
    /// Start the reference on `cpp_model` with `options` next to the already loaded `model`,
    /// whose `state` runs the same run configuration as `options.run`
    /// ([`crate::run_configuration::resolve`]; check what the reference resolved with
    /// [`crate::run_configuration::check`]).
    ///
    /// # Errors
    /// Any [`CppError`] from starting the reference and loading its model.
    pub fn open(
        model: Model,
        state: State,
        cpp_model: &Path,
        backend: BackendChoice,
        options: SessionOptions,
    ) -> Result<Self, CppError> {
        let cpp = Session::open(cpp_model, backend, &options)?;
        Ok(ComparisonSession {
            model,
            state,
            cpp,
            cpp_model: cpp_model.to_path_buf(),
            backend,
            options,
        })
    }

    /// Our engine's model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The reference session, for what only it answers (tokenization, pieces, build facts).
    pub fn reference(&mut self) -> &mut Session {
        &mut self.cpp
    }

    /// The engine's state (its run configuration: [`State::run_config`]).
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Replace a reference process that died by a fresh one on the same model.
    ///
    /// # Errors
    /// As [`ComparisonSession::open`].
    pub fn restart_reference(&mut self) -> Result<(), CppError> {
        self.cpp = Session::open(&self.cpp_model, self.backend, &self.options)?;
        Ok(())
    }

    /// Evaluate `tokens` on both sides from empty caches, both at once, returning the logits
    /// of the positions `outputs` (ascending indices into `tokens`; `None`: every position):
    /// ours row-major, then the reference's.
    ///
    /// # Errors
    /// [`SideError`] from whichever side failed (ours first when both did).
    pub fn eval_both(
        &mut self,
        tokens: &[u32],
        outputs: Option<&[usize]>,
    ) -> Result<(Vec<f32>, Logits), SideError> {
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        let flagged: Option<Vec<u32>> =
            outputs.map(|o| o.iter().map(|&p| p as u32).collect::<Vec<_>>());
        let request = Eval::new(tokens).outputs(match outputs {
            Some(o) => Outputs::Positions(o.to_vec()),
            None => Outputs::All,
        });
        let (model, state, cpp) = (&self.model, &mut self.state, &mut self.cpp);
        state.reset();
        let (ours, theirs) = std::thread::scope(|scope| {
            let reference = scope.spawn(move || match &flagged {
                Some(o) => cpp.eval_outputs(&ids, o),
                None => cpp.eval(&ids),
            });
            let ours = model.eval(state, request);
            (ours, join(reference))
        });
        Ok((ours?, theirs?))
    }

    /// Evaluate one more token after the previous ones on both sides, both at once: each
    /// side's logits for it.
    ///
    /// # Errors
    /// As [`ComparisonSession::eval_both`].
    pub fn step_both(&mut self, token: u32) -> Result<(Vec<f32>, Vec<f32>), SideError> {
        let (model, state, cpp) = (&self.model, &mut self.state, &mut self.cpp);
        let (ours, theirs) = std::thread::scope(|scope| {
            let reference = scope.spawn(move || cpp.decode_next(token as i32));
            let ours = model.forward(state, &[token]);
            (ours, join(reference))
        });
        Ok((ours?, theirs?))
    }
}

/// The result of a scoped thread; a panic in it is re-raised here (it is a bug, not an error
/// of either side).
fn join<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    match handle.join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
