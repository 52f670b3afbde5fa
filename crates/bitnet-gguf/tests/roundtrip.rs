//! Writer → reader round trips on arbitrary metadata and tensors (proptest), and
//! byte-for-byte determinism.

use bitnet_gguf::{Array, GgmlType, GgufFile, GgufWriter, Value};
use proptest::prelude::*;

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u8>().prop_map(Value::U8),
        any::<i8>().prop_map(Value::I8),
        any::<u16>().prop_map(Value::U16),
        any::<i16>().prop_map(Value::I16),
        any::<u32>().prop_map(Value::U32),
        any::<i32>().prop_map(Value::I32),
        // NaN != NaN would make the equality check meaningless; compare finite values.
        (-1e30f32..1e30).prop_map(Value::F32),
        any::<bool>().prop_map(Value::Bool),
        ".{0,24}".prop_map(Value::String),
        any::<u64>().prop_map(Value::U64),
        any::<i64>().prop_map(Value::I64),
        (-1e300f64..1e300).prop_map(Value::F64),
    ]
}

fn array() -> impl Strategy<Value = Array> {
    let leaf = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..8).prop_map(Array::U8),
        prop::collection::vec(any::<i8>(), 0..8).prop_map(Array::I8),
        prop::collection::vec(any::<u16>(), 0..8).prop_map(Array::U16),
        prop::collection::vec(any::<i16>(), 0..8).prop_map(Array::I16),
        prop::collection::vec(any::<u32>(), 0..8).prop_map(Array::U32),
        prop::collection::vec(any::<i32>(), 0..8).prop_map(Array::I32),
        prop::collection::vec(-1e30f32..1e30, 0..8).prop_map(Array::F32),
        prop::collection::vec(any::<bool>(), 0..8).prop_map(Array::Bool),
        prop::collection::vec(".{0,12}", 0..8).prop_map(Array::String),
        prop::collection::vec(any::<u64>(), 0..8).prop_map(Array::U64),
        prop::collection::vec(any::<i64>(), 0..8).prop_map(Array::I64),
        prop::collection::vec(-1e300f64..1e300, 0..8).prop_map(Array::F64),
    ];
    // Nested arrays hold arrays of one element type each, as GGUF requires.
    leaf.prop_recursive(2, 16, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_map(Array::Array)
    })
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![3 => scalar(), 1 => array().prop_map(Value::Array)]
}

#[derive(Debug, Clone)]
struct TensorSpec {
    ty: GgmlType,
    dims: Vec<u64>,
    seed: u8,
}

fn tensor() -> impl Strategy<Value = TensorSpec> {
    let ty = prop::sample::select(vec![
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8_0,
        GgmlType::Q4_1,
        GgmlType::TQ2_0,
        GgmlType::TQ1_0,
        GgmlType::I2_S,
        GgmlType::I8,
    ]);
    (
        ty,
        1u64..4,
        prop::collection::vec(1u64..4, 0..3),
        any::<u8>(),
    )
        .prop_map(|(ty, blocks, rest, seed)| {
            let row = if ty == GgmlType::I2_S {
                128
            } else {
                ty.block_size()
            } * blocks;
            let mut dims = vec![row];
            dims.extend(rest);
            TensorSpec { ty, dims, seed }
        })
}

fn build(
    meta: &[(String, Value)],
    tensors: &[TensorSpec],
    alignment: u64,
) -> (GgufWriter, Vec<Vec<u8>>) {
    let mut w = GgufWriter::new().with_alignment(alignment).unwrap();
    for (k, v) in meta {
        w.add_metadata(k.clone(), v.clone()).unwrap();
    }
    let mut datas = Vec::new();
    for (i, t) in tensors.iter().enumerate() {
        let size = t.ty.tensor_bytes(&t.dims).unwrap() as usize;
        let data: Vec<u8> = (0..size)
            .map(|j| (j as u8).wrapping_mul(31) ^ t.seed)
            .collect();
        w.add_tensor(format!("t{i}"), &t.dims, t.ty, data.clone())
            .unwrap();
        datas.push(data);
    }
    (w, datas)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn write_then_read_gives_back_everything(
        meta in prop::collection::btree_map("[a-z]{1,6}(\\.[a-z_]{1,8}){0,2}", value(), 0..12),
        tensors in prop::collection::vec(tensor(), 0..5),
        align_pow in 0u32..8,
    ) {
        let alignment = 1u64 << align_pow;
        let meta: Vec<(String, Value)> = meta.into_iter().filter(|(k, _)| k != "general.alignment").collect();
        let (w, datas) = build(&meta, &tensors, alignment);
        let bytes = w.to_bytes();
        prop_assert_eq!(&bytes, &w.to_bytes(), "writer is not deterministic");
        let file = GgufFile::from_bytes(bytes).unwrap();
        prop_assert_eq!(file.version, 3);
        prop_assert_eq!(file.alignment, alignment);
        let read: Vec<(String, Value)> = file
            .metadata()
            .iter()
            .filter(|(k, _)| k != "general.alignment")
            .cloned()
            .collect();
        prop_assert_eq!(read, meta);
        prop_assert_eq!(file.tensors().len(), tensors.len());
        for (i, (spec, data)) in tensors.iter().zip(&datas).enumerate() {
            let info = file.tensor(&format!("t{i}")).unwrap();
            prop_assert_eq!(info.ty, spec.ty);
            prop_assert_eq!(&info.dims, &spec.dims);
            prop_assert_eq!(info.offset % alignment, 0);
            prop_assert_eq!(file.tensor_data(info), data.as_slice());
        }
    }
}

#[test]
fn writer_rejects_inconsistent_tensors() {
    let mut w = GgufWriter::new();
    assert!(w.add_tensor("a", &[4], GgmlType::F32, vec![0; 15]).is_err());
    assert!(w
        .add_tensor("b", &[33], GgmlType::Q8_0, vec![0; 34])
        .is_err());
    w.add_tensor("c", &[4], GgmlType::F32, vec![0; 16]).unwrap();
    assert!(w.add_tensor("c", &[4], GgmlType::F32, vec![0; 16]).is_err());
    w.add_metadata("k", Value::U8(1)).unwrap();
    assert!(w.add_metadata("k", Value::U8(2)).is_err());
    assert!(GgufWriter::new().with_alignment(24).is_err());
}

#[test]
fn a_copy_of_a_file_writes_the_same_bytes_and_tensors_can_be_retyped() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = GgufWriter::new().with_alignment(64).unwrap();
    w.add_metadata("general.architecture", Value::String("llama".into()))
        .unwrap();
    w.add_tensor("a", &[32, 2], GgmlType::F32, (0..=255).collect())
        .unwrap();
    w.add_tensor("b", &[4], GgmlType::F16, vec![7; 8]).unwrap();
    let path = dir.path().join("orig.gguf");
    w.write_file(&path).unwrap();
    let file = GgufFile::open(&path).unwrap();
    let mut copy = GgufWriter::from_file(&file).unwrap();
    assert_eq!(copy.to_bytes(), std::fs::read(&path).unwrap());
    // One tensor in another type: same place, same dims, the new bytes.
    copy.replace_tensor("a", &[32, 2], GgmlType::Q8_0, vec![1; 68])
        .unwrap();
    assert!(copy
        .replace_tensor("a", &[32, 2], GgmlType::Q8_0, vec![1; 67])
        .is_err());
    assert!(copy
        .replace_tensor("b", &[4], GgmlType::Q8_0, vec![0; 34])
        .is_err());
    assert!(copy
        .replace_tensor("zz", &[0], GgmlType::F32, vec![])
        .is_err());
    let out = dir.path().join("retyped.gguf");
    copy.write_file(&out).unwrap();
    let f = GgufFile::open(&out).unwrap();
    let (a, data) = f.tensor_data_by_name("a").unwrap();
    assert_eq!(
        (a.ty, a.dims.as_slice(), data),
        (GgmlType::Q8_0, &[32u64, 2][..], &[1u8; 68][..])
    );
    assert_eq!(f.tensors()[1].name, "b");
    assert_eq!(f.alignment, 64);
}

#[test]
fn typed_accessors_convert_integers_and_reject_wrong_types() {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String("llama".into()))
        .unwrap();
    w.add_metadata("llama.block_count", Value::I32(2)).unwrap();
    w.add_metadata("llama.context_length", Value::U64(4096))
        .unwrap();
    w.add_metadata("llama.embedding_length", Value::String("64".into()))
        .unwrap();
    w.add_metadata("neg", Value::I32(-1)).unwrap();
    w.add_metadata(
        "tokenizer.ggml.tokens",
        Value::Array(Array::String(vec!["a".into(), "b".into()])),
    )
    .unwrap();
    w.add_metadata(
        "tokenizer.ggml.scores",
        Value::Array(Array::I32(vec![1, 2])),
    )
    .unwrap();
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    assert_eq!(f.get_u32("llama.block_count").unwrap(), Some(2));
    assert_eq!(f.get_u64("llama.context_length").unwrap(), Some(4096));
    assert_eq!(f.get_u32("missing").unwrap(), None);
    assert!(f.get_u32("neg").is_err());
    let err = f.hparams().unwrap_err().to_string();
    assert!(
        err.contains("llama.embedding_length") && err.contains("string"),
        "{err}"
    );
    let err = f.tokenizer().unwrap_err().to_string();
    assert!(err.contains("tokenizer.ggml.scores"), "{err}");
}

#[test]
fn one_field_rewrites_change_only_that_field() {
    let mut w = GgufWriter::new();
    w.add_metadata("a", Value::U32(1)).unwrap();
    w.add_metadata("b", Value::U32(2)).unwrap();
    w.add_tensor("x", &[4], GgmlType::F32, vec![0; 16]).unwrap();
    w.add_tensor("y", &[4], GgmlType::F32, vec![1; 16]).unwrap();
    w.set_metadata("a", Value::F32(f32::NAN)).unwrap();
    w.set_metadata("c", Value::U8(3)).unwrap();
    assert_eq!(w.remove_metadata("b"), Some(Value::U32(2)));
    assert_eq!(w.remove_metadata("b"), None);
    assert!(w.set_metadata("general.alignment", Value::U32(1)).is_err());
    w.tensor_mut("x").unwrap().2[0..4].copy_from_slice(&f32::INFINITY.to_le_bytes());
    assert!(w.rename_tensor("y", "x").is_err());
    assert!(w.rename_tensor("y", "z").unwrap());
    w.replace_tensor("z", &[32], GgmlType::F16, vec![0; 64])
        .unwrap();
    assert!(w
        .replace_tensor("z", &[3], GgmlType::Q8_0, vec![0; 3])
        .is_err());
    assert!(w
        .replace_tensor("nope", &[1], GgmlType::F32, vec![0; 4])
        .is_err());
    assert_eq!(w.tensor_names().collect::<Vec<_>>(), ["x", "z"]);

    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    let keys: Vec<&str> = f.metadata().iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["a", "c"], "a keeps its place, c is appended");
    assert!(f.get_f32("a").unwrap().unwrap().is_nan());
    let (x, data) = f.tensor_data_by_name("x").unwrap();
    assert_eq!(x.ty, GgmlType::F32);
    assert_eq!(&data[..4], &f32::INFINITY.to_le_bytes());
    assert_eq!(f.tensor("z").unwrap().ty, GgmlType::F16);
    assert_eq!(f.tensor("z").unwrap().dims, [32]);
    assert!(w.remove_tensor("x"));
    assert!(!w.remove_tensor("x"));
}

#[test]
fn duplicate_tokens_are_found_as_llama_cpp_reads_them() {
    let file = |tokens: &[&str]| {
        let mut w = GgufWriter::new();
        w.add_metadata(
            "tokenizer.ggml.tokens",
            Value::Array(Array::String(
                tokens.iter().map(|t| t.to_string()).collect(),
            )),
        )
        .unwrap();
        GgufFile::from_bytes(w.to_bytes()).unwrap()
    };
    let dup = |tokens: &[&str]| file(tokens).tokenizer().unwrap().first_duplicate_token();
    assert_eq!(dup(&["a", "b", "", "c"]), None);
    let d = dup(&["a", "b", "a"]).unwrap();
    assert_eq!((d.first, d.second, d.text.as_str()), (0, 2, "a"));
    // A C string ends at the first NUL: "b\0x" is "b".
    let d = dup(&["a", "b", "b\0x"]).unwrap();
    assert_eq!((d.first, d.second), (1, 2));
    // An empty token is renamed "[EMPTY_<id>]", which can collide with a real one.
    let d = dup(&["[EMPTY_1]", ""]).unwrap();
    assert_eq!((d.first, d.second, d.text.as_str()), (0, 1, "[EMPTY_1]"));
    assert_eq!(dup(&["", "\0"]), None, "two empties get different names");
}
