//! The NVMe-oF Discovery log page (log identifier 70h): a 1024-byte
//! header (GENCTR, NUMREC, RECFMT) followed by one 1024-byte Discovery Log
//! Page Entry per reachable subsystem port.
//!
//! Invariants: RECFMT is 0; TRSVCID and TRADDR are space-padded ASCII,
//! SUBNQN is NUL-terminated UTF-8; TSAS is filled for NVMe/TCP (byte 0 =
//! SECTYPE). The page length is always `1024 * (1 + entries)`.

use super::super::spec::wire::{put_ascii, put_cstr, put_u16, put_u64};

/// Size of the Discovery log header and of each entry.
pub const DISCOVERY_ENTRY_LEN: usize = 1024;

/// TRTYPE values.
pub mod trtype {
    pub const RDMA: u8 = 1;
    pub const FC: u8 = 2;
    pub const TCP: u8 = 3;
    pub const INTRA_HOST: u8 = 0xFE;
}

/// ADRFAM values.
pub mod adrfam {
    pub const IPV4: u8 = 1;
    pub const IPV6: u8 = 2;
    pub const IB: u8 = 3;
    pub const FC: u8 = 4;
    pub const INTRA_HOST: u8 = 0xFE;
}

/// SUBTYPE values.
pub mod subtype {
    /// Referral to another discovery service.
    pub const DISCOVERY_REFERRAL: u8 = 1;
    /// An NVM subsystem with I/O controllers.
    pub const NVME: u8 = 2;
    /// The discovery subsystem answering this request.
    pub const CURRENT_DISCOVERY: u8 = 3;
}

/// TREQ values: secure channel requirement (bits 1:0) and SQ flow control.
pub mod treq {
    pub const SECURE_CHANNEL_NOT_SPECIFIED: u8 = 0b00;
    pub const SECURE_CHANNEL_REQUIRED: u8 = 0b01;
    pub const SECURE_CHANNEL_NOT_REQUIRED: u8 = 0b10;
    /// Bit 2: SQ flow control disable supported.
    pub const DISABLE_SQFLOW: u8 = 1 << 2;
}

/// NVMe/TCP TSAS SECTYPE values.
pub mod sectype {
    pub const NONE: u8 = 0;
    pub const TLS12: u8 = 1;
    pub const TLS13: u8 = 2;
}

/// EFLAGS bits.
pub mod eflags {
    /// Explicit Persistent Connection Support for Discovery.
    pub const EPCSD: u16 = 1 << 1;
    /// Duplicate Returned Information.
    pub const DUPRETINFO: u16 = 1 << 0;
}

/// One Discovery Log Page Entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryEntry {
    /// Transport Type, byte 0 ([`trtype`]).
    pub trtype: u8,
    /// Address Family, byte 1 ([`adrfam`]).
    pub adrfam: u8,
    /// Subsystem Type, byte 2 ([`subtype`]).
    pub subtype: u8,
    /// Transport Requirements, byte 3 ([`treq`]).
    pub treq: u8,
    /// Port ID, byte 4.
    pub portid: u16,
    /// Controller ID, byte 6 (0xFFFF: dynamic controller model).
    pub cntlid: u16,
    /// Admin Max SQ Size, byte 8.
    pub asqsz: u16,
    /// Entry Flags, byte 10.
    pub eflags: u16,
    /// Transport Service Identifier (TCP port), byte 32, 32 bytes.
    pub trsvcid: String,
    /// NVM Subsystem Qualified Name, byte 256.
    pub subnqn: String,
    /// Transport Address, byte 512, 256 bytes.
    pub traddr: String,
    /// NVMe/TCP TSAS Security Type, byte 768.
    pub sectype: u8,
}

impl DiscoveryEntry {
    /// A TCP entry for `subnqn` at `traddr:trsvcid` with the dynamic
    /// controller model, no secure channel required and SQ flow control
    /// disable supported.
    pub fn tcp(subnqn: &str, traddr: &str, trsvcid: &str, ipv6: bool, asqsz: u16) -> Self {
        Self {
            trtype: trtype::TCP,
            adrfam: if ipv6 { adrfam::IPV6 } else { adrfam::IPV4 },
            subtype: subtype::NVME,
            treq: treq::SECURE_CHANNEL_NOT_REQUIRED | treq::DISABLE_SQFLOW,
            portid: 1,
            cntlid: 0xFFFF,
            asqsz,
            eflags: 0,
            trsvcid: trsvcid.into(),
            subnqn: subnqn.into(),
            traddr: traddr.into(),
            sectype: sectype::NONE,
        }
    }

    /// Encodes the entry into a 1024-byte slot.
    pub fn encode_into(&self, e: &mut [u8]) {
        e[..DISCOVERY_ENTRY_LEN].fill(0);
        e[0] = self.trtype;
        e[1] = self.adrfam;
        e[2] = self.subtype;
        e[3] = self.treq;
        put_u16(e, 4, self.portid);
        put_u16(e, 6, self.cntlid);
        put_u16(e, 8, self.asqsz);
        put_u16(e, 10, self.eflags);
        put_ascii(&mut e[32..64], &self.trsvcid);
        put_cstr(&mut e[256..512], &self.subnqn);
        put_ascii(&mut e[512..768], &self.traddr);
        e[768] = self.sectype;
    }
}

/// Builds the Discovery log page: header (GENCTR u64 at 0, NUMREC u64 at
/// 8, RECFMT u16 at 16) and the entries.
pub fn discovery_log(genctr: u64, entries: &[DiscoveryEntry]) -> Vec<u8> {
    let mut b = vec![0u8; DISCOVERY_ENTRY_LEN * (1 + entries.len())];
    put_u64(&mut b, 0, genctr);
    put_u64(&mut b, 8, entries.len() as u64);
    for (slot, e) in b[DISCOVERY_ENTRY_LEN..].chunks_exact_mut(DISCOVERY_ENTRY_LEN).zip(entries) {
        e.encode_into(slot);
    }
    b
}
