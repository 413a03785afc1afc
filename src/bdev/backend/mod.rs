//! Block device backends: `malloc` (memory), `null` (completes at once: the overhead
//! baseline) and `uring` (a file or block device through io_uring with O_DIRECT).

pub mod malloc;
pub mod null;
pub mod uring;

use super::BdevError;

/// Implements the identity half of [`Bdev`](crate::bdev::Bdev) (name, block size, blocks,
/// UUID) from a `geo: Geometry` field.
macro_rules! geometry_accessors {
    () => {
        fn name(&self) -> &str {
            &self.geo.name
        }
        fn block_size(&self) -> u32 {
            self.geo.block_size
        }
        fn num_blocks(&self) -> u64 {
            self.geo.num_blocks
        }
        fn uuid(&self) -> [u8; 16] {
            *self.geo.uuid.as_bytes()
        }
    };
}
pub(crate) use geometry_accessors;

/// What every backend is described by.
#[derive(Debug, Clone)]
pub struct Geometry {
    /// Unique name.
    pub name: String,
    /// Logical block size in bytes.
    pub block_size: u32,
    /// Capacity in blocks.
    pub num_blocks: u64,
    /// Stable identity.
    pub uuid: uuid::Uuid,
}

impl Geometry {
    /// Checks the parameters an operator gave.
    pub fn new(
        name: &str,
        block_size: u32,
        num_blocks: u64,
        uuid: Option<uuid::Uuid>,
    ) -> Result<Geometry, BdevError> {
        if name.is_empty() || name.len() > 255 || name.contains(char::is_whitespace) {
            return Err(BdevError::InvalidParams(format!("invalid bdev name {name:?}")));
        }
        Geometry::check_block_size(block_size)?;
        if num_blocks == 0 {
            return Err(BdevError::InvalidParams("a bdev needs at least one block".into()));
        }
        Ok(Geometry {
            name: name.to_string(),
            block_size,
            num_blocks,
            uuid: uuid.unwrap_or_else(uuid::Uuid::new_v4),
        })
    }

    /// Checks a logical block size.
    pub fn check_block_size(block_size: u32) -> Result<(), BdevError> {
        if !block_size.is_power_of_two() || !(512..=65536).contains(&block_size) {
            return Err(BdevError::InvalidParams(format!(
                "block_size {block_size} must be a power of two between 512 and 65536"
            )));
        }
        Ok(())
    }

    /// Capacity in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.num_blocks * u64::from(self.block_size)
    }
}
