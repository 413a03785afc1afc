//! The NVMe/TCP transport: the PDU codec ([`pdu`]), the acceptor ([`listener`]), and one
//! poller per connection ([`conn`]) that runs each command through the [`request`] state
//! machine ([`exec`], [`connect`], [`io`]).

pub mod conn;
mod connect;
mod exec;
mod io;
pub mod listener;
mod nscache;
pub mod pdu;
pub mod request;

pub use io::status_of;
