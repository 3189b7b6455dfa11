pub use lightning_op; pub use tnl_model;
