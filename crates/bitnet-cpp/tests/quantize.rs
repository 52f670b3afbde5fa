//! llama.cpp's quantizer through the llama.cpp reference, for real: every accepted file type
//! on generated f32 models gives the tensor mix `llama-quant.cpp`'s rules choose (checked
//! against an independent reading of those rules, `common/mix.rs`), fallbacks are reported,
//! and every refusal is a typed error that leaves no file behind.

#[path = "common/mix.rs"]
mod mix;

use std::path::{Path, PathBuf};

use bitnet_cpp::protocol::{QuantizeProgress, QuantizeRequest, WirePath};
use bitnet_cpp::quantize::{self, Ftype, QuantizeError, QuantizeOptions};
use bitnet_cpp::{Backend, CppError, Session, SessionOptions};
use bitnet_gguf::{GgmlType, GgufFile};
use bitnet_minimodel::{Arch, Spec};

/// A generated f32 model whose rows are whole 256-element super-blocks, as the project's
/// test models are: 4 layers, so the mixes' "more bits" layers differ from the others.
fn f32_base(dir: &Path, arch: Arch, dim: u64) -> PathBuf {
    let spec = Spec {
        layers: Some(4),
        dim: Some(dim),
        ffn: Some(2 * dim),
        ..Spec::new(arch, GgmlType::F32)
    };
    let out = dir.join(format!("{}-{dim}-f32.gguf", arch.name()));
    bitnet_minimodel::write(&spec, &bitnet_fixtures::vocab("llama-spm"), &out).unwrap();
    out
}

/// Quantize and collect the progress reports.
fn run(
    input: &Path,
    output: &Path,
    ftype: &Ftype,
    allow_requantize: bool,
) -> Result<(bitnet_cpp::protocol::QuantizeReport, Vec<QuantizeProgress>), QuantizeError> {
    let mut progress = Vec::new();
    let opts = QuantizeOptions {
        allow_requantize,
        ..QuantizeOptions::default()
    };
    let report = quantize::quantize(input, output, ftype, &opts, &mut |p| {
        progress.push(p.clone())
    })?;
    Ok((report, progress))
}

fn no_leftovers(dir: &Path) {
    let partial: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial"))
        .collect();
    assert!(partial.is_empty(), "temporary files left: {partial:?}");
}

#[test]
fn every_accepted_type_gives_llama_cpps_mix_on_both_architectures() {
    let dir = tempfile::tempdir().unwrap();
    for arch in [Arch::Llama, Arch::Bitnet] {
        let base = f32_base(dir.path(), arch, 256);
        let input = GgufFile::open(&base).unwrap();
        let mut seen_ids = Vec::new();
        for ftype in Ftype::accepted() {
            // Aliases (Q4_K = Q4_K_M) are the same file type: quantize each id once.
            if seen_ids.contains(&ftype.id) {
                continue;
            }
            seen_ids.push(ftype.id);
            let out = dir
                .path()
                .join(format!("{}-{}.gguf", arch.name(), ftype.name));
            let (report, progress) = run(&base, &out, ftype, false)
                .unwrap_or_else(|e| panic!("{} {}: {e}", arch.name(), ftype.name));
            let output = GgufFile::open(&out).unwrap();
            let counts = mix::assert_mix(ftype.name, &input, &output);
            let n = output.tensors().len();
            // One progress report per tensor, in order, naming what the file holds.
            assert_eq!(report.tensors as usize, n, "{}", ftype.name);
            assert_eq!(progress.len(), n, "{}", ftype.name);
            for (i, (p, t)) in progress.iter().zip(output.tensors()).enumerate() {
                assert_eq!((p.index as usize, p.total as usize), (i + 1, n));
                assert_eq!(
                    (p.tensor.as_str(), p.to.as_str()),
                    (t.name.as_str(), t.ty.name())
                );
                assert_eq!(p.from, "f32");
            }
            assert!(
                report.fallbacks.is_empty(),
                "{}: {:?}",
                ftype.name,
                report.fallbacks
            );
            // Every type the file holds is one the file type is documented to produce.
            for ty in counts.keys() {
                assert!(
                    *ty == GgmlType::F32 || ftype.produces.contains(ty),
                    "{}: {ty} is not in its documented mix",
                    ftype.name
                );
            }
            drop(output);
            std::fs::remove_file(&out).unwrap();
        }
        drop(input);
        std::fs::remove_file(&base).unwrap();
    }
    no_leftovers(dir.path());
}

#[test]
fn ternary_types_give_the_tied_head_q6_k_and_llama_the_untied_one() {
    let dir = tempfile::tempdir().unwrap();
    let bitnet = f32_base(dir.path(), Arch::Bitnet, 256);
    let llama = f32_base(dir.path(), Arch::Llama, 256);
    let type_of = |file: &Path, name: &str| {
        let f = GgufFile::open(file).unwrap();
        f.tensors().iter().find(|t| t.name == name).unwrap().ty
    };
    for name in ["TQ1_0", "TQ2_0"] {
        let ftype = Ftype::find(name).unwrap();
        let out = dir.path().join(format!("b-{name}.gguf"));
        run(&bitnet, &out, ftype, false).unwrap();
        // The bitnet architecture has no output.weight: token_embd is the head → q6_K.
        assert_eq!(type_of(&out, "token_embd.weight"), GgmlType::Q6_K);
        assert_eq!(
            type_of(&out, "blk.0.ffn_down.weight").name(),
            name.to_lowercase()
        );
        let out = dir.path().join(format!("l-{name}.gguf"));
        run(&llama, &out, ftype, false).unwrap();
        // With a separate head, the embedding is q4_K and the head q6_K.
        assert_eq!(type_of(&out, "token_embd.weight"), GgmlType::Q4_K);
        assert_eq!(type_of(&out, "output.weight"), GgmlType::Q6_K);
    }
    // Q4_K_M's more-bits layers of 4: attn_v and ffn_down of layers 2 and 3 are q6_K.
    let out = dir.path().join("l-Q4_K_M.gguf");
    run(&llama, &out, Ftype::find("Q4_K_M").unwrap(), false).unwrap();
    for (l, want) in [
        (0, GgmlType::Q4_K),
        (1, GgmlType::Q4_K),
        (2, GgmlType::Q6_K),
        (3, GgmlType::Q6_K),
    ] {
        assert_eq!(type_of(&out, &format!("blk.{l}.attn_v.weight")), want);
        assert_eq!(type_of(&out, &format!("blk.{l}.ffn_down.weight")), want);
    }
}

#[test]
fn rows_that_are_not_whole_super_blocks_fall_back_and_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    // Rows of 96 (and 192): not whole 256-element super-blocks, so the K-quant and ternary
    // types fall back to their 32-block substitutes, which fit.
    let base = f32_base(dir.path(), Arch::Llama, 96);
    let input = GgufFile::open(&base).unwrap();
    let m = mix::Model::of(&input);
    for name in ["Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_S", "Q6_K", "TQ2_0"] {
        let ftype = Ftype::find(name).unwrap();
        let out = dir.path().join(format!("{name}.gguf"));
        let (report, _) = run(&base, &out, ftype, false).unwrap();
        mix::assert_mix(name, &input, &GgufFile::open(&out).unwrap());
        // Exactly the tensors whose mix type does not fit their rows, with both types.
        let mut expected = Vec::new();
        for t in input.tensors() {
            let quantizable = t.dims.len() >= 2 && !t.name.contains("_norm");
            if !quantizable {
                continue;
            }
            let wanted = mix::mix_type(name, &m, &t.name, &t.dims);
            let used = mix::with_fallback(wanted, t.dims[0]);
            if used != wanted {
                expected.push((
                    t.name.clone(),
                    wanted.name().to_string(),
                    used.name().to_string(),
                ));
            }
        }
        let mut got: Vec<_> = report
            .fallbacks
            .iter()
            .map(|f| (f.tensor.clone(), f.wanted.clone(), f.used.clone()))
            .collect();
        expected.sort();
        got.sort();
        assert!(
            !expected.is_empty(),
            "{name}: the shape should need fallbacks"
        );
        assert_eq!(got, expected, "{name}");
    }
}

#[test]
fn refusals_are_typed_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.gguf");
    let smollm2 = bitnet_fixtures::smollm2();

    // A quantized input without allow_requantize: llama.cpp's own reason, and the fix.
    let e = run(&smollm2, &out, Ftype::find("Q4_K_M").unwrap(), false).unwrap_err();
    match &e {
        QuantizeError::RequantizeRefused { reason } => {
            assert!(
                reason.contains("requantizing from type q4_1 is disabled"),
                "{reason}"
            )
        }
        other => panic!("expected a requantize refusal, got {other:?}"),
    }
    assert!(!e.is_usage());
    assert!(e.to_string().contains("--allow-requantize"), "{e}");
    assert!(!out.exists());

    // Refused file types never reach llama.cpp.
    for name in ["IQ2_XXS", "IQ4_XS", "Q2_K_S", "MXFP4_MOE", "COPY", "Q1_0"] {
        let f = Ftype::find(name).unwrap();
        let e = run(&smollm2, &out, f, true).unwrap_err();
        assert!(
            matches!(e, QuantizeError::RefusedType { .. }),
            "{name}: {e:?}"
        );
        assert!(
            e.is_usage() && e.to_string().contains("Q4_K_M"),
            "{name}: {e}"
        );
    }

    // The output may not be the input, however it is spelled.
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let base = f32_base(dir.path(), Arch::Llama, 256);
    let same = dir.path().join("sub/../llama-256-f32.gguf");
    let e = run(&base, &same, Ftype::find("Q8_0").unwrap(), false).unwrap_err();
    assert!(
        matches!(e, QuantizeError::SameFile { .. }) && e.is_usage(),
        "{e:?}"
    );

    // Unreadable or invalid inputs name the file.
    let missing = dir.path().join("missing.gguf");
    let e = run(&missing, &out, Ftype::find("Q8_0").unwrap(), false).unwrap_err();
    assert!(
        matches!(e, QuantizeError::Input { .. }) && !e.is_usage(),
        "{e:?}"
    );
    assert!(e.to_string().contains("missing.gguf"), "{e}");
    let b158 = bitnet_minimodel::write_tiny(
        dir.path(),
        &Spec::new(Arch::BitnetB158, GgmlType::I2_S),
        &bitnet_fixtures::vocab("llama-bpe"),
    )
    .unwrap();
    let e = run(&b158, &out, Ftype::find("Q8_0").unwrap(), false).unwrap_err();
    assert!(matches!(e, QuantizeError::InputRefused { .. }), "{e:?}");

    // An output directory that does not exist.
    let nowhere = dir.path().join("no/such/dir/out.gguf");
    let e = run(&base, &nowhere, Ftype::find("Q8_0").unwrap(), false).unwrap_err();
    assert!(matches!(e, QuantizeError::Output { .. }), "{e:?}");

    assert!(!out.exists());
    no_leftovers(dir.path());
}

#[test]
fn bitnet_cpp_has_no_quantizer_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let base = f32_base(dir.path(), Arch::Llama, 256);
    let mut s = Session::start(Backend::Bitnet, &SessionOptions::default()).unwrap();
    let request = QuantizeRequest {
        input: WirePath::new(&base).unwrap(),
        output: WirePath::new(&dir.path().join("x.gguf")).unwrap(),
        ftype: 7,
        allow_requantize: false,
        n_threads: 0,
    };
    let e = s.quantize(&request, &mut |_| {}).unwrap_err();
    assert!(
        matches!(&e, CppError::Unsupported { backend: Backend::Bitnet, request } if request == "quantize"),
        "{e:?}"
    );
    assert!(e.to_string().contains("use the llama reference"), "{e}");
    // The reference is still there for the next request.
    assert!(matches!(s.type_traits(), Err(CppError::Unsupported { .. })));
    assert!(s.build_info().is_ok());
}

#[cfg(unix)]
#[test]
fn non_utf8_paths_reach_the_quantizer_unchanged() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let base = f32_base(dir.path(), Arch::Llama, 256);
    let input = dir.path().join(OsStr::from_bytes(b"mod\xe8le-\xff.gguf"));
    std::fs::rename(&base, &input).unwrap();
    let output = dir.path().join(OsStr::from_bytes(b"sortie-\xfe.gguf"));
    let (report, _) = run(&input, &output, Ftype::find("Q8_0").unwrap(), false).unwrap();
    assert!(report.tensors > 0);
    let f = GgufFile::open(&output).unwrap();
    assert!(f.tensors().iter().any(|t| t.ty == GgmlType::Q8_0));
    no_leftovers(dir.path());
}

#[test]
fn the_type_table_matches_the_pinned_ggml() {
    let mut s = Session::start(Backend::Llama, &SessionOptions::default()).unwrap();
    let traits = s.type_traits().unwrap();
    // Every id llama.cpp has not retired; ours has BitNet's I2_S on top.
    assert_eq!(traits.len(), GgmlType::ALL.len() - 1);
    for t in &traits {
        let ours = GgmlType::from_id(t.id).unwrap_or_else(|| {
            panic!(
                "llama.cpp knows type {} ({}), bitnet-gguf does not",
                t.id, t.name
            )
        });
        assert_eq!(ours.name(), t.name, "name of type {}", t.id);
        assert_eq!(ours.block_size(), t.block_size, "block size of {}", t.name);
        assert_eq!(
            ours.block_bytes(),
            Some(t.type_size),
            "bytes per block of {}",
            t.name
        );
    }
    // And nothing of ours is unknown to llama.cpp but BitNet's own I2_S.
    for ty in GgmlType::ALL {
        if ty != GgmlType::I2_S {
            assert!(
                traits.iter().any(|t| t.id == ty.id()),
                "{ty} is not in llama.cpp's table"
            );
        }
    }
}
