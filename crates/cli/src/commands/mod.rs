//! One module per subcommand.

pub mod data;
pub mod model;
