//! eventfd and epoll, the two kernel objects an idle reactor sleeps on: a reactor in the
//! adaptive idle policy waits in `epoll_wait` on its mailbox eventfd, the eventfds of its
//! io_urings and its sockets, with a timeout set by its next timer.
//!
//! Invariant: each wrapper owns its file descriptor and closes it exactly once.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// Events one wait returns at most.
const MAX_EVENTS: usize = 64;

/// A non-blocking eventfd used as a doorbell.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// Creates a non-blocking, close-on-exec eventfd.
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd has no memory preconditions; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor owned by nobody else.
        Ok(EventFd { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Rings the doorbell.
    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own descriptor. A full counter (EAGAIN)
        // still leaves the fd readable, which is all a doorbell needs.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Clears the doorbell; returns whether it had been rung.
    pub fn drain(&self) -> bool {
        let mut value: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from our own non-blocking descriptor.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
        n == 8
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// An epoll instance; registered descriptors carry a caller-chosen `u64` token.
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    /// Creates a close-on-exec epoll instance.
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: no memory preconditions; result checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh descriptor owned by nobody else.
        Ok(Epoll { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Watches `fd` for readability (level-triggered).
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: token };
        // SAFETY: `ev` is a live epoll_event; the kernel copies it.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Watches an eventfd edge-triggered: every new notify wakes the waiter once, and the
    /// counter never needs draining (no read syscall on the polling path).
    pub fn add_edge(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: (libc::EPOLLIN | libc::EPOLLET) as u32, u64: token };
        // SAFETY: `ev` is a live epoll_event; the kernel copies it.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Stops watching `fd` (errors ignored: the fd may already be closed).
    pub fn remove(&self, fd: RawFd) {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as in `add`; a stale fd only yields an error code.
        unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut ev) };
    }

    /// Waits up to `timeout_ns` nanoseconds (`epoll_pwait2`: a reactor due again in 200 µs
    /// sleeps 200 µs, not a whole millisecond); on kernels without it, up to the timeout
    /// rounded up to a millisecond. Returns the tokens of ready descriptors.
    pub fn wait_ns(&self, timeout_ns: u64, tokens: &mut Vec<u64>) -> io::Result<()> {
        static NO_PWAIT2: AtomicBool = AtomicBool::new(false);
        if NO_PWAIT2.load(Ordering::Relaxed) {
            let ms = i32::try_from(timeout_ns.div_ceil(1_000_000)).unwrap_or(i32::MAX);
            return self.wait(ms, tokens);
        }
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS];
        let ts = libc::timespec {
            tv_sec: (timeout_ns / 1_000_000_000).min(i32::MAX as u64) as libc::time_t,
            tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: `events` has room for MAX_EVENTS entries, which is what we pass; `ts` is a
        // live timespec the kernel only reads; a null sigmask leaves the mask alone.
        let n = unsafe {
            libc::epoll_pwait2(
                self.fd.as_raw_fd(),
                events.as_mut_ptr(),
                MAX_EVENTS as i32,
                &ts,
                std::ptr::null(),
            )
        };
        if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
            NO_PWAIT2.store(true, Ordering::Relaxed);
            return self.wait_ns(timeout_ns, tokens);
        }
        ready(n, &events, tokens)
    }

    /// Waits up to `timeout_ms` (-1: forever); returns the tokens of ready descriptors.
    pub fn wait(&self, timeout_ms: i32, tokens: &mut Vec<u64>) -> io::Result<()> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS];
        // SAFETY: `events` has room for MAX_EVENTS entries, which is what we pass.
        let n = unsafe {
            libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), MAX_EVENTS as i32, timeout_ms)
        };
        ready(n, &events, tokens)
    }
}

/// The outcome of a wait that returned `n`: the tokens of the ready descriptors, nothing if a
/// signal cut the wait short, or the error.
fn ready(n: i32, events: &[libc::epoll_event], tokens: &mut Vec<u64>) -> io::Result<()> {
    if n < 0 {
        let err = io::Error::last_os_error();
        return if err.kind() == io::ErrorKind::Interrupted { Ok(()) } else { Err(err) };
    }
    tokens.extend(events[..n as usize].iter().map(|e| e.u64));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanosecond_wait_times_out_and_sees_events() {
        let ep = Epoll::new().unwrap();
        let ev = EventFd::new().unwrap();
        ep.add(ev.as_raw_fd(), 9).unwrap();
        let mut t = Vec::new();
        let start = std::time::Instant::now();
        ep.wait_ns(300_000, &mut t).unwrap();
        assert!(t.is_empty());
        assert!(start.elapsed() >= std::time::Duration::from_micros(300));
        ev.notify();
        ep.wait_ns(1_000_000_000, &mut t).unwrap();
        assert_eq!(t, vec![9]);
    }

    #[test]
    fn eventfd_wakes_epoll() {
        let ep = Epoll::new().unwrap();
        let ev = EventFd::new().unwrap();
        ep.add(ev.as_raw_fd(), 42).unwrap();
        let mut t = Vec::new();
        ep.wait(0, &mut t).unwrap();
        assert!(t.is_empty());
        ev.notify();
        ep.wait(100, &mut t).unwrap();
        assert_eq!(t, vec![42]);
        assert!(ev.drain());
        assert!(!ev.drain());
    }

    #[test]
    fn edge_triggered_eventfd_fires_on_every_notify_without_draining() {
        let ep = Epoll::new().unwrap();
        let ev = EventFd::new().unwrap();
        ep.add_edge(ev.as_raw_fd(), 7).unwrap();
        let mut t = Vec::new();
        for _ in 0..3 {
            ev.notify();
            ep.wait(100, &mut t).unwrap();
            assert_eq!(t, vec![7]);
            t.clear();
            ep.wait(0, &mut t).unwrap();
            assert!(t.is_empty(), "no new edge without a new notify");
        }
    }
}
