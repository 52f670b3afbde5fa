//! Every tensor type llama.cpp knows has a name in `bitnet inspect` (bitnet-gguf's table is
//! checked against the pinned llama.cpp's own in bitnet-cpp's tests), and a type the engine
//! cannot multiply stops `bitnet run` with exit 3 naming the type and the tensor.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use bitnet_gguf::{GgmlType, GgufFile, GgufWriter, Value};
use bitnet_minimodel::{Arch, Spec};

fn bitnet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bitnet"))
}

/// A file with one small zero-filled tensor of every type bitnet-gguf knows.
fn every_type(dir: &Path) -> PathBuf {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String("llama".into()))
        .unwrap();
    for ty in GgmlType::ALL {
        // Two rows of one block (I2_S packs 128-element groups).
        let row = if ty == GgmlType::I2_S {
            128
        } else {
            ty.block_size()
        };
        let dims = [row, 2];
        let bytes = ty.tensor_bytes(&dims).unwrap() as usize;
        w.add_tensor(format!("t.{}", ty.name()), &dims, ty, vec![0; bytes])
            .unwrap();
    }
    let path = dir.join("every-type.gguf");
    w.write_file(&path).unwrap();
    path
}

#[test]
fn inspect_names_every_type_in_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = every_type(dir.path());
    let out = bitnet().arg("inspect").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let table: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for ty in GgmlType::ALL {
        assert!(table.contains(&ty.name()), "{ty} missing from:\n{text}");
    }
    let out = bitnet()
        .args(["inspect", "--json"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut names: Vec<&str> = doc["tensors"]["by_type"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    let mut want: Vec<&str> = GgmlType::ALL.iter().map(|t| t.name()).collect();
    names.sort_unstable();
    want.sort_unstable();
    assert_eq!(names, want);
    assert_eq!(doc["tensors"]["count"], GgmlType::ALL.len());
}

/// The tiny llama model with `tensor` stored as `ty` (zero blocks): a type the engine will
/// never multiply, so the test holds whatever types the engine gains.
fn with_tensor_as(dir: &Path, tensor: &str, ty: GgmlType) -> PathBuf {
    let base = bitnet_minimodel::write_tiny(
        dir,
        &Spec::new(Arch::Llama, GgmlType::F32),
        &bitnet_fixtures::vocab("llama-spm"),
    )
    .unwrap();
    let file = GgufFile::open(&base).unwrap();
    let dims = &file.tensor(tensor).unwrap().dims;
    let zeros = vec![0; ty.tensor_bytes(dims).unwrap() as usize];
    let mut w = GgufWriter::from_file(&file).unwrap();
    w.replace_tensor(tensor, dims, ty, zeros).unwrap();
    let out = dir.join(format!("llama-with-{}.gguf", ty.name()));
    w.write_file(&out).unwrap();
    out
}

#[test]
fn run_refuses_an_unsupported_type_with_exit_3_naming_type_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let model = with_tensor_as(dir.path(), "blk.1.ffn_down.weight", GgmlType::MXFP4);
    let out = bitnet()
        .args(["run", "--prompt", "Hello", "-n", "2", "--model"])
        .arg(&model)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("blk.1.ffn_down.weight") && err.contains("mxfp4"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "nothing is generated");
}
