//! Output shapes, LRPE (width, init, relative positions), SRMSNorm.

use burn::tensor::{Distribution, Tensor};
use tnl_model::{LrpeConfig, SrmsNormConfig, TnlConfig};

use crate::support::{B, assert_close, to_vec, token_rows, tokens};

#[test]
fn logits_are_batch_seq_vocab() {
    let device = Default::default();
    for config in [
        TnlConfig::tiny(),
        TnlConfig::tiny()
            .with_tie_embeddings(false)
            .with_scale_embedding(false)
            .with_lrpe_layers(vec![]),
    ] {
        let model = config.init::<B>(&device);
        for (batch, seq) in [(2, 5), (1, 1), (3, 70)] {
            let t = tokens::<B>(&token_rows(batch, seq, 128, 1), &device);
            let logits = model.forward(t);
            assert_eq!(logits.dims(), [batch, seq, 128]);
            assert!(to_vec(logits).iter().all(|x| x.is_finite()));
        }
    }
}

#[test]
fn lrpe_doubles_the_qk_width_and_the_op_takes_it() {
    let device = Default::default();
    let model = TnlConfig::tiny().init::<B>(&device); // LRPE on layer 0 only
    let x = Tensor::<B, 3>::random([2, 5, 32], Distribution::Default, &device);
    let [q, k, v] = model.blocks()[0].token_mixer().project(x.clone(), None, 0);
    assert_eq!(q.dims(), [2, 4, 5, 16]);
    assert_eq!(k.dims(), [2, 4, 5, 16]);
    assert_eq!(v.dims(), [2, 4, 5, 8]);
    let [q, _, _] = model.blocks()[1].token_mixer().project(x, None, 0);
    assert_eq!(q.dims(), [2, 4, 5, 8]);

    // The released head dim with LRPE: the op gets d = 256 with e = 128.
    let model = TnlConfig::new(16, 128, 1, 1, 16).init::<B>(&device);
    let x = Tensor::<B, 3>::random([1, 3, 128], Distribution::Default, &device);
    let [q, _, v] = model.blocks()[0].token_mixer().project(x, None, 0);
    assert_eq!((q.dims()[3], v.dims()[3]), (256, 128));
    let logits = model.forward(tokens::<B>(&token_rows(1, 3, 16, 2), &device));
    assert_eq!(logits.dims(), [1, 3, 16]);
}

#[test]
fn lrpe_theta_init_and_relative_positions() {
    let device = Default::default();
    let (h, d) = (3, 4);
    let lrpe = LrpeConfig::new(h, d).init::<B>(&device);
    assert_eq!(lrpe.theta.val().dims(), [h, 1, d]);
    let theta = to_vec(lrpe.theta.val());
    for hh in 0..h {
        for j in 0..d {
            let want = 10000f64.powf(-2.0 * (hh * d + j) as f64 / (h * d) as f64);
            let got = theta[hh * d + j] as f64;
            assert!(
                (got - want).abs() <= 1e-6 * want,
                "theta[{hh},0,{j}] {got} vs {want}"
            );
        }
    }
    // q_t . k_s after LRPE depends on t - s only: shifting both by 37 changes nothing.
    let q = Tensor::<B, 4>::random([1, h, 6, d], Distribution::Default, &device);
    let k = Tensor::<B, 4>::random([1, h, 6, d], Distribution::Default, &device);
    let scores = |start: usize| {
        lrpe.forward(q.clone(), start)
            .matmul(lrpe.forward(k.clone(), start).swap_dims(2, 3))
    };
    assert_close(scores(37), scores(0), 1e-4, "LRPE scores shifted by 37");
    assert_eq!(lrpe.forward(q, 0).dims(), [1, h, 6, 2 * d]);
}

#[test]
fn srmsnorm_gives_unit_rms_and_keeps_zeros() {
    let device = Default::default();
    let norm = SrmsNormConfig::new().init();
    let x = Tensor::<B, 3>::random([2, 3, 16], Distribution::Normal(0.0, 5.0), &device);
    let y = norm.forward(x);
    let rms = to_vec(y.square().mean_dim(2).sqrt());
    assert!(rms.iter().all(|r| (r - 1.0).abs() < 1e-4), "{rms:?}");
    let zeros = norm.forward(Tensor::<B, 2>::zeros([2, 8], &device));
    assert!(to_vec(zeros).iter().all(|&v| v == 0.0));
}
