//! A generated corpus of corrupt GGUF images: each must fail with its own specific error
//! (carrying the right offset), and no input may panic.

use bitnet_gguf::{GgmlType, GgufError, GgufFile, GgufHeader, GgufWriter, Value};
use proptest::prelude::*;

/// Hand-assembles GGUF bytes field by field, recording where each field starts so tests can
/// cut or corrupt the image at exact header boundaries.
#[derive(Default, Clone)]
struct Raw {
    bytes: Vec<u8>,
    boundaries: Vec<usize>,
}

impl Raw {
    fn mark(&mut self) -> &mut Self {
        self.boundaries.push(self.bytes.len());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.mark();
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.mark();
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.mark();
        self.bytes.extend_from_slice(b);
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64).raw(s.as_bytes())
    }
    fn header(&mut self, version: u32, n_tensors: u64, n_kv: u64) -> &mut Self {
        self.raw(b"GGUF").u32(version).u64(n_tensors).u64(n_kv)
    }
    fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.str(key).u32(4).u32(v)
    }
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name).u32(dims.len() as u32);
        for d in dims {
            self.u64(*d);
        }
        self.u32(ty).u64(offset)
    }
    fn pad_to(&mut self, align: usize) -> &mut Self {
        while !self.bytes.len().is_multiple_of(align) {
            self.bytes.push(0);
        }
        self.mark()
    }
    fn zeros(&mut self, n: usize) -> &mut Self {
        self.mark();
        self.bytes.resize(self.bytes.len() + n, 0);
        self
    }
    fn parse(&self) -> Result<GgufHeader, GgufError> {
        GgufHeader::parse(&self.bytes)
    }
}

/// A small valid file: two keys, two f32 tensors of 8 and 4 elements.
fn valid() -> Raw {
    let mut r = Raw::default();
    r.header(3, 2, 2)
        .kv_u32("general.alignment", 32)
        .str("general.architecture")
        .u32(8)
        .str("llama")
        .tensor("a", &[8], 0, 0)
        .tensor("b", &[4], 0, 32)
        .pad_to(32)
        .zeros(32 + 16);
    r
}

fn err(r: &Raw) -> GgufError {
    r.parse().expect_err("corrupt image was accepted")
}

#[test]
fn the_valid_base_parses() {
    let h = valid().parse().unwrap();
    assert_eq!(h.tensors().len(), 2);
    assert_eq!(h.tensor("b").unwrap().size, 16);
}

#[test]
fn bad_magic() {
    let mut r = valid();
    r.bytes[..4].copy_from_slice(b"GGML");
    assert!(matches!(err(&r), GgufError::BadMagic { found } if found == b"GGML"));
    assert!(matches!(
        GgufHeader::parse(b"GG").unwrap_err(),
        GgufError::BadMagic { .. }
    ));
    assert!(matches!(
        GgufHeader::parse(b"").unwrap_err(),
        GgufError::BadMagic { .. }
    ));
}

#[test]
fn unsupported_versions() {
    for v in [0u32, 1, 4, 99] {
        let mut r = Raw::default();
        r.header(v, 0, 0);
        match err(&r) {
            GgufError::UnsupportedVersion { version, .. } => assert_eq!(version, v),
            e => panic!("version {v}: {e}"),
        }
    }
    let mut r = Raw::default();
    r.header(1, 0, 0);
    assert!(err(&r).to_string().contains("v1"));
    let mut r = Raw::default();
    r.header(2, 0, 0);
    assert_eq!(r.parse().unwrap().version, 2);
}

#[test]
fn absurd_counts_fail_before_allocating() {
    let mut r = Raw::default();
    r.header(3, u64::MAX, 0);
    assert!(matches!(
        err(&r),
        GgufError::CountTooLarge {
            what: "tensor count",
            offset: 8,
            ..
        }
    ));
    let mut r = Raw::default();
    r.header(3, 0, 1 << 60);
    assert!(matches!(
        err(&r),
        GgufError::CountTooLarge { offset: 16, .. }
    ));
    // An array claiming 2^62 u32 elements.
    let mut r = Raw::default();
    r.header(3, 0, 1).str("k").u32(9).u32(4).u64(1 << 62);
    match err(&r) {
        GgufError::CountTooLarge { what, offset, .. } => {
            assert_eq!(what, "array length");
            assert_eq!(offset, 24 + 9 + 4 + 4);
        }
        e => panic!("{e}"),
    }
}

#[test]
fn absurd_string_lengths() {
    let mut r = Raw::default();
    r.header(3, 0, 1).u64(u64::MAX / 2).raw(b"abcdefghijklmnop");
    assert!(matches!(
        err(&r),
        GgufError::StringTooLong { offset: 24, .. }
    ));
    let mut r = Raw::default();
    r.header(3, 0, 1)
        .str("k")
        .u32(8)
        .u64(1_000_000)
        .raw(b"short");
    assert!(matches!(
        err(&r),
        GgufError::StringTooLong { offset: 37, .. }
    ));
}

#[test]
fn unknown_value_type_and_bad_utf8() {
    let mut r = Raw::default();
    r.header(3, 0, 1).str("k").u32(13).u32(0);
    assert!(matches!(
        err(&r),
        GgufError::UnknownValueType {
            type_id: 13,
            offset: 33
        }
    ));
    let mut r = Raw::default();
    r.header(3, 0, 1).u64(2).raw(&[0xff, 0xfe]).u32(4).u32(0);
    assert!(matches!(err(&r), GgufError::InvalidUtf8 { offset: 32 }));
}

#[test]
fn nesting_too_deep() {
    let mut r = Raw::default();
    r.header(3, 0, 1).str("k").u32(9);
    for _ in 0..20 {
        r.u32(9).u64(1);
    }
    r.u32(4).u64(0);
    assert!(matches!(err(&r), GgufError::NestingTooDeep { .. }));
}

#[test]
fn duplicates() {
    let mut r = Raw::default();
    r.header(3, 0, 2).kv_u32("k", 1).kv_u32("k", 2);
    assert!(matches!(err(&r), GgufError::DuplicateKey { key, offset: 41 } if key == "k"));
    let mut r = Raw::default();
    r.header(3, 2, 0)
        .tensor("t", &[4], 0, 0)
        .tensor("t", &[4], 0, 32)
        .pad_to(32)
        .zeros(64);
    assert!(matches!(err(&r), GgufError::DuplicateTensor { name, .. } if name == "t"));
}

#[test]
fn bad_alignment() {
    for (ty, payload) in [
        (4u32, 24u32.to_le_bytes().to_vec()),
        (4, 0u32.to_le_bytes().to_vec()),
        (8, {
            let mut v = 2u64.to_le_bytes().to_vec();
            v.extend_from_slice(b"32");
            v
        }),
    ] {
        let mut r = Raw::default();
        r.header(3, 0, 1)
            .str("general.alignment")
            .u32(ty)
            .raw(&payload);
        assert!(matches!(
            err(&r),
            GgufError::BadAlignment { offset: 24, .. }
        ));
    }
}

#[test]
fn tensor_shape_errors() {
    let mut r = Raw::default();
    r.header(3, 1, 0).tensor("t", &[1, 1, 1, 1, 1], 0, 0);
    assert!(matches!(
        err(&r),
        GgufError::TooManyDims {
            n_dims: 5,
            offset: 24,
            ..
        }
    ));
    let mut r = Raw::default();
    r.header(3, 1, 0).tensor("t", &[1 << 40, 1 << 40], 0, 0);
    assert!(matches!(err(&r), GgufError::DimensionOverflow { .. }));
    let mut r = Raw::default();
    r.header(3, 1, 0).tensor("t", &[u64::MAX], 0, 0);
    assert!(matches!(err(&r), GgufError::DimensionOverflow { .. }));
    let mut r = Raw::default();
    r.header(3, 1, 0)
        .tensor("t", &[33], GgmlType::Q8_0.id(), 0)
        .pad_to(32)
        .zeros(64);
    assert!(matches!(
        err(&r),
        GgufError::PartialBlock {
            ne0: 33,
            block_size: 32,
            ..
        }
    ));
    let mut r = Raw::default();
    r.header(3, 1, 0)
        .tensor("t", &[64], GgmlType::I2_S.id(), 0)
        .pad_to(32)
        .zeros(64);
    assert!(matches!(
        err(&r),
        GgufError::PartialBlock {
            block_size: 128,
            ..
        }
    ));
}

#[test]
fn unknown_tensor_types() {
    for id in [4u32, 5, 31, 33, 37, 38, 43, 9999] {
        let mut r = Raw::default();
        r.header(3, 1, 0)
            .tensor("t", &[32], id, 0)
            .pad_to(32)
            .zeros(256);
        match err(&r) {
            GgufError::UnknownTensorType {
                type_id, offset, ..
            } => {
                assert_eq!(type_id, id);
                assert_eq!(offset, 24 + 9 + 4 + 8);
            }
            e => panic!("type {id}: {e}"),
        }
    }
}

#[test]
fn misaligned_out_of_bounds_and_overlapping_tensors() {
    let mut r = Raw::default();
    r.header(3, 1, 0)
        .tensor("t", &[4], 0, 8)
        .pad_to(32)
        .zeros(64);
    assert!(matches!(
        err(&r),
        GgufError::MisalignedTensor {
            data_offset: 8,
            alignment: 32,
            ..
        }
    ));

    let mut r = Raw::default();
    r.header(3, 1, 0)
        .tensor("far", &[4], 0, 1 << 40)
        .pad_to(32)
        .zeros(16);
    assert!(matches!(err(&r), GgufError::TensorOutOfBounds { name, .. } if name == "far"));

    let mut r = Raw::default();
    r.header(3, 2, 0)
        .tensor("a", &[16], 0, 0)
        .tensor("b", &[4], 0, 32)
        .pad_to(32)
        .zeros(128);
    assert!(
        matches!(err(&r), GgufError::OverlappingTensors { first, second, .. } if first == "a" && second == "b")
    );
}

#[test]
fn truncated_at_every_header_boundary() {
    let full = valid();
    let data_start = full.parse().unwrap().data_offset as usize;
    for &cut in &full.boundaries {
        if cut >= full.bytes.len() {
            continue;
        }
        let e = GgufHeader::parse(&full.bytes[..cut]).expect_err("truncated image accepted");
        if cut < data_start {
            assert!(
                matches!(
                    e,
                    GgufError::BadMagic { .. }
                        | GgufError::Truncated { .. }
                        | GgufError::CountTooLarge { .. }
                        | GgufError::StringTooLong { .. }
                        | GgufError::TensorOutOfBounds { .. }
                ),
                "cut at {cut}: unexpected {e}"
            );
            assert!(
                e.offset().unwrap() <= cut as u64,
                "cut at {cut}: offset beyond the cut: {e}"
            );
            // A file that ends before its header does says so in words, not "absurd count".
            if !matches!(
                e,
                GgufError::BadMagic { .. } | GgufError::TensorOutOfBounds { .. }
            ) {
                assert!(
                    e.to_string().starts_with("truncated or not a GGUF file: "),
                    "cut at {cut}: {e}"
                );
            }
        } else {
            assert!(
                matches!(e, GgufError::TensorOutOfBounds { .. }),
                "cut at {cut}: {e}"
            );
        }
    }
}

#[test]
fn truncated_download_names_tensor_and_missing_bytes() {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String("llama".into()))
        .unwrap();
    w.add_tensor("token_embd.weight", &[64, 10], GgmlType::F32, vec![1; 2560])
        .unwrap();
    w.add_tensor("output.weight", &[64, 10], GgmlType::F32, vec![2; 2560])
        .unwrap();
    let bytes = w.to_bytes();
    let cut = bytes.len() - 1000;
    match GgufFile::from_bytes(bytes[..cut].to_vec()).unwrap_err() {
        e @ GgufError::TensorOutOfBounds { .. } => {
            let GgufError::TensorOutOfBounds {
                ref name,
                missing,
                file_size,
                ..
            } = e
            else {
                unreachable!()
            };
            assert_eq!(name, "output.weight");
            assert_eq!(missing, 1000);
            assert_eq!(file_size, cut as u64);
            let msg = e.to_string();
            assert!(
                msg.contains("truncated")
                    && msg.contains("output.weight")
                    && msg.contains("1000 bytes missing"),
                "{msg}"
            );
        }
        e => panic!("{e}"),
    }
}

#[test]
fn missing_file_and_directory_are_io_errors() {
    let e = GgufFile::open("/nonexistent/model.gguf").unwrap_err();
    assert!(matches!(e, GgufError::Io { .. }));
    assert!(e.to_string().contains("/nonexistent/model.gguf"));
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        GgufFile::open(dir.path()).unwrap_err(),
        GgufError::Io { .. }
    ));
    let empty = dir.path().join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        GgufFile::open(&empty).unwrap_err(),
        GgufError::BadMagic { .. }
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Random cuts and random byte corruption anywhere: an error or a valid header, never a
    /// panic, and a header that parses always has its tensors inside the buffer.
    #[test]
    fn random_corruption_never_panics(cut in 0usize..200, flips in prop::collection::vec((0usize..200, any::<u8>()), 0..4)) {
        let mut bytes = valid().bytes;
        for (pos, b) in flips {
            if pos < bytes.len() {
                bytes[pos] = b;
            }
        }
        bytes.truncate(cut.min(bytes.len()));
        if let Ok(h) = GgufHeader::parse(&bytes) {
            for t in h.tensors() {
                prop_assert!(h.data_offset + t.offset + t.size <= bytes.len() as u64);
            }
        }
    }
}
