//! Pinning reactor threads to cores, through `core_affinity`.

/// Pins the calling thread to `core`; returns false (and logs) when the core does not exist or
/// the kernel refused.
pub fn pin_current_thread(core: usize) -> bool {
    let ok = core_affinity::set_for_current(core_affinity::CoreId { id: core });
    if !ok {
        tracing::warn!(core, "could not pin thread to core");
    }
    ok
}

/// Cores this process may run on.
pub fn available_cores() -> Vec<usize> {
    core_affinity::get_core_ids()
        .map(|ids| ids.into_iter().map(|c| c.id).collect())
        .unwrap_or_else(|| vec![0])
}
