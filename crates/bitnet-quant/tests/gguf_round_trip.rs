//! Every encodable type goes through a GGUF file (bitnet-gguf's writer and reader) and comes
//! back as a zero-copy `QuantizedMatrix` over the file's bytes: the two crates agree on every
//! tensor size, I2_S's trailing scale included.

use bitnet_gguf::{GgufFile, GgufWriter};
use bitnet_quant::{decode, encode, QuantizedActivation, QuantizedMatrix, ENCODABLE};

#[test]
fn encoded_tensors_survive_a_gguf_file_and_multiply_from_its_bytes() {
    let (rows, cols) = (6usize, 512usize);
    // Ternary values × 0.5: every type represents them exactly except Q4_1 (1/15 steps) —
    // compare through `decode` rather than against the inputs.
    let values: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7 + i / 13) % 3) as f32 * 0.5 - 0.5)
        .collect();
    let mut w = GgufWriter::new();
    for &ty in ENCODABLE {
        let bytes = encode(ty, &values, cols).unwrap();
        w.add_tensor(ty.name(), &[cols as u64, rows as u64], ty, bytes)
            .unwrap();
    }
    let file = GgufFile::from_bytes(w.to_bytes()).unwrap();
    let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).sin()).collect();
    for &ty in ENCODABLE {
        let (info, data) = file.tensor_data_by_name(ty.name()).unwrap();
        assert_eq!(info.ty, ty);
        let m = QuantizedMatrix::new(ty, data, rows, cols).unwrap();
        let mut all = vec![0.0; rows * cols];
        decode(ty, data, &mut all).unwrap();
        let mut act = QuantizedActivation::new();
        act.quantize(m.activation_type(), &x).unwrap();
        let mut xq = vec![0.0; cols];
        act.dequantize(&mut xq);
        let mut y = vec![0.0; rows];
        m.matvec(&act, &mut y);
        for (r, &got) in y.iter().enumerate() {
            let row = &all[r * cols..(r + 1) * cols];
            let want: f64 = row
                .iter()
                .zip(&xq)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum();
            let mag: f64 = row
                .iter()
                .zip(&xq)
                .map(|(&a, &b)| (a as f64 * b as f64).abs())
                .sum();
            // Q4_1's and Q5_1's kernels use the activation's f16 block sums for the minimum's
            // term.
            let tol = if matches!(
                ty,
                bitnet_gguf::GgmlType::Q4_1 | bitnet_gguf::GgmlType::Q5_1
            ) {
                2e-3
            } else {
                1e-5
            };
            assert!(
                (got as f64 - want).abs() <= tol * mag + 1e-5,
                "{ty} row {r}: {got} vs {want}"
            );
        }
    }
}
