//! Compact human-readable report (`ferrite probe`).

use crate::sysfs::format_cpu_list;
use crate::{CpuTopology, Hugepages, LoopInfo, NvmeInfo, Probe, RdmaInfo, UringInfo};
use std::fmt::{self, Display, Formatter, Write};

/// Width of the section label column.
const LABEL: usize = 10;
/// Soft limit for wrapped word lists.
const WIDTH: usize = 100;

impl Display for Probe {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let k = &self.kernel;
        let kernel = format!("{} {} {}", k.sysname, k.release, k.machine);
        line(f, "kernel", kernel.trim())?;
        notes(f, k.error.iter())?;
        cpus(f, &self.cpus)?;
        hugepages(f, &self.hugepages)?;
        uring(f, &self.io_uring)?;
        nvme(f, &self.nvme)?;
        rdma(f, &self.rdma)?;
        loops(f, &self.loops)
    }
}

fn line(f: &mut Formatter<'_>, label: &str, text: impl Display) -> fmt::Result {
    writeln!(f, "{label:<LABEL$}{text}")
}

/// Error notes, one per line under the section.
fn notes<'a>(f: &mut Formatter<'_>, errors: impl IntoIterator<Item = &'a String>) -> fmt::Result {
    errors.into_iter().try_for_each(|e| line(f, "", format_args!("! {e}")))
}

/// Words after `head`, wrapped at [`WIDTH`] with continuation lines indented.
fn wrapped<'a>(f: &mut Formatter<'_>, head: &str, words: impl Iterator<Item = &'a str>) -> fmt::Result {
    let mut cur = head.to_string();
    for w in words {
        if cur.len() + w.len() + 1 > WIDTH - LABEL && cur.len() > 2 {
            line(f, "", &cur)?;
            cur = String::from("  ");
        }
        if !cur.is_empty() && !cur.ends_with(' ') {
            cur.push(' ');
        }
        cur.push_str(w);
    }
    line(f, "", cur)
}

fn opt<T: Display>(v: Option<T>) -> String {
    v.map_or_else(|| "?".to_string(), |v| v.to_string())
}

fn cpus(f: &mut Formatter<'_>, c: &CpuTopology) -> fmt::Result {
    let nodes = format_cpu_list(&c.numa_nodes());
    let summary = format!(
        "online {} ({}), allowed {} ({}), numa nodes [{}]",
        format_cpu_list(&c.online),
        c.online.len(),
        format_cpu_list(&c.allowed),
        c.allowed.len(),
        nodes,
    );
    line(f, "cpus", summary)?;
    let topo: Vec<String> = c
        .cpus
        .iter()
        .map(|i| format!("{}:{}/{}/{}", i.cpu, opt(i.core_id), opt(i.package_id), opt(i.numa_node)))
        .collect();
    if !topo.is_empty() {
        wrapped(f, "cpu:core/pkg/node", topo.iter().map(String::as_str))?;
    }
    notes(f, c.errors.iter())
}

fn hugepages(f: &mut Formatter<'_>, h: &Hugepages) -> fmt::Result {
    let mut text = String::new();
    for s in &h.sizes {
        let _ = write!(
            text,
            "{}kB total {} free {} rsvd {} surp {}; ",
            s.size_kb, s.total, s.free, s.reserved, s.surplus
        );
    }
    if h.sizes.is_empty() {
        text.push_str("no pools; ");
    }
    let _ = write!(text, "default {}kB, Hugetlb {} kB", opt(h.default_size_kb), opt(h.hugetlb_kb));
    line(f, "hugepages", text)?;
    notes(f, h.errors.iter())
}

fn uring(f: &mut Formatter<'_>, u: &UringInfo) -> fmt::Result {
    let sysctl = opt(u.disabled_sysctl);
    if !u.available {
        let why = u.error.as_deref().unwrap_or("unknown");
        return line(f, "io_uring", format_args!("UNAVAILABLE: {why} (io_uring_disabled={sysctl})"));
    }
    let head = format!("ok, sq {} cq {}, io_uring_disabled={sysctl}", u.sq_entries, u.cq_entries);
    line(f, "io_uring", head)?;
    wrapped(f, "features:", u.enabled_features())?;
    let names: Vec<String> =
        u.opcodes.iter().map(|o| o.name.clone().unwrap_or_else(|| format!("#{}", o.code))).collect();
    let head = format!("opcodes ({}):", names.len());
    wrapped(f, &head, names.iter().map(String::as_str))?;
    notes(f, u.probe_error.iter())
}

fn nvme(f: &mut Formatter<'_>, n: &NvmeInfo) -> fmt::Result {
    if n.namespaces.is_empty() {
        line(f, "nvme", "no namespaces")?;
    }
    for ns in &n.namespaces {
        let text = format!(
            "/dev/{} {} bytes, lba {} {}",
            ns.name,
            opt(ns.size_bytes),
            opt(ns.logical_block_size),
            ns.model.as_deref().unwrap_or("")
        );
        line(f, "nvme", text.trim_end())?;
    }
    let chars = if n.char_devices.is_empty() { "none".to_string() } else { n.char_devices.join(" ") };
    line(f, "", format_args!("char devices: {chars}"))?;
    notes(f, n.errors.iter())
}

fn rdma(f: &mut Formatter<'_>, r: &RdmaInfo) -> fmt::Result {
    match r.available() {
        Ok(()) => line(f, "rdma", format_args!("available, uverbs: {}", r.uverbs.join(" ")))?,
        Err(why) => line(f, "rdma", format_args!("unavailable: {why}"))?,
    }
    for d in &r.devices {
        for p in &d.ports {
            let text = format!(
                "{} port {}: {}, {}, {} gids",
                d.name,
                p.port,
                opt(p.state.as_deref()),
                opt(p.link_layer.as_deref()),
                opt(p.gids)
            );
            line(f, "", text)?;
        }
    }
    notes(f, r.errors.iter())
}

fn loops(f: &mut Formatter<'_>, l: &LoopInfo) -> fmt::Result {
    let control = match (l.control, l.control_writable) {
        (false, _) => "no /dev/loop-control",
        (true, false) => "/dev/loop-control present (not writable)",
        (true, true) => "/dev/loop-control present (writable)",
    };
    let text = format!("{control}; {} configured, {} unbound", l.configured.len(), l.unbound.len());
    line(f, "loop", text)?;
    for d in &l.configured {
        line(f, "", format_args!("{} -> {}", d.name, opt(d.backing_file.as_deref())))?;
    }
    notes(f, l.errors.iter())
}
