//! The run configuration of a comparison — KV cache types, flash attention, micro-batch size,
//! threads: how the model is *run*, as opposed to what it *is* (its hyper-parameters, which
//! [`crate::config_gate`] checks). `crossval-per-token` and `crossval-suite` set it up the
//! same way, through this module:
//! 1. [`resolve`] — the user's choice becomes one [`RunConfig`] for the engine's model, under
//!    the rules of the model's reference (a combination it refuses is a usage error, exit 2),
//!    and the engine's fresh [`State`] in it;
//! 2. the reference process is started with that same [`RunConfig`];
//! 3. [`check`] — the reference must report exactly the engine's resolution (`auto` flash
//!    attention decided, micro-batch size, threads), or the two sides would compute different
//!    things: a runtime error (exit 3). What both run is the [`RunConfiguration`] stated in
//!    the report, the JSON document and the receipt.

use bitnet_cpp::{EffectiveConfig, RunConfig, Session};
use bitnet_inference::{Model, RunChoice, State};

use crate::receipt::RunConfiguration;

/// The configuration `choice` means for `model` run with `threads` threads (0 = all), and the
/// engine's fresh state in it.
///
/// # Errors
/// The reason, as a usage message, for a combination the model's reference refuses (or the
/// engine does not reproduce).
pub fn resolve(
    model: &Model,
    choice: &RunChoice,
    threads: u32,
) -> Result<(RunConfig, State), String> {
    let run = choice.config_for(model.numerics(), threads);
    let state = model.new_state_with(&run).map_err(|e| e.to_string())?;
    Ok((run, state))
}

/// The run configuration both sides run, once the reference `cpp` (started with the same
/// [`RunConfig`] as `engine`'s state) has resolved it exactly as the engine did.
///
/// # Errors
/// What differs (or that the reference did not say), as a runtime message.
pub fn check(engine: EffectiveConfig, cpp: &Session) -> Result<RunConfiguration, String> {
    let effective = compare(engine, cpp.effective_config())?;
    Ok(RunConfiguration {
        effective,
        n_batch: cpp.n_batch(),
    })
}

/// The engine's and the reference's resolutions of one request must be equal.
fn compare(
    engine: EffectiveConfig,
    reference: Option<EffectiveConfig>,
) -> Result<EffectiveConfig, String> {
    match reference {
        None => Err("the C++ reference did not report its run configuration".into()),
        Some(theirs) if theirs != engine => Err(format!(
            "run configuration mismatch: the C++ reference runs {theirs}, the engine {engine}; both were given the same request, so one of them resolves it wrongly (report this)"
        )),
        Some(theirs) => Ok(theirs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_difference_in_the_resolution_is_refused() {
        use bitnet_cpp::CacheType;
        let ours = EffectiveConfig {
            cache_type_k: CacheType::F16,
            cache_type_v: CacheType::F16,
            flash_attn: true,
            n_ubatch: 512,
            threads: 2,
        };
        assert_eq!(compare(ours, Some(ours)), Ok(ours));
        let no_flash = EffectiveConfig {
            flash_attn: false,
            ..ours
        };
        let e = compare(ours, Some(no_flash)).unwrap_err();
        assert!(
            e.contains("flash attention off") && e.contains("flash attention on"),
            "{e}"
        );
        let threads = EffectiveConfig { threads: 3, ..ours };
        assert!(compare(ours, Some(threads)).is_err());
        assert!(compare(ours, None).is_err());
    }
}
