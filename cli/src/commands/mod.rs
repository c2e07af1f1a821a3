//! One module per command.

pub mod containers;
pub mod gc;
pub mod import;
pub mod info;
pub mod list;
