//! Next-token cross-entropy: the logits at position t predict the token at t + 1.

use burn::nn::loss::CrossEntropyLoss;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Bool, Int, Tensor, backend::Backend};

/// What a training step needs: the loss, and per-token logits and targets flattened to
/// `[batch * (seq - 1), vocab]` and `[batch * (seq - 1)]` (the shapes Burn's classification
/// metrics take).
#[derive(Debug, Clone)]
pub struct TnlTrainOutput<B: Backend> {
    /// Mean next-token cross-entropy over the non-padding targets.
    pub loss: Tensor<B, 1>,
    /// Logits of every position that has a next token.
    pub logits: Tensor<B, 2>,
    /// The next token of each of those positions.
    pub targets: Tensor<B, 1, Int>,
    /// True where the target is padding (its loss is excluded), when a mask was given.
    pub mask_pad: Option<Tensor<B, 1, Bool>>,
}

/// Flattened next-token pairs: `(logits [rows, vocab], targets [rows], padding mask of the
/// targets [rows])`, `rows = batch * (seq - 1)`.
pub type NextTokens<B> = (Tensor<B, 2>, Tensor<B, 1, Int>, Option<Tensor<B, 1, Bool>>);

/// Logits `[batch, seq, vocab]` of `tokens` `[batch, seq]` shifted by one: logits of
/// positions `0..seq-1` flattened, the tokens of `1..seq` as targets, and the padding mask
/// of the targets.
///
/// # Panics
/// If `seq < 2` (nothing to predict) or the shapes disagree.
pub fn shifted_targets<B: Backend>(
    logits: Tensor<B, 3>,
    tokens: Tensor<B, 2, Int>,
    mask_pad: Option<Tensor<B, 2, Bool>>,
) -> NextTokens<B> {
    let [batch, seq, vocab] = logits.dims();
    assert_eq!(
        tokens.dims(),
        [batch, seq],
        "shifted_cross_entropy: tokens must be [batch, seq] = [{batch}, {seq}] like the logits"
    );
    assert!(
        seq >= 2,
        "shifted_cross_entropy: needs seq >= 2 to have a next token, got {seq}"
    );
    let rows = batch * (seq - 1);
    let logits = logits.slice([0..batch, 0..seq - 1]).reshape([rows, vocab]);
    let targets = tokens.slice([0..batch, 1..seq]).reshape([rows]);
    let mask_pad = mask_pad.map(|m| m.slice([0..batch, 1..seq]).reshape([rows]));
    (logits, targets, mask_pad)
}

/// Mean cross-entropy of each position's logits against the next token.
///
/// Unmasked, this is burn-nn's `CrossEntropyLoss`. With `mask_pad` (true at padding), padding
/// targets are left out of both the sum and the count: burn-nn's pad-token option would
/// still divide by every position, so that path averages here.
pub fn shifted_cross_entropy<B: Backend>(
    logits: Tensor<B, 3>,
    tokens: Tensor<B, 2, Int>,
    mask_pad: Option<Tensor<B, 2, Bool>>,
) -> Tensor<B, 1> {
    let device = logits.device();
    let (logits, targets, mask_pad) = shifted_targets(logits, tokens, mask_pad);
    match mask_pad {
        None => CrossEntropyLoss::new(None, &device).forward(logits, targets),
        Some(mask_pad) => {
            let [rows, _] = logits.dims();
            let log_p = log_softmax(logits, 1).gather(1, targets.reshape([rows, 1]));
            let keep = mask_pad.bool_not().float();
            let nll = log_p.reshape([rows]).neg() * keep.clone();
            nll.sum() / keep.sum().clamp_min(1.0)
        }
    }
}
