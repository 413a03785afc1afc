//! The daemon's state: reactors, the DMA pool, block devices, and (later) the NVMe-oF target
//! and replication. Built from a [`Config`] at start-up; changed afterwards only through RPC.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::bdev::backend::{malloc::MallocBdev, null::NullBdev, uring::UringBdev, Geometry};
use crate::bdev::{Bdev, BdevError, BdevRegistry, RegistryError};
use crate::config::{BdevSection, Config};
use crate::reactor::Runtime;
use crate::sys::region::Backing;
use crate::sys::DmaPool;

/// Why the daemon could not start or a device could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Reactors or memory.
    #[error("start-up: {what}: {source}")]
    Startup {
        /// What failed.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A device could not be created.
    #[error("bdev {name:?}: {source}")]
    Bdev {
        /// Device name.
        name: String,
        /// Why.
        #[source]
        source: BdevError,
    },
    /// A name clash or a missing device.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The `[nvmf]` section could not be applied.
    #[error("nvmf: {0}")]
    Nvmf(String),
}

/// The running daemon.
pub struct App {
    /// Reactor threads.
    pub runtime: Runtime,
    /// Block devices.
    pub bdevs: BdevRegistry,
    /// I/O buffers.
    pub pool: DmaPool,
    /// The NVMe-oF target.
    pub nvmf: Arc<crate::nvmf::target::Target>,
    /// Replicated volumes and replication ports.
    pub replication: crate::replication::manager::Replication,
    /// Bunker logs held for primaries.
    pub bunkers: Arc<crate::replication::bunker::Bunkers>,
    /// Replica volumes this node holds.
    pub secondaries: crate::replication::secondary::Secondaries,
    /// The configuration it started with.
    pub config: Config,
    shutdown: AtomicBool,
}

impl App {
    /// Starts reactors, allocates memory and creates the configured devices.
    pub fn start(config: Config) -> Result<Arc<App>, AppError> {
        let m = &config.memory;
        let backing = if m.hugepages { Backing::PreferHuge } else { Backing::Normal };
        let pool = DmaPool::new(m.buf_size, m.buf_count, backing)
            .map_err(|source| AppError::Startup { what: "allocating the DMA buffer pool", source })?;
        let runtime = Runtime::start(config.runtime())
            .map_err(|source| AppError::Startup { what: "starting reactors", source })?;
        let nvmf = crate::nvmf::target::Target::new(pool.clone(), runtime.handles().to_vec());
        let app = Arc::new(App {
            runtime,
            bdevs: BdevRegistry::new(),
            pool,
            nvmf,
            replication: Default::default(),
            bunkers: Default::default(),
            secondaries: Default::default(),
            config,
            shutdown: AtomicBool::new(false),
        });
        for section in app.config.bdev.clone() {
            app.create_bdev(&section)?;
        }
        crate::replication::manager::examine(&app);
        crate::nvmf::setup::apply_config(&app, &app.config.nvmf.clone()).map_err(AppError::Nvmf)?;
        Ok(app)
    }

    /// Creates and registers a device.
    pub fn create_bdev(&self, section: &BdevSection) -> Result<Arc<dyn Bdev>, AppError> {
        let name = section.name().to_string();
        let wrap = |source| AppError::Bdev { name: name.clone(), source };
        if self.bdevs.get(&name).is_ok() {
            return Err(RegistryError::Exists(name).into());
        }
        let bdev: Arc<dyn Bdev> = match section {
            BdevSection::Malloc { size_mb, block_size, uuid, .. } => {
                let geo =
                    Geometry::new(&name, *block_size, blocks_of(*size_mb, *block_size).map_err(wrap)?, *uuid);
                MallocBdev::create(geo.map_err(wrap)?).map_err(wrap)?
            }
            BdevSection::Null { size_mb, block_size, uuid, .. } => {
                let geo =
                    Geometry::new(&name, *block_size, blocks_of(*size_mb, *block_size).map_err(wrap)?, *uuid);
                NullBdev::create(geo.map_err(wrap)?)
            }
            BdevSection::Uring { filename, block_size, uuid, create_size_mb, .. } => {
                if let Some(mb) = create_size_mb {
                    create_file(filename, *mb).map_err(wrap)?;
                }
                UringBdev::create(&name, filename, *block_size, *uuid, self.pool.clone()).map_err(wrap)?
            }
        };
        self.bdevs.insert(bdev.clone())?;
        tracing::info!(name, product = bdev.product_name(), blocks = bdev.num_blocks(), "bdev created");
        Ok(bdev)
    }

    /// Asks the daemon to stop.
    pub fn request_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was asked for.
    pub fn shutdown_requested(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }
}

fn blocks_of(size_mb: u64, block_size: u32) -> Result<u64, BdevError> {
    Geometry::check_block_size(block_size)?;
    let bytes =
        size_mb.checked_mul(1 << 20).ok_or_else(|| BdevError::InvalidParams("size too large".into()))?;
    if block_size == 0 || bytes % u64::from(block_size) != 0 {
        return Err(BdevError::InvalidParams(format!(
            "size {size_mb} MiB is not a multiple of block size {block_size}"
        )));
    }
    Ok(bytes / u64::from(block_size))
}

fn create_file(path: &str, size_mb: u64) -> Result<(), BdevError> {
    if std::path::Path::new(path).exists() {
        return Ok(());
    }
    // Written out in full, not sparse: first writes into holes cost the filesystem block
    // allocation and would distort latency.
    use std::io::Write;
    let os = |what: &str| {
        let what = format!("{what} {path}");
        move |source| BdevError::Os { what, source }
    };
    let mut f = std::fs::File::create(path).map_err(os("creating"))?;
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..size_mb {
        f.write_all(&chunk).map_err(os("filling"))?;
    }
    f.sync_all().map_err(os("syncing"))
}
