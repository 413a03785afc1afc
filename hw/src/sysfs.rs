//! Small, non-panicking readers for sysfs/procfs text files and cpu lists.

use std::fs;
use std::str::FromStr;

/// Reads a file and trims surrounding whitespace; the error names the path.
pub(crate) fn read_str(path: &str) -> Result<String, String> {
    fs::read_to_string(path).map(|s| s.trim().to_string()).map_err(|e| format!("{path}: {e}"))
}

/// Reads a file and parses its trimmed contents.
pub(crate) fn read_parse<T: FromStr>(path: &str) -> Result<T, String> {
    let text = read_str(path)?;
    text.parse().map_err(|_| format!("{path}: cannot parse {text:?}"))
}

/// Like [`read_parse`], but a failure is pushed onto `errors` and yields `None`.
pub(crate) fn read_opt<T: FromStr>(path: &str, errors: &mut Vec<String>) -> Option<T> {
    read_parse(path).map_err(|e| errors.push(e)).ok()
}

/// Sorted names of the entries of a directory.
pub(crate) fn list_dir(path: &str) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(path)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort_by(|a, b| natural_key(a).cmp(&natural_key(b)));
    Ok(names)
}

/// Sort key that orders `cpu2` before `cpu10`: (text prefix, trailing number, name).
fn natural_key(name: &str) -> (&str, u64, &str) {
    let prefix = name.trim_end_matches(|c: char| c.is_ascii_digit());
    let num = name[prefix.len()..].parse().unwrap_or(0);
    (prefix, num, name)
}

/// Parses a kernel cpu list such as `0-3,8,10-11` (empty input is an empty list).
pub(crate) fn parse_cpu_list(text: &str) -> Result<Vec<u32>, String> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let bad = || format!("bad cpu list element {part:?}");
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
            None => {
                let v: u32 = part.parse().map_err(|_| bad())?;
                (v, v)
            }
        };
        if hi < lo || hi - lo > 1 << 20 {
            return Err(bad());
        }
        cpus.extend(lo..=hi);
    }
    Ok(cpus)
}

/// Formats cpus as a compact kernel-style list (`0-3,8`); input need not be sorted.
pub(crate) fn format_cpu_list(cpus: &[u32]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<String> = Vec::new();
    let mut iter = sorted.into_iter().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        out.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_list_round_trip() {
        assert_eq!(parse_cpu_list("0-3,8,10-11\n").unwrap(), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse_cpu_list("").unwrap(), Vec::<u32>::new());
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("x").is_err());
        assert_eq!(format_cpu_list(&[11, 0, 1, 2, 3, 8, 10]), "0-3,8,10-11");
        assert_eq!(format_cpu_list(&[]), "");
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["cpu10", "cpu2", "cpufreq", "cpu1"];
        v.sort_by(|a, b| natural_key(a).cmp(&natural_key(b)));
        assert_eq!(v, ["cpu1", "cpu2", "cpu10", "cpufreq"]);
    }
}
