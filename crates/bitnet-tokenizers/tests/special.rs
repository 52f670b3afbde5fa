//! BOS and special-token handling, as llama.cpp's `llama_vocab::tokenize` does it.

use bitnet_gguf::GgufFile;
use bitnet_tokenizers::{GgufTokenizer, Tokenizer};

fn open(name: &str) -> GgufTokenizer {
    GgufTokenizer::open(bitnet_fixtures::vocab(name)).expect("load")
}

#[test]
fn spm_bos_text_is_plain_unless_parse_special() {
    let tok = open("llama-spm");
    let bos = tok.bos_id().expect("llama-spm has BOS");
    // parse_special: the partition finds `<s>` and emits the control token itself.
    assert_eq!(tok.encode("<s>", false, true).unwrap(), [bos]);
    // Without it, control tokens are not matched: `<s>` is three characters of text.
    let plain = tok.encode("<s>", false, false).unwrap();
    assert!(!plain.contains(&bos), "{plain:?}");
    assert_eq!(tok.decode(&plain, false).unwrap(), "<s>");
    // add_bos (llama.cpp's add_special) plus a BOS in the text: two BOS, as llama.cpp gives.
    let doubled = tok.encode("<s>Hello", true, true).unwrap();
    assert_eq!(&doubled[..2], [bos, bos]);
    // Text after a special token gets the SPM space prefix again.
    assert_eq!(&doubled[2..], tok.encode("Hello", false, false).unwrap());
}

#[test]
fn llama3_begin_of_text_is_plain_unless_parse_special() {
    let tok = open("llama-bpe");
    let bos = tok.bos_id().unwrap();
    assert_eq!(tok.token_to_piece(bos, true).unwrap(), b"<|begin_of_text|>");
    let hello = tok.encode("Hello", false, false).unwrap();
    let parsed = tok.encode("<|begin_of_text|>Hello", false, true).unwrap();
    assert_eq!(parsed[0], bos);
    assert_eq!(&parsed[1..], hello);
    let plain = tok.encode("<|begin_of_text|>Hello", false, false).unwrap();
    assert!(!plain.contains(&bos), "{plain:?}");
    assert_eq!(tok.decode(&plain, false).unwrap(), "<|begin_of_text|>Hello");
    // A control token renders as nothing unless asked for.
    assert_eq!(tok.decode(&parsed, false).unwrap(), "Hello");
    assert_eq!(tok.decode(&parsed, true).unwrap(), "<|begin_of_text|>Hello");
    assert!(tok.is_special(bos) && !tok.is_special(hello[0]));
}

#[test]
fn llama_bpe_adds_bos_without_an_add_bos_key() {
    let path = bitnet_fixtures::vocab("llama-bpe");
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.tokenizer().unwrap().add_bos, None, "fixture changed");
    let tok = GgufTokenizer::open(&path).unwrap();
    // llama.cpp: pre-tokenizer llama-bpe sets add_bos = true when the key is absent.
    assert!(tok.add_bos_default());
    let bos = tok.bos_id().unwrap();
    assert_eq!(tok.encode("", true, false).unwrap(), [bos]);
    let with = tok.encode("Hello world", true, false).unwrap();
    assert_eq!(with[0], bos);
    assert_eq!(&with[1..], tok.encode("Hello world", false, false).unwrap());
}

#[test]
fn gpt2_add_special_adds_nothing_as_in_llama_cpp() {
    let tok = open("gpt-2");
    // BPE vocabularies default to add_bos = false; gpt-2 stores no key.
    assert!(!tok.add_bos_default() && !tok.add_eos_default());
    assert_eq!(
        tok.encode("Hello world", true, false).unwrap(),
        tok.encode("Hello world", false, false).unwrap()
    );
    assert!(tok.encode("", true, false).unwrap().is_empty());
}

#[test]
fn empty_text_gives_no_tokens_or_just_bos() {
    for &name in bitnet_fixtures::VOCABS_WITH_VECTORS {
        if matches!(name, "bert-bge" | "gemma-4") {
            continue;
        }
        let tok = open(name);
        assert!(tok.encode("", false, false).unwrap().is_empty(), "{name}");
        assert!(tok.encode("", false, true).unwrap().is_empty(), "{name}");
        let expected: Vec<u32> = if tok.add_bos_default() {
            vec![tok.bos_id().unwrap()]
        } else {
            vec![]
        };
        assert_eq!(tok.encode("", true, false).unwrap(), expected, "{name}");
    }
}

#[test]
fn smollm2_chatml_tokens_parse_as_single_control_tokens() {
    let tok = GgufTokenizer::open(bitnet_fixtures::smollm2()).expect("load SmolLM2");
    assert_eq!(tok.pre_tokenizer(), Some("smollm"));
    assert!(
        !tok.add_bos_default(),
        "the file says add_bos_token = false"
    );
    let (start, end) = (tok.bos_id().unwrap(), tok.eos_id().unwrap());
    assert_eq!(tok.token_to_piece(start, true).unwrap(), b"<|im_start|>");
    assert_eq!(tok.token_to_piece(end, true).unwrap(), b"<|im_end|>");
    let text = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n";
    let ids = tok.encode(text, false, true).unwrap();
    assert_eq!(ids[0], start);
    assert_eq!(ids.iter().filter(|&&id| id == end).count(), 1);
    assert_eq!(tok.decode(&ids, true).unwrap(), text);
    // Without parse_special the markers are text and round-trip as text.
    let plain = tok.encode(text, false, false).unwrap();
    assert!(!plain.contains(&start) && !plain.contains(&end));
    assert_eq!(tok.decode(&plain, false).unwrap(), text);
    // smollm uses the starcoder expressions: every digit is its own word.
    let digits = tok.encode("2024", false, false).unwrap();
    assert_eq!(digits.len(), 4);
}

#[test]
fn phi3_user_defined_tokens_strip_following_whitespace() {
    // llama.cpp gives every special token of a model named Phi-3 the rstrip attribute (except
    // <unk>, <s>, <|endoftext|>): whitespace after `<|user|>` is swallowed.
    let tok = open("phi-3");
    let user = tok.encode("<|user|>", false, true).unwrap();
    assert_eq!(user.len(), 1);
    assert_eq!(
        tok.encode("<|user|>  \n Hi", false, true).unwrap(),
        [user.clone(), tok.encode("Hi", false, false).unwrap()].concat()
    );
}

#[test]
fn end_of_turn_is_detected_by_text_when_no_key_names_it() {
    // Neither file has tokenizer.ggml.eot_token_id; llama.cpp reports <|eot_id|> for Llama-3
    // and <|im_end|> for ChatML vocabularies, and makes them end-of-generation tokens.
    let cases = [
        (
            GgufTokenizer::open(bitnet_fixtures::vocab("llama-bpe")).unwrap(),
            "<|eot_id|>",
        ),
        (
            GgufTokenizer::open(bitnet_fixtures::smollm2()).unwrap(),
            "<|im_end|>",
        ),
    ];
    for (tok, text) in cases {
        let eot = tok.eot_id().expect("detected");
        assert_eq!(tok.token_to_piece(eot, true).unwrap(), text.as_bytes());
        assert!(tok.is_special(eot));
        assert!(tok.eog_ids().contains(&eot) && tok.eog_ids().contains(&tok.eos_id().unwrap()));
    }
}
