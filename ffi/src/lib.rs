//! Raw FFI bindings for ferrite: C layouts and `extern` declarations only, no logic.
//!
//! Empty until a hardware path needs it (ibverbs, NVMe passthrough); see `README.md`.
#![no_std]
