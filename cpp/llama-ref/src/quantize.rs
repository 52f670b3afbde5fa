//! `llama_model_quantize` behind the protocol.
//!
//! llama.cpp's quantizer reports only through its log: one line per tensor, a warning per
//! fallback type, and its reason when it fails. It runs on a worker thread while this thread
//! reads the log lines as they complete (a [`server::LogTap`]) and turns them into progress
//! frames, so the client sees each tensor as it is written rather than minutes of silence.

use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use bitnet_cpp::protocol::{server, QuantizeProgress, QuantizeReport, QuantizeRequest};
use bitnet_cpp::quantize_log::{parse_failure, parse_fallback, parse_progress};
use llama_cpp_sys_2 as sys;

use crate::path_cstring;

/// Quantize `request.input` into `request.output` with llama-quantize's default parameters
/// (`llama_model_quantize_default_params()`), changing only the file type, requantization
/// and threads.
///
/// # Errors
/// The quantizer's own reason (from its log) when it returns non-zero.
pub fn run(
    request: &QuantizeRequest,
    progress: &mut dyn FnMut(QuantizeProgress),
) -> Result<QuantizeReport, String> {
    let input = path_cstring(&request.input)?;
    let output = path_cstring(&request.output)?;
    let ftype = request.ftype as sys::llama_ftype;
    let allow_requantize = request.allow_requantize;
    let nthread = i32::try_from(request.n_threads).map_err(|_| "too many threads".to_string())?;

    let mut report = QuantizeReport {
        tensors: 0,
        fallbacks: Vec::new(),
    };
    let mut failure: Option<String> = None;
    let mut on_line = |line: String| {
        if let Some(reason) = parse_failure(&line) {
            failure = Some(reason.to_string());
        } else if let Some(p) = parse_progress(&line) {
            report.tensors = report.tensors.max(p.index);
            progress(p);
        } else if let Some(f) = parse_fallback(&line) {
            report.fallbacks.push(f);
        }
    };

    let tap = server::LogTap::start();
    let (input, output) = (&input, &output);
    let status = std::thread::scope(|scope| {
        let worker = scope.spawn(move || {
            // SAFETY: the parameters come from llama.cpp's defaults with plain values changed
            // (no pointers set); both paths are NUL-terminated and outlive the call.
            unsafe {
                let mut params = sys::llama_model_quantize_default_params();
                params.ftype = ftype;
                params.allow_requantize = allow_requantize;
                params.nthread = nthread;
                sys::llama_model_quantize(input.as_ptr(), output.as_ptr(), &params)
            }
        });
        loop {
            match tap.lines().recv_timeout(Duration::from_millis(100)) {
                Ok(line) => on_line(line),
                Err(RecvTimeoutError::Timeout) if worker.is_finished() => break,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let status = worker.join();
        // Lines logged between the last poll and the worker's end.
        while let Ok(line) = tap.lines().try_recv() {
            on_line(line);
        }
        status
    });
    drop(tap);
    match status {
        Ok(0) => Ok(report),
        Ok(_) => Err(failure.unwrap_or_else(|| {
            "llama_model_quantize failed without giving a reason (see its log)".to_string()
        })),
        Err(_) => Err("the quantizer thread panicked".to_string()),
    }
}
