//! The replication wire protocol between a primary and its bunker (and, later, its secondary).
//!
//! Frames: `len: u32` (bytes after this field), `kind: u8`, `crc: u32` (CRC32C of the body),
//! then the body, little-endian. Log bytes travel as one-sided writes at an LSN (as an RDMA
//! WRITE into a registered log region would), so the receiver never parses entries to store
//! them. Every frame is checked: a bad length, kind or CRC is a protocol error that names
//! itself and closes the link.

/// Largest frame body accepted.
pub const MAX_FRAME: usize = 4 << 20;
const HEADER: usize = 9;
/// A Write frame's bytes before its data: the header, the LSN and the data length.
pub const WRITE_HEADER: usize = HEADER + 12;

/// One message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Primary → bunker: attach to `volume` with this log geometry.
    Hello {
        /// Volume name.
        volume: String,
        /// Volume identity.
        uuid: [u8; 16],
        /// Primary's epoch.
        epoch: u64,
        /// Log sector size.
        sector: u32,
        /// Ring sectors.
        ring_sectors: u64,
        /// Where the primary's oldest needed entry is.
        head: u64,
        /// Where the primary's log ends: everything it has reserved (after a restart, the end
        /// its recovery found). A bunker of the same epoch holding entries from here on holds
        /// writes the primary never made durable, so never acknowledged: it drops them before
        /// answering, since the primary will write other entries at those LSNs. `u64::MAX`
        /// for a peer that is not the log's writer (a failover's pull).
        end: u64,
    },
    /// Bunker → primary: attached; log bytes below `durable_end` (from `head`) are held.
    HelloAck {
        /// Contiguous durable end on the bunker.
        durable_end: u64,
    },
    /// Write log bytes at `lsn` (whole sectors).
    Write {
        /// Position.
        lsn: u64,
        /// Bytes.
        data: Vec<u8>,
    },
    /// The bytes at `lsn` (`sectors` long) are durable.
    Ack {
        /// Position.
        lsn: u64,
        /// Length in sectors.
        sectors: u32,
    },
    /// Entries below `head` may be dropped.
    Trim {
        /// New head.
        head: u64,
    },
    /// Liveness probe.
    Heartbeat {
        /// Echoed back.
        seq: u64,
    },
    /// Liveness answer.
    HeartbeatAck {
        /// The probe's seq.
        seq: u64,
    },
    /// Send log bytes `[from, to)` in chunks.
    Read {
        /// Start.
        from: u64,
        /// End.
        to: u64,
    },
    /// A chunk answering `Read`.
    ReadData {
        /// Position.
        lsn: u64,
        /// Bytes.
        data: Vec<u8>,
    },
    /// Secondary → primary: entries below `lsn` are applied to the replica volume (the
    /// primary may trim them).
    Applied {
        /// Applied end.
        lsn: u64,
    },
    /// The peer has seen a newer epoch: the sender of the stale one is fenced and must stop
    /// serving the volume. The link closes after it.
    Fenced {
        /// The newer epoch.
        epoch: u64,
    },
    /// Primary → secondary (failback): volume blocks at `lba` to write as they are, before
    /// the log is applied.
    Block {
        /// First volume block.
        lba: u64,
        /// Whole volume blocks.
        data: Vec<u8>,
    },
    /// Primary → secondary: every resync Block (`blocks` in all) has been sent; the secondary
    /// echoes it once they are all durable, and only then applies the log.
    ResyncDone {
        /// Volume blocks sent.
        blocks: u64,
        /// The blocks may hold writes up to this LSN (the primary's log tail once the last
        /// was read): the replica is a consistent image only once it has applied this far.
        through: u64,
    },
    /// Primary → secondary: the secondary fell out of step; its staging log restarts at
    /// `from` (what it held is dropped), the volume blocks it may lack follow as `Block`s and
    /// then `ResyncDone`, and nothing is applied until then (the replica is not a consistent
    /// image meanwhile).
    ResyncStart {
        /// The LSN shipping resumes at.
        from: u64,
    },
    /// Secondary → bunker (auto-failover): how long has the primary of `volume` been silent?
    Watch {
        /// Volume name.
        volume: String,
    },
    /// Bunker → secondary: the answer to Watch (`u64::MAX` if no primary was ever heard).
    Seen {
        /// Milliseconds since the primary was last heard.
        silent_ms: u64,
    },
    /// The peer refuses something; the link closes after it.
    Error {
        /// Why.
        message: String,
    },
}

/// A frame that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Length beyond the limit.
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLong(usize),
    /// Unknown kind.
    #[error("unknown message kind {0}")]
    Kind(u8),
    /// Checksum mismatch.
    #[error("frame checksum mismatch")]
    Crc,
    /// Body shorter than its fields.
    #[error("truncated {0} message")]
    Truncated(&'static str),
}

struct Reader<'a> {
    b: &'a [u8],
    what: &'static str,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], WireError> {
        if self.b.len() < n {
            return Err(WireError::Truncated(self.what));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, WireError> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
}

/// The frame kind of `Msg::Write` (also written by [`Msg::encode_write`]).
const KIND_WRITE: u8 = 3;

/// Appends one frame: header (length, kind, CRC32C of the body), then the body `body` writes.
fn frame(out: &mut Vec<u8>, kind: u8, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER]);
    body(out);
    let body_len = out.len() - start - HEADER;
    let crc = crc32c::crc32c(&out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&((body_len + 5) as u32).to_le_bytes());
    out[start + 4] = kind;
    out[start + 5..start + 9].copy_from_slice(&crc.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

impl Msg {
    fn kind(&self) -> u8 {
        match self {
            Msg::Hello { .. } => 1,
            Msg::HelloAck { .. } => 2,
            Msg::Write { .. } => KIND_WRITE,
            Msg::Ack { .. } => 4,
            Msg::Trim { .. } => 5,
            Msg::Heartbeat { .. } => 6,
            Msg::HeartbeatAck { .. } => 7,
            Msg::Read { .. } => 8,
            Msg::ReadData { .. } => 9,
            Msg::Error { .. } => 10,
            Msg::Applied { .. } => 11,
            Msg::Fenced { .. } => 12,
            Msg::Block { .. } => 13,
            Msg::ResyncDone { .. } => 14,
            Msg::Watch { .. } => 15,
            Msg::Seen { .. } => 16,
            Msg::ResyncStart { .. } => 17,
        }
    }

    fn body(&self, out: &mut Vec<u8>) {
        match self {
            Msg::Hello { volume, uuid, epoch, sector, ring_sectors, head, end } => {
                put_bytes(out, volume.as_bytes());
                out.extend_from_slice(uuid);
                out.extend_from_slice(&epoch.to_le_bytes());
                out.extend_from_slice(&sector.to_le_bytes());
                out.extend_from_slice(&ring_sectors.to_le_bytes());
                out.extend_from_slice(&head.to_le_bytes());
                out.extend_from_slice(&end.to_le_bytes());
            }
            Msg::HelloAck { durable_end: v }
            | Msg::Trim { head: v }
            | Msg::Heartbeat { seq: v }
            | Msg::HeartbeatAck { seq: v }
            | Msg::Applied { lsn: v }
            | Msg::Fenced { epoch: v }
            | Msg::Seen { silent_ms: v }
            | Msg::ResyncStart { from: v } => out.extend_from_slice(&v.to_le_bytes()),
            Msg::Watch { volume } => put_bytes(out, volume.as_bytes()),
            Msg::Write { lsn, data } | Msg::ReadData { lsn, data } | Msg::Block { lba: lsn, data } => {
                out.extend_from_slice(&lsn.to_le_bytes());
                put_bytes(out, data);
            }
            Msg::ResyncDone { blocks, through } => {
                out.extend_from_slice(&blocks.to_le_bytes());
                out.extend_from_slice(&through.to_le_bytes());
            }
            Msg::Ack { lsn, sectors } => {
                out.extend_from_slice(&lsn.to_le_bytes());
                out.extend_from_slice(&sectors.to_le_bytes());
            }
            Msg::Read { from, to } => {
                out.extend_from_slice(&from.to_le_bytes());
                out.extend_from_slice(&to.to_le_bytes());
            }
            Msg::Error { message } => put_bytes(out, message.as_bytes()),
        }
    }

    /// Appends the framed message to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        frame(out, self.kind(), |out| self.body(out));
    }

    /// Appends the frame of `Msg::Write { lsn, data }` to `out` without building the message
    /// (no copy of `data` but the one into `out`).
    pub fn encode_write(lsn: u64, data: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&Msg::write_header(lsn, data));
        out.extend_from_slice(data);
    }

    /// The bytes of `Msg::Write { lsn, data }`'s frame that come before `data` (its header and
    /// the body's LSN and length): with `data` after them, the whole frame. For senders that
    /// send `data` from where it lies.
    pub fn write_header(lsn: u64, data: &[u8]) -> [u8; WRITE_HEADER] {
        let mut h = [0u8; WRITE_HEADER];
        h[..4].copy_from_slice(&((WRITE_HEADER - 4 + data.len()) as u32).to_le_bytes());
        h[4] = KIND_WRITE;
        h[9..17].copy_from_slice(&lsn.to_le_bytes());
        h[17..21].copy_from_slice(&(data.len() as u32).to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&h[HEADER..]), data);
        h[5..9].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Decodes the frame at the front of `buf`: `Ok(None)` until it is complete, else the
    /// message and the bytes it used.
    pub fn decode(buf: &[u8]) -> Result<Option<(Msg, usize)>, WireError> {
        Ok(Frame::decode(buf)?.map(|(f, used)| (f.into_msg(buf), used)))
    }
}

/// A decoded frame: a message, or a Write whose payload is left where it lies in the
/// receive buffer (the hot path: no copy and no allocation per entry).
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// Any message.
    Msg(Msg),
    /// `Msg::Write { lsn, data }` with `data` at `at..at + len` of the decoded buffer.
    Write {
        /// Its LSN.
        lsn: u64,
        /// Where the data starts in the decoded buffer.
        at: usize,
        /// Its length.
        len: usize,
    },
}

impl Frame {
    /// The message, copying a Write's data out of `buf` (the buffer it was decoded from).
    pub fn into_msg(self, buf: &[u8]) -> Msg {
        match self {
            Frame::Msg(m) => m,
            Frame::Write { lsn, at, len } => Msg::Write { lsn, data: buf[at..at + len].to_vec() },
        }
    }

    /// Shifts a Write's data position by `by` (it was decoded from a slice starting there).
    pub fn offset(self, by: usize) -> Frame {
        match self {
            Frame::Write { lsn, at, len } => Frame::Write { lsn, at: at + by, len },
            f => f,
        }
    }

    /// Decodes the frame at the front of `buf`: `Ok(None)` until it is complete, else the frame
    /// and the bytes it used.
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, WireError> {
        if buf.len() < HEADER {
            return Ok(None);
        }
        let len = u32::from_le_bytes(buf[..4].try_into().expect("4")) as usize;
        if !(5..=MAX_FRAME).contains(&len) {
            return Err(WireError::TooLong(len));
        }
        let total = 4 + len;
        if buf.len() < total {
            return Ok(None);
        }
        let body = &buf[HEADER..total];
        if crc32c::crc32c(body) != u32::from_le_bytes(buf[5..9].try_into().expect("4")) {
            return Err(WireError::Crc);
        }
        if buf[4] == KIND_WRITE {
            let mut r = Reader { b: body, what: "Write" };
            let lsn = r.u64()?;
            let len = r.u32()? as usize;
            r.take(len)?;
            return Ok(Some((Frame::Write { lsn, at: HEADER + 12, len }, total)));
        }
        Ok(Some((Frame::Msg(Msg::parse(buf[4], body)?), total)))
    }
}

impl Msg {
    fn parse(kind: u8, body: &[u8]) -> Result<Msg, WireError> {
        let names = [
            "",
            "Hello",
            "HelloAck",
            "Write",
            "Ack",
            "Trim",
            "Heartbeat",
            "HeartbeatAck",
            "Read",
            "ReadData",
            "Error",
            "Applied",
            "Fenced",
            "Block",
            "ResyncDone",
            "Watch",
            "Seen",
            "ResyncStart",
        ];
        let what =
            names.get(usize::from(kind)).copied().filter(|n| !n.is_empty()).ok_or(WireError::Kind(kind))?;
        let mut r = Reader { b: body, what };
        Ok(match kind {
            1 => Msg::Hello {
                volume: String::from_utf8_lossy(&r.bytes()?).into_owned(),
                uuid: r.take(16)?.try_into().expect("16"),
                epoch: r.u64()?,
                sector: r.u32()?,
                ring_sectors: r.u64()?,
                head: r.u64()?,
                end: r.u64()?,
            },
            2 => Msg::HelloAck { durable_end: r.u64()? },
            KIND_WRITE => unreachable!("Frame::decode keeps a Write's data in place"),
            4 => Msg::Ack { lsn: r.u64()?, sectors: r.u32()? },
            5 => Msg::Trim { head: r.u64()? },
            6 => Msg::Heartbeat { seq: r.u64()? },
            7 => Msg::HeartbeatAck { seq: r.u64()? },
            8 => Msg::Read { from: r.u64()?, to: r.u64()? },
            9 => Msg::ReadData { lsn: r.u64()?, data: r.bytes()? },
            10 => Msg::Error { message: String::from_utf8_lossy(&r.bytes()?).into_owned() },
            11 => Msg::Applied { lsn: r.u64()? },
            12 => Msg::Fenced { epoch: r.u64()? },
            13 => Msg::Block { lba: r.u64()?, data: r.bytes()? },
            14 => Msg::ResyncDone { blocks: r.u64()?, through: r.u64()? },
            15 => Msg::Watch { volume: String::from_utf8_lossy(&r.bytes()?).into_owned() },
            16 => Msg::Seen { silent_ms: r.u64()? },
            _ => Msg::ResyncStart { from: r.u64()? },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_write_encodes_the_same_without_the_message() {
        let data: Vec<u8> = (0..4608u32).map(|i| i as u8).collect();
        let (mut a, mut b) = (Vec::new(), vec![9u8; 3]);
        Msg::Write { lsn: 1 << 35, data: data.clone() }.encode(&mut a);
        Msg::encode_write(1 << 35, &data, &mut b);
        assert_eq!(&b[3..], &a[..]);
    }

    #[test]
    fn round_trips_and_partial_frames() {
        let msgs = vec![
            Msg::Hello {
                volume: "v".into(),
                uuid: [3; 16],
                epoch: 2,
                sector: 512,
                ring_sectors: 99,
                head: 7,
                end: 40,
            },
            Msg::Write { lsn: 5, data: vec![1; 1024] },
            Msg::Ack { lsn: 5, sectors: 2 },
            Msg::Error { message: "no".into() },
            Msg::Applied { lsn: 77 },
            Msg::Fenced { epoch: 3 },
            Msg::Block { lba: 9, data: vec![7; 512] },
            Msg::ResyncDone { blocks: 4, through: 1 << 40 },
            Msg::Watch { volume: "v".into() },
            Msg::Seen { silent_ms: 12 },
            Msg::ResyncStart { from: 1 << 33 },
        ];
        let mut buf = Vec::new();
        for m in &msgs {
            m.encode(&mut buf);
        }
        assert_eq!(Msg::decode(&buf[..3]), Ok(None));
        let mut off = 0;
        for m in &msgs {
            let (got, used) = Msg::decode(&buf[off..]).unwrap().unwrap();
            assert_eq!(&got, m);
            off += used;
        }
        buf[12] ^= 1;
        assert_eq!(Msg::decode(&buf), Err(WireError::Crc));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Msg::decode(&bytes);
        }
    }
}
