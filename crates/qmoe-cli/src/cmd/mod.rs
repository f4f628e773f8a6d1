//! One module per subcommand.

pub mod bisect;
pub mod dequant;
pub mod gen_model;
pub mod inspect;
