//! Offset tests for the Identify and log page builders, focused on the
//! fields the Linux host driver checks when it connects.

use super::super::spec::ctrl_bits::*;
use super::super::spec::effects::*;
use super::super::spec::Status;
use super::*;

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

fn ctrlr_params() -> IdentifyCtrlrParams {
    IdentifyCtrlrParams {
        vid: 0x1b36,
        ssvid: 0x1af4,
        serial: "SN123".into(),
        model: "ferrite".into(),
        firmware: "0.1.0".into(),
        ieee_oui: 0x00_14_01,
        cmic: CMIC_MULTI_PORT | CMIC_MULTI_CTRL | CMIC_ANA,
        cntlid: 0x21,
        oaes: OAES_NS_ATTR | OAES_ANA_CHANGE,
        anacap: ANACAP_OPTIMIZED | ANACAP_INACCESSIBLE,
        anatt: 10,
        anagrpmax: 32,
        nanagrpid: 32,
        nn: 1024,
        max_namespaces: 1024,
        oncs: ONCS_DSM | ONCS_WRITE_ZEROES,
        vwc: true,
        subnqn: "nqn.2024-01.io.ferrite:sub".into(),
        ioccsz: (64 + 8192) / 16,
        ..IdentifyCtrlrParams::default()
    }
}

#[test]
fn identify_ctrlr_offsets_checked_by_linux_host() {
    let b = identify_ctrlr(&ctrlr_params());
    assert_eq!(u16_at(&b, 0), 0x1b36);
    assert_eq!(u16_at(&b, 2), 0x1af4);
    assert_eq!(&b[4..24], b"SN123               ");
    assert_eq!(&b[24..31], b"ferrite");
    assert_eq!(b[63], b' ');
    assert_eq!(&b[64..72], b"0.1.0   ");
    assert_eq!(b[72], 6, "rab");
    assert_eq!(&b[73..76], &[0x01, 0x14, 0x00], "ieee");
    assert_eq!(b[76], 0x0B, "cmic with ANA bit 3");
    assert_eq!(b[77], 5, "mdts");
    assert_eq!(u16_at(&b, 78), 0x21, "cntlid");
    assert_eq!(u32_at(&b, 80), 0x0001_0400, "ver");
    assert_eq!(u32_at(&b, 92), (1 << 8) | (1 << 11), "oaes");
    assert_eq!(u32_at(&b, 96), 1, "ctratt 128-bit hostid");
    assert_eq!(b[111], 1, "cntrltype I/O");
    assert_eq!(b[259], 3, "aerl");
    assert_eq!(b[261], LPA_CMD_EFFECTS | LPA_EXTENDED_DATA, "lpa");
    assert_eq!(u16_at(&b, 320), 10, "kas");
    assert_eq!(b[342], 10, "anatt");
    assert_eq!(b[343], 0b101, "anacap");
    assert_eq!(u32_at(&b, 344), 32, "anagrpmax");
    assert_eq!(u32_at(&b, 348), 32, "nanagrpid");
    assert_eq!(b[512], 0x66, "sqes");
    assert_eq!(b[513], 0x44, "cqes");
    assert_eq!(u16_at(&b, 514), 128, "maxcmd");
    assert_eq!(u32_at(&b, 516), 1024, "nn");
    assert_eq!(u16_at(&b, 520), 0b1100, "oncs");
    assert_eq!(b[525], 1, "vwc");
    assert_eq!(u32_at(&b, 536), (1 << 20) | 1, "sgls");
    assert_eq!(u32_at(&b, 540), 1024, "mnan");
    assert_eq!(&b[768..794], b"nqn.2024-01.io.ferrite:sub");
    assert_eq!(b[794], 0, "subnqn NUL terminated");
    assert_eq!(u32_at(&b, 1792), 516, "ioccsz");
    assert_eq!(u32_at(&b, 1796), 1, "iorcsz");
    assert_eq!(u16_at(&b, 1800), 0, "icdoff");
    assert_eq!(b[1803], 1, "msdbd");
    assert!(b[2048..].iter().all(|&x| x == 0));
}

#[test]
fn identify_ctrlr_discovery_and_truncation() {
    let p = IdentifyCtrlrParams {
        discovery: true,
        serial: "X".repeat(40),
        model: "m\u{e9}".into(),
        subnqn: "n".repeat(300),
        ..IdentifyCtrlrParams::default()
    };
    let b = identify_ctrlr(&p);
    assert_eq!(b[111], 2, "cntrltype discovery");
    assert!(b[4..24].iter().all(|&x| x == b'X'));
    assert_eq!(&b[24..28], b"m?? ", "non-ASCII replaced");
    assert!(b[768..1023].iter().all(|&x| x == b'n'));
    assert_eq!(b[1023], 0);
}

#[test]
fn identify_ns_offsets() {
    let p = IdentifyNsParams {
        nsze: 1 << 21,
        ncap: 1 << 21,
        nuse: 1 << 20,
        lba_data_size_shift: 12,
        nmic: 1,
        dlfeat: 0b1001,
        noiob: 256,
        nows: 31,
        anagrpid: 4,
        nsattr: 0,
        nguid: [0xAB; 16],
        eui64: [0xCD; 8],
        nvmcap: 1 << 33,
        ..IdentifyNsParams::default()
    };
    let b = identify_ns(&p);
    assert_eq!(u64_at(&b, 0), 1 << 21);
    assert_eq!(u64_at(&b, 8), 1 << 21);
    assert_eq!(u64_at(&b, 16), 1 << 20);
    assert_eq!(b[24], 1 << 4, "nsfeat optperf from nows");
    assert_eq!(b[25], 0, "nlbaf");
    assert_eq!(b[26], 0, "flbas");
    assert_eq!(b[30], 1, "nmic");
    assert_eq!(b[33], 0b1001, "dlfeat");
    assert_eq!(u16_at(&b, 46), 256, "noiob");
    assert_eq!(u64_at(&b, 48), 1 << 33, "nvmcap");
    assert_eq!(u16_at(&b, 72), 31, "nows");
    assert_eq!(u32_at(&b, 92), 4, "anagrpid");
    assert_eq!(&b[104..120], &[0xAB; 16]);
    assert_eq!(&b[120..128], &[0xCD; 8]);
    assert_eq!(b[130], 12, "lbads");
    assert!(b[132..].iter().all(|&x| x == 0));
}

#[test]
fn ns_lists() {
    let b = active_ns_list(1, &[5, 1, 3, 3, 2]);
    assert_eq!([u32_at(&b, 0), u32_at(&b, 4), u32_at(&b, 8)], [2, 3, 5]);
    assert_eq!(u32_at(&b, 12), 0);
    let many: Vec<u32> = (1..=2000).collect();
    let b = active_ns_list(0, &many);
    assert_eq!(u32_at(&b, 4092), 1024);
    let d = ns_id_descriptors(Some([1; 16]), Some([2; 16]));
    assert_eq!(&d[..4], &[nidt::NGUID, 16, 0, 0]);
    assert_eq!(&d[4..20], &[1; 16]);
    assert_eq!(&d[20..24], &[nidt::UUID, 16, 0, 0]);
    assert_eq!(&d[24..40], &[2; 16]);
    assert_eq!(d[40], 0);
    let d = ns_id_descriptors(Some([0; 16]), Some([2; 16]));
    assert_eq!(d[0], nidt::UUID, "zero NGUID omitted");
}

#[test]
fn smart_and_firmware_logs() {
    let s = SmartLog {
        data_units_read: data_units(512_001),
        host_write_commands: 7,
        power_on_hours: 3,
        ..SmartLog::default()
    };
    let b = smart_log(&s);
    assert_eq!(u16_at(&b, 1), 298);
    assert_eq!(&b[3..6], &[100, 10, 0]);
    assert_eq!(u64_at(&b, 32), 2, "data units rounded up");
    assert_eq!(u64_at(&b, 80), 7);
    assert_eq!(u64_at(&b, 128), 3);
    let f = firmware_slot_log("1.0");
    assert_eq!(f[0], 1);
    assert_eq!(&f[8..16], b"1.0     ");
    assert_eq!(error_log(4).len(), 256);
}

#[test]
fn changed_ns_and_effects_logs() {
    let b = changed_ns_list(&[3, 9]);
    assert_eq!([u32_at(&b, 0), u32_at(&b, 4), u32_at(&b, 8)], [3, 9, 0]);
    let over: Vec<u32> = (1..=1025).collect();
    let b = changed_ns_list(&over);
    assert_eq!(u32_at(&b, 0), u32::MAX);
    assert_eq!(u32_at(&b, 4), 0);
    let e = default_commands_supported_effects();
    assert_eq!(u32_at(&e, 4 * 0x06), CSUPP, "identify");
    assert_eq!(u32_at(&e, 4 * 0x18), CSUPP, "keep alive");
    assert_eq!(u32_at(&e, 4 * 0x7F), 0, "fabrics not listed");
    assert_eq!(u32_at(&e, 1024 + 4), CSUPP | LBCC, "write");
    assert_eq!(u32_at(&e, 1024 + 8), CSUPP, "read");
}

#[test]
fn ana_log_layout() {
    let groups = [
        AnaGroup { anagrpid: 1, change_count: 5, state: AnaState::Optimized, nsids: &[1, 2] },
        AnaGroup { anagrpid: 2, change_count: 6, state: AnaState::Inaccessible, nsids: &[3] },
    ];
    let b = ana_log(9, &groups, false);
    assert_eq!(b.len(), 16 + 32 + 8 + 32 + 4);
    assert_eq!(u64_at(&b, 0), 9);
    assert_eq!(u16_at(&b, 8), 2);
    assert_eq!(u32_at(&b, 16), 1);
    assert_eq!(u32_at(&b, 20), 2, "nnsids");
    assert_eq!(u64_at(&b, 24), 5);
    assert_eq!(b[32], 1, "optimized");
    assert_eq!([u32_at(&b, 48), u32_at(&b, 52)], [1, 2]);
    assert_eq!(u32_at(&b, 56), 2);
    assert_eq!(b[72], 3, "inaccessible");
    assert_eq!(u32_at(&b, 88), 3);
    let r = ana_log(9, &groups, true);
    assert_eq!(r.len(), 16 + 64);
    assert_eq!(u32_at(&r, 20), 0, "rgo: no nsids");
    assert_eq!(u32_at(&r, 48), 2, "second descriptor follows directly");
}

#[test]
fn discovery_log_layout() {
    let e = DiscoveryEntry::tcp("nqn.2024-01.io.ferrite:a", "127.0.0.1", "4420", false, 32);
    let b = discovery_log(7, &[e.clone(), e]);
    assert_eq!(b.len(), 3 * 1024);
    assert_eq!(u64_at(&b, 0), 7);
    assert_eq!(u64_at(&b, 8), 2);
    assert_eq!(u16_at(&b, 16), 0, "recfmt");
    let e = &b[1024..2048];
    assert_eq!(&e[..4], &[3, 1, 2, 0b110], "trtype adrfam subtype treq");
    assert_eq!(u16_at(e, 6), 0xFFFF);
    assert_eq!(u16_at(e, 8), 32);
    assert_eq!(&e[32..36], b"4420");
    assert_eq!(e[36], b' ');
    assert_eq!(&e[256..260], b"nqn.");
    assert_eq!(&e[512..521], b"127.0.0.1");
    assert_eq!(e[521], b' ');
    assert_eq!(e[768], 0, "sectype none");
}

#[test]
fn partial_reads() {
    let page: Vec<u8> = (0..=255u8).collect();
    assert_eq!(partial(&page, 4, 4).unwrap(), vec![4, 5, 6, 7]);
    let tail = partial(&page, 252, 8).unwrap();
    assert_eq!(tail, vec![252, 253, 254, 255, 0, 0, 0, 0]);
    assert_eq!(partial(&page, 256, 4).unwrap(), vec![0; 4]);
    assert!(partial(&page, 260, 4).unwrap_err().same_code(Status::INVALID_FIELD));
    assert!(partial(&page, 2, 4).is_err(), "unaligned lpo");
    let mut out = [0xFFu8; 8];
    assert_eq!(copy_partial(&page, 248, &mut out), Ok(8));
    assert_eq!(out[0], 248);
}
