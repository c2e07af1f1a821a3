//! Benchmarks of layerstore live in `benches/`; this library holds what
//! they and the scripts in `scripts/bench/` share: [`storegen`], a
//! generator of large containers/storage stores (also the `storegen`
//! binary).

pub mod storegen;
