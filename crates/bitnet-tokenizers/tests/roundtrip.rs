//! decode(encode(x)) == x on plain text, for every vocabulary, where llama.cpp's own round
//! trip holds.

use bitnet_tokenizers::{GgufTokenizer, Tokenizer};

use bitnet_fixtures::SPM_BPE_VOCABS_WITH_VECTORS as VOCABS;

/// Whether llama.cpp's detokenizer would rewrite `text` even from perfect tokens: its
/// `clean_spaces` pass (on for most BPE vocabularies) deletes the space in " ?", " !", " .",
/// " ,", " 's", " 'm", " 're", " 've" and around a lone " ' ".
fn clean_spaces_changes(text: &str) -> bool {
    [" ?", " !", " .", " ,", " 's", " 'm", " 're", " 've", " ' "]
        .iter()
        .any(|p| text.contains(p))
}

#[test]
fn plain_text_round_trips_on_every_vocabulary() {
    let mut bad = Vec::new();
    let mut checked = 0;
    for &name in VOCABS {
        let tok = GgufTokenizer::open(bitnet_fixtures::vocab(name)).expect("load");
        for (text, _) in bitnet_fixtures::test_vectors(name) {
            if tok.clean_spaces() && clean_spaces_changes(&text) {
                continue;
            }
            let ids = tok.encode(&text, false, false).expect("encode");
            let back = tok.decode(&ids, false).expect("decode");
            checked += 1;
            if back != text {
                bad.push(format!("{name}: {text:?} -> {back:?}"));
            }
        }
    }
    assert!(checked > 500, "only {checked} texts checked");
    assert!(
        bad.is_empty(),
        "{} texts do not round-trip:\n{}",
        bad.len(),
        bad.join("\n")
    );
}
