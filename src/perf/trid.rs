//! The target address of `ferrite perf -r`, in spdk_nvme_perf's transport ID syntax
//! (`'trtype:tcp adrfam:ipv4 traddr:127.0.0.1 trsvcid:4420 subnqn:NQN hostnqn:H ns:1'`), and
//! the core mask of `-c` (`0x2`, `1,2` or `[0-3]`).
//!
//! Keys are case-insensitive and separated by whitespace; values keep their case. A missing
//! `subnqn` means the discovery service, as in SPDK: the initiator reads its log page and
//! connects to the first NVMe subsystem it lists.

use std::net::{SocketAddr, ToSocketAddrs};

use crate::nvmf::spec::DISCOVERY_NQN;

/// The host NQN used when `-r` names none.
pub const DEFAULT_HOSTNQN: &str = "nqn.2014-08.io.ferrite:perf";

/// A parsed transport ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportId {
    /// Transport address (IP or host name).
    pub traddr: String,
    /// Transport service ID (TCP port).
    pub trsvcid: u16,
    /// Address family as given (`ipv4`, `ipv6`).
    pub adrfam: String,
    /// Subsystem NQN (the discovery NQN when none was given).
    pub subnqn: String,
    /// Host NQN.
    pub hostnqn: String,
    /// Namespace from `ns:N`, if given.
    pub nsid: Option<u32>,
}

impl TransportId {
    /// Parses spdk_nvme_perf's `-r` string.
    pub fn parse(s: &str) -> Result<TransportId, String> {
        let mut t = TransportId {
            traddr: String::new(),
            trsvcid: 4420,
            adrfam: "ipv4".into(),
            subnqn: DISCOVERY_NQN.into(),
            hostnqn: DEFAULT_HOSTNQN.into(),
            nsid: None,
        };
        for word in s.split_whitespace() {
            let (key, value) = word
                .split_once(':')
                .or_else(|| word.split_once('='))
                .ok_or_else(|| format!("-r: {word:?} is not key:value"))?;
            match key.to_ascii_lowercase().as_str() {
                "trtype" if value.eq_ignore_ascii_case("tcp") => {}
                "trtype" => return Err(format!("-r: trtype {value} is not supported (only tcp)")),
                "adrfam" => t.adrfam = value.to_ascii_lowercase(),
                "traddr" => t.traddr = value.into(),
                "trsvcid" => {
                    t.trsvcid = value.parse().map_err(|_| format!("-r: trsvcid {value:?} is not a port"))?
                }
                "subnqn" => t.subnqn = value.into(),
                "hostnqn" => t.hostnqn = value.into(),
                "ns" => {
                    t.nsid = Some(value.parse().map_err(|_| format!("-r: ns {value:?} is not a number"))?)
                }
                "priority" | "alt_traddr" => {}
                other => return Err(format!("-r: unknown key {other:?}")),
            }
        }
        if t.traddr.is_empty() {
            return Err("-r: traddr is missing".into());
        }
        Ok(t)
    }

    /// Whether this names a discovery service.
    pub fn is_discovery(&self) -> bool {
        self.subnqn == DISCOVERY_NQN
    }

    /// The socket address to connect to.
    pub fn addr(&self) -> Result<SocketAddr, String> {
        let host = self.traddr.trim_start_matches('[').trim_end_matches(']');
        (host, self.trsvcid)
            .to_socket_addrs()
            .map_err(|e| format!("resolving {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host} has no address"))
    }
}

/// Parses `-c`: a hexadecimal mask (`0x3`), a list (`0,1`, `0-3`) or a bracketed list (`[0-3]`).
pub fn parse_core_mask(s: &str) -> Result<Vec<usize>, String> {
    let s = s.trim();
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        let mask = u128::from_str_radix(hex, 16).map_err(|_| format!("bad core mask {s:?}"))?;
        let cores: Vec<usize> = (0..128).filter(|&i| mask & (1u128 << i) != 0).collect();
        if cores.is_empty() {
            return Err(format!("core mask {s} selects no core"));
        }
        return Ok(cores);
    }
    let list = s.trim_start_matches('[').trim_end_matches(']');
    let bad = || format!("bad core list {s:?} (expected e.g. 0x3, 0,1 or [0-3])");
    let mut cores = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                cores.extend(a..=b);
            }
            None => cores.push(part.parse().map_err(|_| bad())?),
        }
    }
    if cores.is_empty() {
        return Err(format!("core list {s:?} selects no core"));
    }
    Ok(cores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_spdk_syntax() {
        let t = TransportId::parse(
            "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4421 subnqn:nqn.x hostnqn:h ns:2",
        )
        .unwrap();
        assert_eq!((t.traddr.as_str(), t.trsvcid, t.subnqn.as_str()), ("127.0.0.1", 4421, "nqn.x"));
        assert_eq!((t.hostnqn.as_str(), t.nsid, t.adrfam.as_str()), ("h", Some(2), "ipv4"));
        let d = TransportId::parse("traddr:10.0.0.1").unwrap();
        assert!(d.is_discovery());
        assert_eq!(d.trsvcid, 4420);
        assert!(TransportId::parse("trtype:rdma traddr:1.2.3.4").is_err());
        assert!(TransportId::parse("trsvcid:1").is_err());
        assert!(TransportId::parse("traddr:1.2.3.4 bogus:1").is_err());
    }

    #[test]
    fn parses_core_masks() {
        assert_eq!(parse_core_mask("0x2").unwrap(), vec![1]);
        assert_eq!(parse_core_mask("0x5").unwrap(), vec![0, 2]);
        assert_eq!(parse_core_mask("[0-2]").unwrap(), vec![0, 1, 2]);
        assert_eq!(parse_core_mask("1,3").unwrap(), vec![1, 3]);
        assert!(parse_core_mask("0x0").is_err());
        assert!(parse_core_mask("x").is_err());
    }
}
