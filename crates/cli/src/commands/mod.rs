//! One module per subcommand.

pub mod bench;
pub mod compare;
pub mod data;
pub mod demo;
pub mod eval;
pub mod interop;
pub mod model;
pub mod train;
