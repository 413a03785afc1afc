//! ferrite: a polled, run-to-completion userspace block storage target.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod sys;
