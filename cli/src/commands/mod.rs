//! One module per command.

pub mod containers;
pub mod doctor;
pub mod gc;
pub mod import;
pub mod info;
pub mod list;
pub mod oci_hook;
pub mod remount;
pub mod run;
