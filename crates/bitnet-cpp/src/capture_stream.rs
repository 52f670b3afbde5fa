//! The client side of the locate requests: [`Session::model_facts`] and
//! [`Session::eval_capture`], whose answer streams one captured tensor at a time
//! ([`CaptureStream`]).

use crate::protocol::{ModelFacts, Request, Response, TensorFrame};
use crate::session::{CppError, Logits, Session};

impl Session {
    /// The reference's view of the loaded model's configuration: `llama.h` getters, the GGUF
    /// metadata as loaded, and the op parameters and shapes of the graph it builds (it
    /// evaluates one token, then clears the cache).
    ///
    /// # Errors
    /// Any [`CppError`] from the exchange (a vocabulary-only session has no graph).
    pub fn model_facts(&mut self) -> Result<ModelFacts, CppError> {
        let answer = self.call(&Request::ModelFacts, "model_facts")?;
        match self.refusal(answer)? {
            (Response::Facts(f), _) => Ok(*f),
            (other, _) => Err(self.unexpected("model_facts", &other)),
        }
    }

    /// Clear the KV cache and evaluate `tokens` in one batch (logits for every position),
    /// capturing the intermediate tensors whose graph base names are in `capture`: they
    /// stream back in graph order, one at a time, through the returned [`CaptureStream`],
    /// and the logits come last. One frame is in flight at a time, so memory stays bounded
    /// whatever the model's size.
    ///
    /// # Errors
    /// Any [`CppError`] sending the request.
    pub fn eval_capture(
        &mut self,
        tokens: &[i32],
        capture: &[String],
    ) -> Result<CaptureStream<'_>, CppError> {
        let request = Request::Eval {
            tokens: tokens.to_vec(),
            outputs: None,
            capture: capture.to_vec(),
        };
        self.send(&request, &[], "eval_capture")?;
        Ok(CaptureStream {
            session: self,
            rows: tokens.len(),
            logits: None,
            done: false,
        })
    }
}

/// The answer to [`Session::eval_capture`], read frame by frame: the captured tensors, then
/// the logits. Dropping it before the end reads and discards the rest, so the session stays
/// usable.
pub struct CaptureStream<'s> {
    session: &'s mut Session,
    rows: usize,
    logits: Option<Logits>,
    done: bool,
}

impl CaptureStream<'_> {
    /// The next captured tensor and its values (f32, logical order), or `None` once the
    /// logits have arrived.
    ///
    /// # Errors
    /// Any [`CppError`]: the reference failed the evaluation, died, or answered nonsense.
    pub fn next_tensor(&mut self) -> Result<Option<(TensorFrame, Vec<f32>)>, CppError> {
        if self.done {
            return Ok(None);
        }
        let s = &mut *self.session;
        let frame = s.receive("eval_capture");
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                self.done = true;
                return Err(e);
            }
        };
        match frame {
            (Response::Tensor(t), data) => {
                let expected = if t.readable { t.n_elements() } else { 0 };
                if data.len() as u64 != expected {
                    self.done = true;
                    return Err(CppError::Unexpected {
                        backend: s.backend(),
                        during: "eval_capture".into(),
                        answer: format!(
                            "tensor {} of shape {:?} with {} values",
                            t.name,
                            t.ne,
                            data.len()
                        ),
                    });
                }
                Ok(Some((t, data)))
            }
            (Response::Logits { n_tokens, n_vocab }, data)
                if n_tokens as usize == self.rows && data.len() == self.rows * n_vocab as usize =>
            {
                self.done = true;
                self.logits = Some(Logits {
                    n_tokens: self.rows,
                    n_vocab: n_vocab as usize,
                    data,
                });
                Ok(None)
            }
            (Response::Error { message, log }, _) => {
                self.done = true;
                Err(CppError::Request {
                    backend: s.backend(),
                    message,
                    log,
                })
            }
            (other, _) => {
                self.done = true;
                Err(s.unexpected("eval_capture", &other))
            }
        }
    }

    /// Read the remaining tensors (discarding them) and return the logits.
    ///
    /// # Errors
    /// As [`CaptureStream::next_tensor`].
    pub fn finish(mut self) -> Result<Logits, CppError> {
        while self.next_tensor()?.is_some() {}
        match self.logits.take() {
            Some(l) => Ok(l),
            None => Err(CppError::Unexpected {
                backend: self.session.backend(),
                during: "eval_capture".into(),
                answer: "the stream ended without logits".into(),
            }),
        }
    }
}

impl Drop for CaptureStream<'_> {
    fn drop(&mut self) {
        while let Ok(Some(_)) = self.next_tensor() {}
    }
}
