//! One module per subcommand.

pub mod bench;
pub mod compare;
pub mod curves;
pub mod data;
pub mod demo;
pub mod devices;
pub mod eval;
pub mod interop;
pub mod model;
pub mod orchestrate;
pub mod train;
