//! Little-endian field access, string field helpers and the `wire_enum!`
//! macro shared by the NVMe / NVMe-oF / NVMe/TCP codecs.
//!
//! Invariants: every NVMe structure is little-endian; callers pass offsets
//! that lie inside the buffer (all uses are fixed spec offsets into
//! fixed-size structures, so an out-of-bounds offset is a programming error
//! and panics like slice indexing). ASCII fields (SN, MN, FR, TRADDR,
//! TRSVCID) are space padded; NQN fields are NUL terminated UTF-8.

/// Reads a little-endian `u16` at `off`.
pub(crate) fn get_u16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

/// Reads a little-endian `u32` at `off`.
pub(crate) fn get_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Reads a little-endian `u64` at `off`.
pub(crate) fn get_u64(b: &[u8], off: usize) -> u64 {
    u64::from(get_u32(b, off)) | (u64::from(get_u32(b, off + 4)) << 32)
}

/// Writes a little-endian `u16` at `off`.
pub(crate) fn put_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

/// Writes a little-endian `u32` at `off`.
pub(crate) fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// Writes a little-endian `u64` at `off`.
pub(crate) fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// Writes a little-endian 128-bit counter at `off` (SMART log counters).
pub(crate) fn put_u128(b: &mut [u8], off: usize, v: u128) {
    b[off..off + 16].copy_from_slice(&v.to_le_bytes());
}

/// Fills `field` with `s` as printable ASCII, space padded and truncated to
/// the field width. Non-printable or non-ASCII bytes become `?`.
pub(crate) fn put_ascii(field: &mut [u8], s: &str) {
    field.fill(b' ');
    for (dst, src) in field.iter_mut().zip(s.bytes()) {
        *dst = if (0x20..=0x7e).contains(&src) { src } else { b'?' };
    }
}

/// Fills `field` with `s` as NUL-terminated UTF-8, zero padded. At most
/// `field.len() - 1` bytes are stored, cut on a character boundary, so the
/// field always holds a terminator.
pub(crate) fn put_cstr(field: &mut [u8], s: &str) {
    field.fill(0);
    let mut n = s.len().min(field.len().saturating_sub(1));
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    field[..n].copy_from_slice(&s.as_bytes()[..n]);
}

/// Reads a NUL-terminated UTF-8 field. `None` when the field has no NUL
/// terminator or the bytes before it are not UTF-8.
pub(crate) fn get_cstr(field: &[u8]) -> Option<&str> {
    let end = field.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&field[..end]).ok()
}

/// Declares a fieldless `#[repr($ty)]` enum of wire codes with
/// `from_raw(code) -> Option<Self>` and `raw(self) -> code`.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident : $repr:ty {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr($repr)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant = $value ),+
        }

        impl $name {
            /// Maps a wire code to the enum; `None` for codes not listed.
            pub const fn from_raw(value: $repr) -> Option<Self> {
                match value {
                    $( $value => Some(Self::$variant), )+
                    _ => None,
                }
            }

            /// The wire code.
            pub const fn raw(self) -> $repr {
                self as $repr
            }
        }
    };
}
pub(crate) use wire_enum;
