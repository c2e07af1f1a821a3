//! Benchmarks of layerstore live in `benches/`; this library is empty.
