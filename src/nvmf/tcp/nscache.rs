//! A queue pair's view of its subsystem's namespaces: one bdev channel per namespace, opened on
//! the qpair's reactor, and the ANA state of the path the host uses.
//!
//! Refreshed only when the subsystem's generation changes (one atomic load per command), so
//! the data path never takes the subsystem lock. A namespace that stays keeps its channel;
//! one that goes is drained (its channel waits for in-flight I/O on drop).

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;

use crate::bdev::{Bdev, Channel, IoCompletion};
use crate::nvmf::spec::Status;
use crate::nvmf::subsystem::{AnaState, Subsystem};
use crate::reactor::PollCtx;

/// One namespace as a qpair sees it.
pub struct NsEntry {
    /// Namespace id.
    pub nsid: u32,
    /// Its device.
    pub bdev: Arc<dyn Bdev>,
    /// Channel on this reactor, or why it could not be opened.
    pub channel: Result<Channel, Status>,
}

/// The cache.
#[derive(Default)]
pub struct NsCache {
    generation: u64,
    /// `SUCCESS` when the path serves I/O, else the ANA path error to return.
    pub path: Status,
    entries: Vec<NsEntry>,
    watched: Vec<RawFd>,
}

impl NsCache {
    /// Brings the cache up to date with `subsys` (cheap when nothing changed).
    pub fn refresh(&mut self, cx: &mut PollCtx<'_>, subsys: &Subsystem, local: SocketAddr) {
        let generation = subsys.generation();
        if generation == self.generation {
            return;
        }
        self.generation = generation;
        self.path = match subsys.listener_state(local) {
            Some(s) if s.serves_io() => Status::SUCCESS,
            Some(AnaState::PersistentLoss) => Status::ASYMMETRIC_ACCESS_PERSISTENT_LOSS,
            Some(AnaState::Change) => Status::ASYMMETRIC_ACCESS_TRANSITION,
            _ => Status::ASYMMETRIC_ACCESS_INACCESSIBLE,
        };
        let wanted: Vec<(u32, Arc<dyn Bdev>)> =
            subsys.config().namespaces.values().map(|ns| (ns.nsid, ns.bdev.clone())).collect();
        let mut old = std::mem::take(&mut self.entries);
        for (nsid, bdev) in wanted {
            let keep = old.iter().position(|e| e.nsid == nsid && Arc::ptr_eq(&e.bdev, &bdev));
            let entry = match keep {
                Some(i) => old.swap_remove(i),
                None => self.open(cx, nsid, bdev),
            };
            self.entries.push(entry);
        }
        for gone in old {
            self.release(cx, gone);
        }
    }

    fn open(&mut self, cx: &mut PollCtx<'_>, nsid: u32, bdev: Arc<dyn Bdev>) -> NsEntry {
        let channel = Channel::new(bdev.clone()).map_err(|e| {
            tracing::error!(nsid, bdev = bdev.name(), error = %e, "cannot open a channel");
            Status::NAMESPACE_NOT_READY
        });
        for fd in channel.as_ref().map(Channel::wake_fds).unwrap_or_default() {
            if cx.watch_eventfd(fd).is_ok() {
                self.watched.push(fd);
            }
        }
        NsEntry { nsid, bdev, channel }
    }

    fn release(&mut self, cx: &mut PollCtx<'_>, entry: NsEntry) {
        for fd in entry.channel.as_ref().map(Channel::wake_fds).unwrap_or_default() {
            cx.unwatch_fd(fd);
            self.watched.retain(|&w| w != fd);
        }
        drop(entry);
    }

    /// The namespace `nsid`.
    pub fn get(&mut self, nsid: u32) -> Option<&mut NsEntry> {
        self.entries.iter_mut().find(|e| e.nsid == nsid)
    }

    /// Collects completions from every channel.
    pub fn poll(&mut self, out: &mut Vec<IoCompletion>) -> usize {
        self.entries.iter_mut().filter_map(|e| e.channel.as_mut().ok()).map(|c| c.poll(out)).sum()
    }

    /// I/O in flight on all channels.
    pub fn in_flight(&self) -> usize {
        self.entries.iter().filter_map(|e| e.channel.as_ref().ok()).map(Channel::in_flight).sum()
    }

    /// Releases every channel (waits for in-flight I/O).
    pub fn clear(&mut self, cx: &mut PollCtx<'_>) {
        for e in std::mem::take(&mut self.entries) {
            self.release(cx, e);
        }
        self.generation = 0;
    }
}
