//! One module per subcommand.

pub mod dequant;
pub mod gen_model;
pub mod inspect;
