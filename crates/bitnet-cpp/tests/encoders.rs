//! bitnet-quant's encoders are byte-identical to llama.cpp's quantizer: a generated f32 model
//! is quantized by llama.cpp (in the reference), and every output tensor of the table's type
//! must equal `bitnet_quant::encode` of the same f32 tensor, byte for byte. Random weights
//! (the llama model) and ternary ones (the bitnet model) both.
//!
//! Adding an encoder to bitnet-quant is one line in [`ENCODERS`].

use std::path::Path;

use bitnet_cpp::quantize::{self, Ftype, QuantizeOptions};
use bitnet_gguf::{GgmlType, GgufFile};
use bitnet_minimodel::{Arch, Spec};

/// llama-quantize file type → the tensor type our encoder must reproduce within it.
const ENCODERS: &[(&str, GgmlType)] = &[
    ("Q8_0", GgmlType::Q8_0),
    ("Q4_0", GgmlType::Q4_0),
    ("Q4_1", GgmlType::Q4_1),
    ("TQ1_0", GgmlType::TQ1_0),
    ("TQ2_0", GgmlType::TQ2_0),
    ("F16", GgmlType::F16),
    ("BF16", GgmlType::BF16),
];

fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Quantize `base` as `ftype` and compare every `ty` tensor with our encoding; returns how
/// many tensors were compared.
fn compare(dir: &Path, base: &Path, ftype: &str, ty: GgmlType) -> usize {
    let out = dir.join(format!("{ftype}.gguf"));
    quantize::quantize(
        base,
        &out,
        Ftype::find(ftype).unwrap(),
        &QuantizeOptions::default(),
        &mut |_| {},
    )
    .unwrap_or_else(|e| panic!("{ftype}: {e}"));
    let input = GgufFile::open(base).unwrap();
    let output = GgufFile::open(&out).unwrap();
    let mut compared = 0;
    for t in output.tensors().iter().filter(|t| t.ty == ty) {
        let (src, data) = input.tensor_data_by_name(&t.name).unwrap();
        assert_eq!(src.ty, GgmlType::F32, "{} is not f32 in the base", t.name);
        let ours = bitnet_quant::encode(ty, &f32_values(data), t.dims[0] as usize)
            .unwrap_or_else(|e| panic!("{ftype} {}: {e}", t.name));
        let theirs = output.tensor_data(t);
        if ours != theirs {
            let at = ours.iter().zip(theirs).position(|(a, b)| a != b);
            panic!(
                "{ftype}: {} ({ty}) differs from llama.cpp's bytes (lengths {} / {}, first difference at byte {at:?})",
                t.name,
                ours.len(),
                theirs.len()
            );
        }
        compared += 1;
    }
    drop(output);
    std::fs::remove_file(&out).unwrap();
    compared
}

#[test]
fn our_encoders_give_llama_cpps_bytes() {
    let dir = tempfile::tempdir().unwrap();
    for arch in [Arch::Llama, Arch::Bitnet] {
        // Rows of 256: whole blocks of every type, so the file type's own type is used.
        let spec = Spec {
            layers: Some(2),
            dim: Some(256),
            ffn: Some(512),
            ..Spec::new(arch, GgmlType::F32)
        };
        let base = dir.path().join(format!("{}-f32.gguf", arch.name()));
        bitnet_minimodel::write(&spec, &bitnet_fixtures::vocab("llama-spm"), &base).unwrap();
        for &(ftype, ty) in ENCODERS {
            assert!(
                bitnet_quant::ENCODABLE.contains(&ty),
                "{ty} has no encoder in bitnet-quant"
            );
            let n = compare(dir.path(), &base, ftype, ty);
            // Every layer matrix (7 per layer) at least.
            assert!(
                n >= 14,
                "{} {ftype}: only {n} {ty} tensors compared",
                arch.name()
            );
        }
    }
}
