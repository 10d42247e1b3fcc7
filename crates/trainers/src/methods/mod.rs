//! The training methods, one per file.

pub mod at_bsl;
pub mod awp;
pub mod natural;
pub mod pgd_at;
pub mod reat;
pub mod robal;
pub mod taet;
pub mod trades;

pub use at_bsl::AtBsl;
pub use awp::Awp;
pub use natural::Natural;
pub use pgd_at::PgdAt;
pub use reat::Reat;
pub use robal::Robal;
pub use taet::Taet;
pub use trades::Trades;
