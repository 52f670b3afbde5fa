//! The reference side of the protocol: the [`Engine`] a reference process implements over its
//! own C++ library, and [`serve`], which does the framing, the dispatch and the errors
//! identically for both references.
//!
//! Capabilities only one library has (the quantizer, ggml's type table, the sampler chain)
//! are trait methods whose default answers `None`; [`serve`] turns that into
//! [`Response::Unsupported`], so every backend refuses what it cannot do in the same typed
//! way.

use std::io::{self, Read, Write};

use super::{
    read_frame, write_frame, BuildFacts, Capture, ChatMessage, LoadFacts, ModelFacts,
    QuantizeProgress, QuantizeReport, QuantizeRequest, Request, Response, SamplerChainSpec,
    TensorFrame, TypeTrait, VocabFacts, WirePath, PROTOCOL_VERSION,
};
use crate::run::RunConfig;

/// A C++ library behind the protocol: each reference process implements this over its own
/// FFI, and [`serve`] does the rest (framing, dispatch, errors), identically for both.
pub trait Engine {
    /// `llama` or `bitnet`.
    fn backend(&self) -> &'static str;
    /// Load the model and create a context configured by `run`.
    ///
    /// # Errors
    /// The reason, for the client (a configuration the library refuses included).
    fn load(
        &mut self,
        model_path: &WirePath,
        n_ctx: u32,
        vocab_only: bool,
        run: &RunConfig,
    ) -> Result<LoadFacts, String>;
    /// Vocabulary facts.
    ///
    /// # Errors
    /// The reason, for the client.
    fn vocab(&mut self) -> Result<VocabFacts, String>;
    /// Tokenize.
    ///
    /// # Errors
    /// The reason, for the client.
    fn tokenize(
        &mut self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<i32>, String>;
    /// One token's piece.
    ///
    /// # Errors
    /// The reason, for the client.
    fn token_to_piece(&mut self, token: i32, special: bool) -> Result<Vec<u8>, String>;
    /// Clear the cache, evaluate `tokens` in one batch with the logits flag set on the
    /// positions `outputs` (ascending indices, already validated), return those rows.
    ///
    /// # Errors
    /// The reason, for the client.
    fn eval(&mut self, tokens: &[i32], outputs: &[u32], out: &mut Vec<f32>) -> Result<(), String>;
    /// As [`Engine::eval`], showing every graph node to `capture` through ggml's eval
    /// callback (`wants` before computing it, `offer` after, for the wanted ones).
    ///
    /// # Errors
    /// The reason, for the client; by default, that this reference cannot capture tensors.
    fn eval_capture(
        &mut self,
        tokens: &[i32],
        outputs: &[u32],
        capture: &mut Capture<'_>,
        out: &mut Vec<f32>,
    ) -> Result<(), String> {
        let _ = (tokens, outputs, capture, out);
        Err(format!(
            "the {} reference cannot capture intermediate tensors",
            self.backend()
        ))
    }
    /// The reference's view of the model ([`super::facts`]).
    ///
    /// # Errors
    /// The reason, for the client (a vocabulary-only load has no graph); by default, that
    /// this reference cannot report it.
    fn model_facts(&mut self) -> Result<ModelFacts, String> {
        Err(format!(
            "the {} reference cannot report the model's configuration",
            self.backend()
        ))
    }
    /// Evaluate one more token; one row of logits.
    ///
    /// # Errors
    /// The reason, for the client.
    fn decode_next(&mut self, token: i32, out: &mut Vec<f32>) -> Result<(), String>;
    /// Clear the cache.
    ///
    /// # Errors
    /// The reason, for the client.
    fn reset(&mut self) -> Result<(), String>;
    /// Format a conversation with a chat template.
    ///
    /// # Errors
    /// The reason, for the client.
    fn apply_chat_template(
        &mut self,
        messages: &[ChatMessage],
        add_assistant: bool,
        template: Option<&str>,
    ) -> Result<String, String>;
    /// Build facts.
    fn build(&mut self) -> BuildFacts;
    /// ggml's type table; `None` when the backend does not offer it.
    fn type_traits(&mut self) -> Option<Vec<TypeTrait>> {
        None
    }
    /// Run the library's quantizer, reporting each finished tensor to `progress`; `None`
    /// when the backend has no quantizer.
    ///
    /// # Errors
    /// The quantizer's own reason, for the client.
    fn quantize(
        &mut self,
        request: &QuantizeRequest,
        progress: &mut dyn FnMut(QuantizeProgress),
    ) -> Option<Result<QuantizeReport, String>> {
        let _ = (request, progress);
        None
    }
    /// The last lines of the library's log, attached to errors.
    fn log_tail(&self) -> Vec<String>;
    /// Vocabulary size of the loaded model (0 before load).
    fn n_vocab(&self) -> u32;
    /// Run the sampler chain on `rows` (whole rows of `n_vocab` logits) after accepting
    /// `accepted`; the chosen tokens and the chain's seed (see [`Request::Sample`]). `None`
    /// when the backend has no sampler chain.
    ///
    /// # Errors
    /// The reason, for the client.
    fn sample(
        &mut self,
        chain: &SamplerChainSpec,
        accepted: &[i32],
        rows: &[f32],
    ) -> Option<Result<(Vec<i32>, u32), String>> {
        let _ = (chain, accepted, rows);
        None
    }
    /// Generate with the sampler chain; the tokens and the chain's seed (see
    /// [`Request::Generate`]). `None` when the backend has no sampler chain.
    ///
    /// # Errors
    /// The reason, for the client.
    fn generate(
        &mut self,
        chain: &SamplerChainSpec,
        prompt: &[i32],
        n_predict: u32,
    ) -> Option<Result<(Vec<i32>, u32), String>> {
        let _ = (chain, prompt, n_predict);
        None
    }
}

/// Serve requests from `input` on `output` until shutdown or end of input.
///
/// # Errors
/// I/O errors on the pipes (the client is gone) or an undecodable request.
pub fn serve<E: Engine, R: Read, W: Write>(
    engine: &mut E,
    input: &mut R,
    output: &mut W,
) -> io::Result<()> {
    write_frame(
        output,
        &Response::Hello {
            protocol_version: PROTOCOL_VERSION,
            backend: engine.backend().to_string(),
        },
        &[],
    )?;
    let mut logits = Vec::new();
    while let Some((request, request_payload)) = read_frame::<_, Request>(input)? {
        let fail = |e: &E, message: String| Response::Error {
            message,
            log: e.log_tail(),
        };
        let unsupported = |request: &str| Response::Unsupported {
            request: request.to_string(),
        };
        let mut payload: &[f32] = &[];
        let response = match request {
            Request::Shutdown => {
                write_frame(output, &Response::Done, &[])?;
                return Ok(());
            }
            Request::Sample {
                chain,
                accepted,
                n_rows,
            } => {
                let expected = n_rows as usize * engine.n_vocab() as usize;
                if engine.n_vocab() == 0 || request_payload.len() != expected {
                    fail(
                        engine,
                        format!(
                            "sample: the payload holds {} logits, expected {n_rows} rows of {} (the loaded vocabulary)",
                            request_payload.len(),
                            engine.n_vocab()
                        ),
                    )
                } else {
                    match engine.sample(&chain, &accepted, &request_payload) {
                        None => unsupported("sample"),
                        Some(Ok((tokens, seed))) => Response::Sampled { tokens, seed },
                        Some(Err(m)) => fail(engine, m),
                    }
                }
            }
            Request::Generate {
                chain,
                prompt,
                n_predict,
            } => match engine.generate(&chain, &prompt, n_predict) {
                None => unsupported("generate"),
                Some(Ok((tokens, seed))) => Response::Sampled { tokens, seed },
                Some(Err(m)) => fail(engine, m),
            },
            Request::Load {
                model_path,
                n_ctx,
                vocab_only,
                run,
            } => match engine.load(&model_path, n_ctx, vocab_only, &run) {
                Ok(facts) => Response::Loaded(facts),
                Err(m) => fail(engine, m),
            },
            Request::VocabInfo => match engine.vocab() {
                Ok(v) => Response::Vocab(v),
                Err(m) => fail(engine, m),
            },
            Request::Tokenize {
                text,
                add_special,
                parse_special,
            } => match engine.tokenize(&text, add_special, parse_special) {
                Ok(tokens) => Response::Tokens { tokens },
                Err(m) => fail(engine, m),
            },
            Request::TokenToPiece { token, special } => match engine.token_to_piece(token, special)
            {
                Ok(bytes) => Response::Piece { bytes },
                Err(m) => fail(engine, m),
            },
            Request::Eval {
                tokens,
                outputs,
                capture,
            } => {
                let rows = output_rows(tokens.len(), outputs);
                match rows.and_then(|rows| {
                    if capture.is_empty() {
                        engine.eval(&tokens, &rows, &mut logits)?;
                    } else {
                        eval_capture(engine, &tokens, &rows, capture, &mut logits, output)?;
                    }
                    Ok(rows.len())
                }) {
                    Ok(n) => {
                        payload = &logits;
                        Response::Logits {
                            n_tokens: n as u32,
                            n_vocab: engine.n_vocab(),
                        }
                    }
                    Err(m) => fail(engine, m),
                }
            }
            Request::DecodeNext { token } => match engine.decode_next(token, &mut logits) {
                Ok(()) => {
                    payload = &logits;
                    Response::Logits {
                        n_tokens: 1,
                        n_vocab: engine.n_vocab(),
                    }
                }
                Err(m) => fail(engine, m),
            },
            Request::Reset => match engine.reset() {
                Ok(()) => Response::Done,
                Err(m) => fail(engine, m),
            },
            Request::ApplyChatTemplate {
                messages,
                add_assistant,
                template,
            } => match engine.apply_chat_template(&messages, add_assistant, template.as_deref()) {
                Ok(text) => Response::Text { text },
                Err(m) => fail(engine, m),
            },
            Request::BuildInfo => Response::Build(Box::new(engine.build())),
            Request::ModelFacts => match engine.model_facts() {
                Ok(f) => Response::Facts(Box::new(f)),
                Err(m) => fail(engine, m),
            },
            Request::TypeTraits => match engine.type_traits() {
                Some(types) => Response::TypeTraits { types },
                None => unsupported("type_traits"),
            },
            Request::Quantize(q) => {
                // Progress frames go out as the quantizer reports them; a broken pipe stops
                // the sending, and the error surfaces once the quantizer returns.
                let mut sent = Ok(());
                let result = engine.quantize(&q, &mut |p| {
                    if sent.is_ok() {
                        sent = write_frame(output, &Response::QuantizeProgress(p), &[]);
                    }
                });
                sent?;
                match result {
                    None => unsupported("quantize"),
                    Some(Ok(report)) => Response::Quantized(report),
                    Some(Err(m)) => fail(engine, m),
                }
            }
            Request::Bench {
                prompt,
                gen,
                repetitions,
            } => match bench(engine, &prompt, &gen, repetitions, &mut logits) {
                Ok((prompt_seconds, gen_seconds)) => Response::BenchTimes {
                    prompt_seconds,
                    gen_seconds,
                },
                Err(m) => fail(engine, m),
            },
        };
        write_frame(output, &response, payload)?;
    }
    Ok(())
}

/// A capturing evaluation: each captured tensor is written as a [`Response::Tensor`] frame
/// while the reference computes (the logits frame follows in [`serve`]).
fn eval_capture<E: Engine, W: Write>(
    engine: &mut E,
    tokens: &[i32],
    rows: &[u32],
    wanted: Vec<String>,
    logits: &mut Vec<f32>,
    output: &mut W,
) -> Result<(), String> {
    let mut sink = |frame: &TensorFrame, data: &[f32]| {
        write_frame(output, &Response::Tensor(frame.clone()), data)
    };
    let mut capture = Capture::new(wanted, &mut sink);
    let evaluated = engine.eval_capture(tokens, rows, &mut capture, logits);
    let sent = capture.finish();
    evaluated?;
    sent.map(|_| ())
        .map_err(|e| format!("cannot send the captured tensors: {e}"))
}

/// The output rows of an [`Request::Eval`]: `outputs` checked against `n` tokens, or all.
fn output_rows(n: usize, outputs: Option<Vec<u32>>) -> Result<Vec<u32>, String> {
    let Some(rows) = outputs else {
        return Ok((0..n as u32).collect());
    };
    if !rows.windows(2).all(|w| w[0] < w[1]) || rows.last().is_some_and(|&i| i as usize >= n) {
        return Err(format!(
            "output positions must be strictly ascending indices below {n}"
        ));
    }
    Ok(rows)
}

/// llama-bench's method inside the reference process (so no pipe transfer is timed): a
/// warm-up run, then each timed run from an empty cache; prompt runs output the last
/// position's logits only, generation runs decode one token at a time.
fn bench<E: Engine>(
    engine: &mut E,
    prompt: &[i32],
    gen: &[i32],
    repetitions: u32,
    logits: &mut Vec<f32>,
) -> Result<(Vec<f64>, Vec<f64>), String> {
    let mut prompt_seconds = Vec::new();
    if let Some(last) = prompt.len().checked_sub(1) {
        let last = [last as u32];
        engine.eval(prompt, &last, logits)?;
        for _ in 0..repetitions {
            let t = std::time::Instant::now();
            engine.eval(prompt, &last, logits)?;
            prompt_seconds.push(t.elapsed().as_secs_f64());
        }
    }
    let mut gen_seconds = Vec::new();
    if let Some(&first) = gen.first() {
        engine.reset()?;
        engine.decode_next(first, logits)?;
        for _ in 0..repetitions {
            engine.reset()?;
            let t = std::time::Instant::now();
            for &token in gen {
                engine.decode_next(token, logits)?;
            }
            gen_seconds.push(t.elapsed().as_secs_f64());
        }
    }
    Ok((prompt_seconds, gen_seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An engine with a 3-token vocabulary and none of the optional capabilities (no
    /// sampler chain, quantizer or type table), as the bitnet.cpp reference.
    struct Minimal;

    impl Engine for Minimal {
        fn backend(&self) -> &'static str {
            "bitnet"
        }
        fn load(
            &mut self,
            _: &WirePath,
            _: u32,
            _: bool,
            _: &RunConfig,
        ) -> Result<LoadFacts, String> {
            Ok(LoadFacts {
                n_vocab: 3,
                n_ctx: 0,
                n_batch: 0,
                config: None,
            })
        }
        fn vocab(&mut self) -> Result<VocabFacts, String> {
            Err("none".into())
        }
        fn tokenize(&mut self, _: &str, _: bool, _: bool) -> Result<Vec<i32>, String> {
            Ok(vec![])
        }
        fn token_to_piece(&mut self, _: i32, _: bool) -> Result<Vec<u8>, String> {
            Ok(vec![])
        }
        fn eval(&mut self, _: &[i32], _: &[u32], _: &mut Vec<f32>) -> Result<(), String> {
            Ok(())
        }
        fn decode_next(&mut self, _: i32, _: &mut Vec<f32>) -> Result<(), String> {
            Ok(())
        }
        fn reset(&mut self) -> Result<(), String> {
            Ok(())
        }
        fn apply_chat_template(
            &mut self,
            _: &[ChatMessage],
            _: bool,
            _: Option<&str>,
        ) -> Result<String, String> {
            Ok(String::new())
        }
        fn build(&mut self) -> BuildFacts {
            BuildFacts {
                backend: "bitnet".into(),
                library: String::new(),
                compiled: Default::default(),
                system_info: String::new(),
            }
        }
        fn log_tail(&self) -> Vec<String> {
            vec![]
        }
        fn n_vocab(&self) -> u32 {
            3
        }
    }

    fn chain() -> SamplerChainSpec {
        SamplerChainSpec {
            seed: 42,
            samplers: vec!["top_k".into(), "temperature".into()],
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            xtc_probability: 0.0,
            xtc_threshold: 0.1,
            typical_p: 1.0,
            temp: 0.8,
            dynatemp_range: 0.0,
            dynatemp_exponent: 1.0,
            penalty_last_n: 64,
            penalty_repeat: 1.0,
            penalty_freq: 0.0,
            penalty_present: 0.0,
            dry_multiplier: 0.0,
            dry_base: 1.75,
            dry_allowed_length: 2,
            dry_penalty_last_n: 64,
            dry_sequence_breakers: vec!["\n".into()],
            top_n_sigma: -1.0,
            min_keep: 0,
        }
    }

    /// Serve `requests` (with payloads) to `Minimal`; the answers after the hello.
    fn answers(requests: &[(Request, Vec<f32>)]) -> Vec<Response> {
        let mut input = Vec::new();
        for (r, payload) in requests {
            write_frame(&mut input, r, payload).unwrap();
        }
        let mut output = Vec::new();
        serve(&mut Minimal, &mut &input[..], &mut output).unwrap();
        let mut r = &output[..];
        let mut out = Vec::new();
        while let Some((resp, _)) = read_frame::<_, Response>(&mut r).unwrap() {
            out.push(resp);
        }
        out.remove(0);
        out
    }

    #[test]
    fn sample_requests_carry_their_logits_and_are_checked() {
        let sample = |n_rows| Request::Sample {
            chain: chain(),
            accepted: vec![1, 2],
            n_rows,
        };
        let got = answers(&[
            (sample(2), vec![0.0; 5]),
            (sample(2), vec![0.0; 6]),
            (
                Request::Generate {
                    chain: chain(),
                    prompt: vec![1],
                    n_predict: 4,
                },
                vec![],
            ),
        ]);
        match &got[0] {
            Response::Error { message, .. } => assert!(
                message.contains("5 logits, expected 2 rows of 3"),
                "{message}"
            ),
            other => panic!("expected an error, got {other:?}"),
        }
        let unsupported = |request: &str| Response::Unsupported {
            request: request.into(),
        };
        assert_eq!(got[1..], [unsupported("sample"), unsupported("generate")]);
    }

    #[test]
    fn capabilities_a_backend_lacks_are_one_typed_refusal() {
        let quantize = Request::Quantize(QuantizeRequest {
            input: WirePath::new(std::path::Path::new("in.gguf")).unwrap(),
            output: WirePath::new(std::path::Path::new("out.gguf")).unwrap(),
            ftype: 15,
            allow_requantize: false,
            n_threads: 1,
        });
        let got = answers(&[(Request::TypeTraits, vec![]), (quantize, vec![])]);
        let unsupported = |request: &str| Response::Unsupported {
            request: request.into(),
        };
        assert_eq!(got, [unsupported("type_traits"), unsupported("quantize")]);
    }

    #[test]
    fn eval_output_positions_must_ascend_within_the_tokens() {
        assert_eq!(output_rows(3, None), Ok(vec![0, 1, 2]));
        assert_eq!(output_rows(3, Some(vec![0, 2])), Ok(vec![0, 2]));
        for bad in [vec![2, 1], vec![1, 1], vec![3]] {
            assert!(output_rows(3, Some(bad)).is_err());
        }
    }
}
