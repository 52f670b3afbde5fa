//! The run-configuration flags of every command that runs a model (`bitnet run`, `xtask
//! crossval-per-token`, `xtask bench`), named as llama.cpp names them: `-ctk/--cache-type-k`,
//! `-ctv/--cache-type-v`, `-fa/--flash-attn on|off|auto`, `-ub/--ubatch-size`, and the
//! `--exact-reference` preset. Without flags a model runs as its reference runs by default
//! (llama.cpp: F16 K and V caches, flash attention `auto`, on for the CPU; bitnet.cpp: F16
//! caches, no flash attention), so `bitnet run --temp 0` prints what `llama-completion --temp 0`
//! prints.

use std::ffi::OsString;

use bitnet_inference::{CacheType, FlashAttn, RunChoice};

/// The run-configuration flags (flatten into a command's arguments).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunConfigArgs {
    /// K cache type: f32, f16, bf16 or q8_0 (llama.cpp's -ctk) [default: the reference's, f16]
    #[arg(long = "cache-type-k", value_name = "TYPE")]
    pub cache_type_k: Option<CacheType>,
    /// V cache type: f32, f16, bf16 or q8_0 (llama.cpp's -ctv; a quantized V cache needs flash
    /// attention) [default: the reference's, f16]
    #[arg(long = "cache-type-v", value_name = "TYPE")]
    pub cache_type_v: Option<CacheType>,
    /// Flash attention: on, off or auto (llama.cpp's -fa; auto is on for llama.cpp's CPU
    /// backend, off for bitnet.cpp, which has no auto) [default: auto]
    #[arg(long = "flash-attn", value_name = "on|off|auto")]
    pub flash_attn: Option<FlashAttn>,
    /// Tokens per micro-batch (llama.cpp's -ub): a prompt is evaluated in slices of this many
    /// tokens [default: 512]
    #[arg(long = "ubatch-size", value_name = "N")]
    pub ubatch_size: Option<u32>,
    /// The reference's exact configuration, for the cleanest numerics: F32 K cache, F32 V cache
    /// (F16 for bitnet.cpp, which allows nothing else without flash attention), flash attention
    /// off
    #[arg(long, conflicts_with_all = ["cache_type_k", "cache_type_v", "flash_attn"])]
    pub exact_reference: bool,
}

impl RunConfigArgs {
    /// The configuration asked for.
    ///
    /// # Errors
    /// A usage message for `--ubatch-size 0`.
    pub fn choice(&self) -> Result<RunChoice, String> {
        if self.ubatch_size == Some(0) {
            return Err("--ubatch-size must be at least 1".into());
        }
        Ok(RunChoice {
            exact: self.exact_reference,
            cache_type_k: self.cache_type_k,
            cache_type_v: self.cache_type_v,
            flash_attn: self.flash_attn,
            n_ubatch: self.ubatch_size,
        })
    }
}

/// llama.cpp's single-dash long flags (`-ctk`, `-ctv`, `-fa`, `-ub`, also as `-ctk=f16`)
/// rewritten to the double-dash names the argument parser reads; everything after `--` is left
/// alone.
pub fn llama_style_flags(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    const ALIASES: [(&str, &str); 4] = [
        ("-ctk", "--cache-type-k"),
        ("-ctv", "--cache-type-v"),
        ("-fa", "--flash-attn"),
        ("-ub", "--ubatch-size"),
    ];
    let mut rest = false;
    args.into_iter()
        .map(|a| {
            if rest {
                return a;
            }
            let Some(s) = a.to_str() else { return a };
            if s == "--" {
                rest = true;
                return a;
            }
            for (short, long) in ALIASES {
                if s == short {
                    return long.into();
                }
                if let Some(value) = s.strip_prefix(short).and_then(|v| v.strip_prefix('=')) {
                    return format!("{long}={value}").into();
                }
            }
            a
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunConfigArgs,
        #[arg(last = true)]
        rest: Vec<String>,
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let argv = std::iter::once("x")
            .chain(args.iter().copied())
            .map(OsString::from);
        Cli::try_parse_from(llama_style_flags(argv))
    }

    #[test]
    fn llama_cpp_names_parse() {
        let c = parse(&["-ctk", "q8_0", "-ctv=bf16", "-fa", "off", "-ub", "64"]).unwrap();
        assert_eq!(c.run.cache_type_k, Some(CacheType::Q8_0));
        assert_eq!(c.run.cache_type_v, Some(CacheType::Bf16));
        assert_eq!(c.run.flash_attn, Some(FlashAttn::Off));
        assert_eq!(c.run.choice().unwrap().n_ubatch, Some(64));
        let c = parse(&["--cache-type-k", "f32", "--flash-attn", "auto", "--", "-fa"]).unwrap();
        assert_eq!(c.run.flash_attn, Some(FlashAttn::Auto));
        assert_eq!(c.rest, vec!["-fa".to_string()]);
    }

    #[test]
    fn bad_values_and_conflicts_are_usage_errors() {
        assert!(parse(&["-ctk", "q4_0"]).is_err());
        assert!(parse(&["-fa", "maybe"]).is_err());
        assert!(parse(&["--exact-reference", "-fa", "on"]).is_err());
        let c = parse(&["-ub", "0"]).unwrap();
        assert!(c.run.choice().is_err());
        assert!(
            parse(&["--exact-reference"])
                .unwrap()
                .run
                .choice()
                .unwrap()
                .exact
        );
    }
}
