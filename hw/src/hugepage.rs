//! Hugepage pools from `/sys/kernel/mm/hugepages` and `/proc/meminfo`.

use crate::sysfs::{list_dir, read_opt, read_str};
use serde::{Deserialize, Serialize};

const HP_ROOT: &str = "/sys/kernel/mm/hugepages";
const MEMINFO: &str = "/proc/meminfo";

/// One hugepage pool (`hugepages-<size>kB`). Counts are in pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HugepageSize {
    pub size_kb: u64,
    pub total: u64,
    pub free: u64,
    pub reserved: u64,
    pub surplus: u64,
}

/// All hugepage pools plus the meminfo summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hugepages {
    /// Sorted by page size.
    pub sizes: Vec<HugepageSize>,
    /// `Hugepagesize:` from /proc/meminfo (the default pool).
    pub default_size_kb: Option<u64>,
    /// `Hugetlb:` from /proc/meminfo: memory in all hugetlb pools, kB.
    pub hugetlb_kb: Option<u64>,
    pub errors: Vec<String>,
}

impl Hugepages {
    /// Reads all pools; failures are recorded in `errors`, never raised.
    pub fn gather() -> Self {
        let mut errors = Vec::new();
        let names = list_dir(HP_ROOT).unwrap_or_else(|e| {
            errors.push(format!("{HP_ROOT}: {e}"));
            Vec::new()
        });
        let mut sizes: Vec<HugepageSize> = names.iter().filter_map(|n| pool(n, &mut errors)).collect();
        sizes.sort_by_key(|s| s.size_kb);
        let meminfo = read_str(MEMINFO).unwrap_or_else(|e| {
            errors.push(e);
            String::new()
        });
        Self {
            sizes,
            default_size_kb: meminfo_kb(&meminfo, "Hugepagesize"),
            hugetlb_kb: meminfo_kb(&meminfo, "Hugetlb"),
            errors,
        }
    }

    /// The pool of the given page size, if the kernel offers it.
    pub fn size(&self, size_kb: u64) -> Option<&HugepageSize> {
        self.sizes.iter().find(|s| s.size_kb == size_kb)
    }
}

fn pool(name: &str, errors: &mut Vec<String>) -> Option<HugepageSize> {
    let size_kb = name.strip_prefix("hugepages-")?.strip_suffix("kB")?.parse().ok()?;
    let dir = format!("{HP_ROOT}/{name}");
    let mut count = |file: &str| read_opt(&format!("{dir}/{file}"), errors).unwrap_or(0);
    Some(HugepageSize {
        size_kb,
        total: count("nr_hugepages"),
        free: count("free_hugepages"),
        reserved: count("resv_hugepages"),
        surplus: count("surplus_hugepages"),
    })
}

/// The numeric value of a `/proc/meminfo` line (`Key:   123 kB`).
fn meminfo_kb(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, rest) = line.split_once(':')?;
        if k.trim() != key {
            return None;
        }
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_parse() {
        let text = "HugePages_Total:       4\nHugepagesize:       2048 kB\nHugetlb:   8192 kB\n";
        assert_eq!(meminfo_kb(text, "Hugepagesize"), Some(2048));
        assert_eq!(meminfo_kb(text, "Hugetlb"), Some(8192));
        assert_eq!(meminfo_kb(text, "HugePages_Total"), Some(4));
        assert_eq!(meminfo_kb(text, "Missing"), None);
    }
}
