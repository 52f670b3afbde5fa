//! Feeds arbitrary bytes to the protocol's frame decoder, as requests (what a reference
//! reads) and as responses (what the client reads): a stream of frames decodes to messages
//! or stops at a typed I/O error, never panics or allocates more than the bytes that
//! arrived (up to one read chunk); every frame that decodes encodes back to one that decodes
//! to the same message.
#![no_main]

use bitnet_cpp::protocol::{read_frame, write_frame, Request, Response};
use libfuzzer_sys::fuzz_target;
use serde::{de::DeserializeOwned, Serialize};

fn stream<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(mut data: &[u8]) {
    // A handful of frames is plenty; the input is finite anyway.
    for _ in 0..8 {
        match read_frame::<_, T>(&mut data) {
            Ok(Some((message, payload))) => {
                let mut again = Vec::new();
                write_frame(&mut again, &message, &payload).unwrap();
                let (m2, p2) = read_frame::<_, T>(&mut &again[..]).unwrap().unwrap();
                assert_eq!(m2, message);
                assert_eq!(
                    p2.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    payload.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                );
            }
            Ok(None) | Err(_) => return,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    stream::<Request>(data);
    stream::<Response>(data);
});
