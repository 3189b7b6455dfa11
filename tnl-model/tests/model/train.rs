//! Training under Autodiff: every parameter gets a gradient, and a few optimizer steps on
//! one batch drive its loss down.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Bool, Tensor, TensorData};
use tnl_model::TnlConfig;

use crate::support::{AB, to_vec, token_rows, tokens};

/// Collects `(path, gradient values)` of every float parameter (`None`: no gradient).
pub struct Grads<'a, Bk: AutodiffBackend> {
    grads: &'a Bk::Gradients,
    path: Vec<String>,
    found: Vec<(String, Option<Vec<f32>>)>,
}

impl<Bk: AutodiffBackend> ModuleVisitor<Bk> for Grads<'_, Bk> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Bk, D>>) {
        let grad = param.val().grad(self.grads).map(to_vec);
        self.found.push((self.path.join("."), grad));
    }
}

/// Every parameter's gradient, by module path, in visiting order.
pub fn grads_by_path<Bk: AutodiffBackend, M: Module<Bk>>(
    model: &M,
    grads: &Bk::Gradients,
) -> Vec<(String, Option<Vec<f32>>)> {
    let mut visitor = Grads::<Bk> {
        grads,
        path: Vec::new(),
        found: Vec::new(),
    };
    model.visit(&mut visitor);
    visitor.found
}

#[test]
fn every_parameter_receives_a_nonzero_gradient() {
    let device = Default::default();
    for config in [
        TnlConfig::tiny(),
        TnlConfig::tiny()
            .with_tie_embeddings(false)
            .with_lrpe_layers(vec![0, 2]),
    ] {
        let model = config.init::<AB>(&device);
        let rows = token_rows(2, 10, 128, 20);
        // Some right padding, so the masked path is differentiated too.
        let mask: Vec<bool> = (0..20).map(|i| i >= 17).collect();
        let mask = Tensor::<AB, 2, Bool>::from_data(TensorData::new(mask, [2, 10]), &device);
        let loss = model.loss(tokens::<AB>(&rows, &device), Some(mask));
        let grads = loss.backward();
        let found = grads_by_path(&model, &grads);
        // embedding, per layer qkvu + out + l1 + l2 + l3, LRPE thetas, untied head.
        let expected = 1
            + 5 * config.n_layers
            + config.lrpe_layers.len()
            + usize::from(!config.tie_embeddings);
        assert_eq!(
            found.len(),
            expected,
            "{:?}",
            found.iter().map(|f| &f.0).collect::<Vec<_>>()
        );
        for (path, grad) in &found {
            let grad = grad
                .as_ref()
                .unwrap_or_else(|| panic!("{path}: no gradient"));
            let sum: f32 = grad.iter().map(|g| g.abs()).sum();
            assert!(sum.is_finite() && sum > 0.0, "{path}: |grad| sum {sum}");
        }
        assert!(found.iter().any(|(p, _)| p.contains("theta")));
    }
}

#[test]
fn a_few_adamw_steps_drive_the_loss_down() {
    let device = Default::default();
    let mut model = TnlConfig::tiny().init::<AB>(&device);
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).init();
    let batch = tokens::<AB>(&token_rows(2, 24, 128, 21), &device);
    let mut losses = Vec::new();
    for _ in 0..12 {
        let out = model.forward_train(batch.clone(), None);
        assert_eq!(out.logits.dims(), [2 * 23, 128]);
        assert_eq!(out.targets.dims(), [2 * 23]);
        losses.push(to_vec(out.loss.clone())[0]);
        let grads = GradientsParams::from_grads(out.loss.backward(), &model);
        model = optim.step(3e-3, model, grads);
    }
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(
        (first - (128f32).ln()).abs() < 0.5,
        "initial loss {first} should be near ln 128"
    );
    assert!(last < first - 1.0, "loss went {losses:?}");
}
