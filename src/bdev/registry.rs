//! The set of block devices by name. Used by the control plane only (creation, deletion,
//! lookup when a consumer opens a device); the data path holds its own `Arc` and channel.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use super::Bdev;

/// A registry operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    /// The name is taken.
    #[error("bdev {0:?} already exists")]
    Exists(String),
    /// No such device.
    #[error("bdev {0:?} not found")]
    NotFound(String),
    /// The device is in use by a consumer that must let go first.
    #[error("bdev {0:?} is in use by {1}")]
    InUse(String, String),
}

/// Block devices by name.
#[derive(Default, Debug)]
pub struct BdevRegistry {
    bdevs: RwLock<BTreeMap<String, Arc<dyn Bdev>>>,
    claims: RwLock<BTreeMap<String, String>>,
}

impl BdevRegistry {
    /// An empty registry.
    pub fn new() -> BdevRegistry {
        BdevRegistry::default()
    }

    /// Adds `bdev` under its name.
    pub fn insert(&self, bdev: Arc<dyn Bdev>) -> Result<(), RegistryError> {
        let mut map = self.bdevs.write().expect("registry lock poisoned");
        let name = bdev.name().to_string();
        if map.contains_key(&name) {
            return Err(RegistryError::Exists(name));
        }
        map.insert(name, bdev);
        Ok(())
    }

    /// Looks a device up.
    pub fn get(&self, name: &str) -> Result<Arc<dyn Bdev>, RegistryError> {
        let map = self.bdevs.read().expect("registry lock poisoned");
        map.get(name).cloned().ok_or_else(|| RegistryError::NotFound(name.to_string()))
    }

    /// Removes a device that no consumer claims.
    pub fn remove(&self, name: &str) -> Result<Arc<dyn Bdev>, RegistryError> {
        if let Some(owner) = self.claims.read().expect("claims lock poisoned").get(name) {
            return Err(RegistryError::InUse(name.to_string(), owner.clone()));
        }
        let mut map = self.bdevs.write().expect("registry lock poisoned");
        map.remove(name).ok_or_else(|| RegistryError::NotFound(name.to_string()))
    }

    /// Marks `name` as used by `owner` (a subsystem, a replicated volume).
    pub fn claim(&self, name: &str, owner: &str) -> Result<(), RegistryError> {
        self.get(name)?;
        let mut claims = self.claims.write().expect("claims lock poisoned");
        if let Some(other) = claims.get(name) {
            if other != owner {
                return Err(RegistryError::InUse(name.to_string(), other.clone()));
            }
        }
        claims.insert(name.to_string(), owner.to_string());
        Ok(())
    }

    /// Releases a claim.
    pub fn release(&self, name: &str) {
        self.claims.write().expect("claims lock poisoned").remove(name);
    }

    /// Who claims `name`, if anyone.
    pub fn claimed_by(&self, name: &str) -> Option<String> {
        self.claims.read().expect("claims lock poisoned").get(name).cloned()
    }

    /// All devices, by name.
    pub fn list(&self) -> Vec<Arc<dyn Bdev>> {
        self.bdevs.read().expect("registry lock poisoned").values().cloned().collect()
    }
}
