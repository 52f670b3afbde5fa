//! Feeds arbitrary bytes to the GGUF header parser: it must return an error or a header whose
//! tensors all lie inside the input, and never panic, overflow or allocate absurdly.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = bitnet_gguf::GgufFile::from_bytes(data.to_vec()) {
        for t in file.tensors() {
            assert_eq!(file.tensor_data(t).len() as u64, t.size);
        }
        let _ = file.hparams();
        let _ = file.tokenizer();
    }
});
