//! Every failure is a typed error with its reason: never a hang, never an abort of the caller.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bitnet_cpp::protocol::{self, Response};
use bitnet_cpp::{Backend, BackendChoice, CppError, Session, SessionOptions};
use bitnet_gguf::GgmlType;
use bitnet_minimodel::{Arch, Spec};

fn tiny(dir: &Path, arch: Arch, qtype: GgmlType, vocab: &str) -> PathBuf {
    bitnet_minimodel::write_tiny(dir, &Spec::new(arch, qtype), &bitnet_fixtures::vocab(vocab))
        .unwrap()
}

fn open(model: &Path, choice: BackendChoice) -> Session {
    Session::open(model, choice, &SessionOptions::default()).unwrap()
}

#[test]
fn missing_and_corrupt_models_are_refused_before_any_cpp_sees_them() {
    let opts = SessionOptions::default();
    let e = Session::open(
        std::path::Path::new("/nonexistent/m.gguf"),
        BackendChoice::Auto,
        &opts,
    )
    .err()
    .unwrap();
    assert!(matches!(e, CppError::InvalidModel { .. }), "{e}");
    assert!(e.to_string().contains("/nonexistent/m.gguf"));

    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-spm");
    let bytes = std::fs::read(&model).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() - 4096]).unwrap();
    let e = Session::open(&cut, BackendChoice::Llama, &opts)
        .err()
        .unwrap();
    assert!(matches!(e, CppError::InvalidModel { .. }), "{e}");
    assert!(e.to_string().contains("truncated"), "{e}");

    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"definitely not a model").unwrap();
    let e = Session::open(&junk, BackendChoice::Bitnet, &opts)
        .err()
        .unwrap();
    assert!(matches!(e, CppError::InvalidModel { .. }), "{e}");

    // A vocabulary-only file cannot be evaluated: said clearly, before loading.
    let e = Session::open(
        &bitnet_fixtures::vocab("llama-spm"),
        BackendChoice::Llama,
        &opts,
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("vocabulary-only"), "{e}");
}

#[test]
fn bitnet_b158_on_the_llama_backend_names_the_bitnet_backend() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), Arch::BitnetB158, GgmlType::I2_S, "llama-bpe");
    let e = Session::open(&model, BackendChoice::Llama, &SessionOptions::default())
        .err()
        .unwrap();
    match &e {
        CppError::BackendCannotLoad {
            backend,
            use_instead,
            ..
        } => {
            assert_eq!((*backend, *use_instead), (Backend::Llama, Backend::Bitnet));
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("--cpp-backend bitnet"), "{e}");
    // auto picks bitnet.cpp for it.
    let f = bitnet_gguf::GgufFile::open(&model).unwrap();
    assert_eq!(BackendChoice::Auto.resolve(&f).unwrap(), Backend::Bitnet);
}

#[test]
fn a_killed_reference_is_reported_with_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-spm");
    let mut s = open(&model, BackendChoice::Llama);
    let t = s.tokenize("hello", true, false).unwrap();
    let status = std::process::Command::new("kill")
        .arg("-9")
        .arg(s.pid().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let e = s.eval(&t).err().unwrap();
    match &e {
        CppError::Died {
            backend,
            status,
            during,
            ..
        } => {
            assert_eq!(*backend, Backend::Llama);
            assert!(status.contains("signal 9"), "{status}");
            assert_eq!(during, "eval");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn bad_requests_are_errors_and_the_reference_survives() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), Arch::Llama, GgmlType::F32, "llama-spm");
    let mut s = open(&model, BackendChoice::Llama);
    let e = s.eval(&[1, 999_999]).err().unwrap();
    assert!(
        matches!(e, CppError::Request { .. }) && e.to_string().contains("999999"),
        "{e}"
    );
    let e = s.eval(&[]).err().unwrap();
    assert!(e.to_string().contains("empty"), "{e}");
    let e = s.token_to_piece(-5, false).err().unwrap();
    assert!(e.to_string().contains("-5"), "{e}");
    // Still alive and correct afterwards.
    assert_eq!(s.eval(&[1, 2, 3]).unwrap().n_tokens, 3);
    // A capture refused by the reference, a capture abandoned half-way: typed errors, and
    // the session stays in step.
    let mut bad = s.eval_capture(&[1, 999_999], &["l_out".into()]).unwrap();
    let e = bad.next_tensor().err().unwrap();
    assert!(e.to_string().contains("999999"), "{e}");
    drop(bad);
    let mut half = s.eval_capture(&[1, 2, 3], &["l_out".into()]).unwrap();
    assert!(half.next_tensor().unwrap().is_some());
    drop(half);
    assert_eq!(s.eval(&[1, 2, 3]).unwrap().n_tokens, 3);
    let e = s.model_facts().map(|_| ()).err();
    assert!(e.is_none(), "{e:?}");
}

/// A fake reference written in shell: speaks a future protocol version, or never answers.
fn fake_reference(dir: &std::path::Path, name: &str, script: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
    let mut perm = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&path, perm).unwrap();
    path
}

#[test]
fn protocol_mismatch_and_hangs_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut hello = Vec::new();
    protocol::write_frame(
        &mut hello,
        &Response::Hello {
            protocol_version: 999,
            backend: "llama".into(),
        },
        &[],
    )
    .unwrap();
    let hello_file = dir.path().join("hello.bin");
    std::fs::write(&hello_file, &hello).unwrap();
    let future = fake_reference(
        dir.path(),
        "future",
        &format!("cat '{}'; sleep 30", hello_file.display()),
    );
    let e = Session::spawn(Backend::Llama, &future, &SessionOptions::default())
        .err()
        .unwrap();
    assert!(
        matches!(e, CppError::ProtocolMismatch { found: 999, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("rebuild"), "{e}");

    let silent = fake_reference(dir.path(), "silent", "echo 'loading...' >&2; sleep 30");
    let opts = SessionOptions {
        timeout: Duration::from_millis(500),
        ..SessionOptions::default()
    };
    let t0 = std::time::Instant::now();
    let e = Session::spawn(Backend::Llama, &silent, &opts)
        .err()
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(10));
    match &e {
        CppError::Timeout { stderr, .. } => assert_eq!(stderr, &vec!["loading...".to_string()]),
        other => panic!("{other}"),
    }

    let crash = fake_reference(
        dir.path(),
        "crash",
        "echo 'llama_model_load: loading' >&2; \
         echo '/src/ggml/src/ggml-cpu/ops.cpp:4026: GGML_ASSERT(eps >= 0.0f) failed' >&2; \
         echo '#0  0x00007f in ggml_abort () from libggml.so' >&2; \
         echo '#1  0x00007f in ggml_compute_forward_rms_norm () from libggml.so' >&2; \
         kill -ABRT $$",
    );
    let e = Session::spawn(Backend::Bitnet, &crash, &SessionOptions::default())
        .err()
        .unwrap();
    match &e {
        CppError::Died { status, stderr, .. } => {
            assert!(status.contains("SIGABRT"), "{status}");
            assert!(
                stderr.iter().any(|l| l.contains("GGML_ASSERT")),
                "{stderr:?}"
            );
        }
        other => panic!("{other}"),
    }
    // The message quotes the assertion, not the backtrace after it.
    let msg = e.to_string();
    assert!(
        msg.contains(
            "C++ said:\n    /src/ggml/src/ggml-cpu/ops.cpp:4026: GGML_ASSERT(eps >= 0.0f) failed"
        ),
        "{msg}"
    );
    assert!(!msg.contains("#1") && !msg.contains("loading"), "{msg}");

    let missing = Session::spawn(
        Backend::Llama,
        &dir.path().join("nope"),
        &SessionOptions::default(),
    )
    .err()
    .unwrap();
    assert!(matches!(missing, CppError::Spawn { .. }), "{missing}");
}

#[test]
fn the_cpp_failure_is_picked_out_of_the_stderr_tail() {
    let lines = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let tail = lines(&[
        "llm_load_print_meta: n_vocab = 32000",
        "terminate called after throwing an instance of 'std::out_of_range'",
        "  what():  unordered_map::at",
        "[New LWP 1234]",
        "#0  0x0000 in __GI_abort () at abort.c:79",
    ]);
    assert_eq!(
        bitnet_cpp::cpp_failure_lines(&tail),
        [
            "terminate called after throwing an instance of 'std::out_of_range'",
            "what():  unordered_map::at"
        ]
    );
    let abort = lines(&[
        "/x/ggml/src/ggml-cpu/binary-ops.cpp:135: binary_op: unsupported types: dst: f32, src0: f32, src1: f16",
        "a line: with a colon",
    ]);
    assert_eq!(bitnet_cpp::cpp_failure_lines(&abort).len(), 1);
    assert!(bitnet_cpp::cpp_failure_lines(&lines(&["nothing here"])).is_empty());
}
