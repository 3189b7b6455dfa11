//! `--data` that is not text, and a vocabulary too small for the tokenizer, are refused
//! before anything is built.

use lightning_attention::train::cli::train_main;

use crate::fixture::{TempDir, short_args};

fn error_for(data: &std::path::Path, dir: &TempDir) -> String {
    train_main(short_args(data, &dir.path().join("run"), 10, &[]))
        .expect_err("bad --data must be refused")
        .to_string()
}

#[test]
fn data_pointing_at_nothing_is_refused() {
    let dir = TempDir::new("data-missing");
    let missing = dir.path().join("no-such-corpus.txt");
    let err = error_for(&missing, &dir);
    assert!(
        err.contains("no such file or folder") && err.contains("no-such-corpus.txt"),
        "{err}"
    );
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = error_for(&empty, &dir);
    assert!(err.contains("holds no files"), "{err}");
}

#[test]
fn binary_junk_is_refused() {
    let dir = TempDir::new("data-binary");
    let junk = dir.path().join("junk.bin");
    let bytes: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&junk, &bytes).unwrap();
    let err = error_for(&junk, &dir);
    assert!(
        (err.contains("looks binary") || err.contains("not UTF-8")) && err.contains("junk.bin"),
        "{err}"
    );
    // Invalid UTF-8 without any NUL byte.
    let latin1 = dir.path().join("latin1.txt");
    std::fs::write(&latin1, b"caf\xe9 au lait\n".repeat(100)).unwrap();
    let err = error_for(&latin1, &dir);
    assert!(
        err.contains("not UTF-8") && err.contains("latin1.txt"),
        "{err}"
    );
}

#[test]
fn text_too_short_for_the_window_is_refused() {
    let dir = TempDir::new("data-short");
    let tiny = dir.path().join("tiny.txt");
    std::fs::write(&tiny, "to be or not to be\n").unwrap();
    let err = error_for(&tiny, &dir);
    assert!(err.contains("too short"), "{err}");
}

#[test]
fn a_vocabulary_smaller_than_the_tokenizers_is_refused() {
    let dir = TempDir::new("vocab-small");
    let data = crate::fixture::write_corpus(dir.path());
    let err = train_main(short_args(
        &data,
        &dir.path().join("run"),
        10,
        &["--vocab-size", "100"],
    ))
    .expect_err("--vocab-size below 256 byte tokens must be refused")
    .to_string();
    assert!(
        err.contains("--vocab-size 100") && err.contains("(256)"),
        "{err}"
    );
}
