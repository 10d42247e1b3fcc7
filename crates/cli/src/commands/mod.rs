//! One module per subcommand.

pub mod data;
pub mod eval;
pub mod model;
pub mod train;
