//! One module per command.

pub mod containers;
pub mod import;
pub mod info;
pub mod list;
pub mod run;
