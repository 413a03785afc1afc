//! Unit tests for the NVMe / NVMe-oF definitions: byte offsets of SQE,
//! CQE, fabrics and Connect data fields, status encoding, round trips.

use super::*;

fn sample_sqe() -> Sqe {
    Sqe {
        opcode: 0x01,
        flags: 0x40,
        cid: 0xBEEF,
        nsid: 7,
        cdw2: 2,
        cdw3: 3,
        mptr: 0x1122_3344_5566_7788,
        dptr: SglDescriptor::Transport { length: 8192 }.encode(),
        cdw10: 10,
        cdw11: 11,
        cdw12: 12,
        cdw13: 13,
        cdw14: 14,
        cdw15: 15,
    }
}

#[test]
fn sqe_offsets_and_round_trip() {
    let sqe = sample_sqe();
    let b = sqe.encode();
    assert_eq!(b[0], 0x01);
    assert_eq!(b[1], 0x40);
    assert_eq!(&b[2..4], &[0xEF, 0xBE]);
    assert_eq!(b[4], 7);
    assert_eq!(b[16], 0x88);
    assert_eq!(b[32..36], 8192u32.to_le_bytes());
    assert_eq!(b[39], 0x5A);
    assert_eq!(b[40], 10);
    assert_eq!(b[60], 15);
    assert_eq!(Sqe::parse(&b), sqe);
    assert_eq!(sqe.psdt(), 1);
    assert!(sqe.uses_sgl());
    assert_eq!(sqe.fuse(), 0);
}

#[test]
fn sgl_descriptors() {
    let ic = SglDescriptor::InCapsule { offset: 0, length: 4096 };
    let d = ic.encode();
    assert_eq!(d[15], 0x01);
    assert_eq!(SglDescriptor::parse(&d), Ok(ic));
    let t = SglDescriptor::Transport { length: 1 << 20 };
    assert_eq!(SglDescriptor::parse(&t.encode()), Ok(t));
    assert_eq!(t.length(), 1 << 20);
    let mut keyed = [0u8; 16];
    keyed[15] = 0x40;
    let err = SglDescriptor::parse(&keyed).unwrap_err();
    assert_eq!(err.sgl_type, 4);
    assert!(err.status().same_code(Status::SGL_DESCRIPTOR_TYPE_INVALID));
    let mut sqe = Sqe::default();
    sqe.set_sgl(ic);
    assert_eq!(sqe.psdt(), PSDT_SGL_MPTR_CONTIG);
    assert_eq!(sqe.sgl(), Ok(ic));
}

#[test]
fn cqe_offsets_and_round_trip() {
    let mut cqe = Cqe::new(0x1234, Status::INVALID_FIELD.with_dnr());
    cqe.set_result64(0xAABB_CCDD_0011_2233);
    cqe.sqhd = 5;
    cqe.sqid = 1;
    let b = cqe.to_bytes();
    assert_eq!(b[0..4], 0x0011_2233u32.to_le_bytes());
    assert_eq!(b[4..8], 0xAABB_CCDDu32.to_le_bytes());
    assert_eq!(b[8], 5);
    assert_eq!(b[10], 1);
    assert_eq!(b[12..14], 0x1234u16.to_le_bytes());
    assert_eq!(u16::from_le_bytes([b[14], b[15]]), (0x02 << 1) | (1 << 15));
    assert_eq!(Cqe::parse(&b), cqe);
    assert_eq!(cqe.result64(), 0xAABB_CCDD_0011_2233);
}

#[test]
fn status_field_bits() {
    assert_eq!(Status::SUCCESS.to_field(), 0);
    let s = Status::CONNECT_INVALID_PARAMETERS;
    assert_eq!(s.to_field(), (0x82 << 1) | (1 << 9));
    let w = Status::WRITE_FAULT.with_more().with_crd(2);
    assert_eq!(w.to_field(), (0x80 << 1) | (2 << 9) | (2 << 12) | (1 << 14));
    assert_eq!(Status::from_field(w.to_field()), w);
    assert_eq!(Status::ASYMMETRIC_ACCESS_INACCESSIBLE.to_field(), (2 << 1) | (3 << 9));
    assert_eq!(Status::from_field(1), Status::SUCCESS, "phase ignored");
    assert_eq!(Status::INVALID_LOG_PAGE.name(), Some("INVALID_LOG_PAGE"));
    assert!(Status::INVALID_QUEUE_SIZE.with_dnr().to_string().contains("dnr"));
    assert_eq!(Status::new(7, 0xC0).name(), None);
}

#[test]
fn status_round_trip_all_fields() {
    for field in 0..=u16::MAX {
        let s = Status::from_field(field);
        assert_eq!(s.to_field(), field & !1);
    }
}

#[test]
fn connect_command_fields() {
    let c = ConnectCmd { recfmt: 0, qid: 3, sqsize: 127, cattr: CATTR_DISABLE_SQFLOW, kato: 15_000 };
    let sqe = c.to_sqe(9);
    let b = sqe.encode();
    assert_eq!(b[0], 0x7F);
    assert_eq!(b[4], 0x01, "fctype");
    assert_eq!(b[42..44], 3u16.to_le_bytes());
    assert_eq!(b[44..46], 127u16.to_le_bytes());
    assert_eq!(b[46], CATTR_DISABLE_SQFLOW);
    assert_eq!(b[48..52], 15_000u32.to_le_bytes());
    assert_eq!(sqe.fctype(), FabricsType::Connect.raw());
    assert_eq!(ConnectCmd::from_sqe(&sqe), c);
    assert!(c.sqflow_disabled());
    assert_eq!(connect_invalid_param_dw0(false, connect_ipo::SQE_SQSIZE), 44);
    assert_eq!(connect_invalid_param_dw0(true, connect_ipo::DATA_SUBNQN), (1 << 16) | 256);
}

#[test]
fn property_commands() {
    let g = PropertyGet { attrib: 1, ofst: prop::CAP };
    let b = g.to_sqe(1).encode();
    assert_eq!(b[4], 0x04);
    assert_eq!(b[40], 1);
    assert_eq!(PropertyGet::from_sqe(&Sqe::parse(&b)), g);
    assert_eq!(g.size(), Some(8));
    let s = PropertySet { attrib: 0, ofst: prop::CC, value: 0x46_0001 };
    let b = s.to_sqe(2).encode();
    assert_eq!(b[4], 0x00);
    assert_eq!(b[44..48], 0x14u32.to_le_bytes());
    assert_eq!(b[48..56], 0x46_0001u64.to_le_bytes());
    assert_eq!(PropertySet::from_sqe(&Sqe::parse(&b)), s);
    assert_eq!(attrib_size(2), None);
    assert_eq!(property_size(prop::CSTS), Some(4));
    assert_eq!(property_size(0x30), None);
}

#[test]
fn connect_data_round_trip_and_errors() {
    let d = ConnectData {
        hostid: [7; 16],
        cntlid: CNTLID_DYNAMIC,
        subnqn: "nqn.2024-01.io.ferrite:sub1".into(),
        hostnqn: "nqn.2014-08.org.nvmexpress:uuid:1".into(),
    };
    let b = d.encode();
    assert_eq!(b[16..18], [0xFF, 0xFF]);
    assert_eq!(&b[256..260], b"nqn.");
    assert_eq!(&b[512..516], b"nqn.");
    assert_eq!(ConnectData::parse(&b), Ok(d));
    assert_eq!(ConnectData::parse(&b[..100]), Err(ConnectDataError::Truncated(100)));
    let mut bad = b;
    bad[512..768].fill(b'a');
    let err = ConnectData::parse(&bad).unwrap_err();
    assert_eq!(err, ConnectDataError::BadNqn { ipo: 512 });
    let (st, dw0) = err.completion();
    assert!(st.same_code(Status::CONNECT_INVALID_PARAMETERS));
    assert_eq!(dw0, (1 << 16) | 512);
}

#[test]
fn registers() {
    let cap = Cap {
        mqes: 127,
        cqr: true,
        ams: 0,
        to: 30,
        dstrd: 0,
        nssrs: false,
        css: CAP_CSS_NVM,
        bps: false,
        mpsmin: 0,
        mpsmax: 4,
    };
    let v = cap.to_u64();
    assert_eq!(v & 0xFFFF, 127);
    assert_eq!((v >> 16) & 1, 1);
    assert_eq!((v >> 24) & 0xFF, 30);
    assert_eq!((v >> 37) & 0xFF, 1);
    assert_eq!((v >> 52) & 0xF, 4);
    assert_eq!(Cap::from_u64(v), cap);
    let cc = Cc(1 | (6 << 16) | (4 << 20) | (1 << 14));
    assert!(cc.en());
    assert_eq!(cc.iosqes(), 6);
    assert_eq!(cc.iocqes(), 4);
    assert_eq!(cc.shn(), shutdown::SHN_NORMAL);
    let csts = Csts::default().with_rdy(true).with_shst(shutdown::SHST_COMPLETE);
    assert_eq!(csts.0, 0b1001);
    assert!(csts.rdy() && !csts.cfs());
    assert_eq!(csts.with_rdy(false).shst(), shutdown::SHST_COMPLETE);
    assert_eq!(VS_1_3, 0x0001_0300);
}

#[test]
fn opcode_tables() {
    assert_eq!(AdminOpcode::from_raw(0x18), Some(AdminOpcode::KeepAlive));
    assert_eq!(AdminOpcode::from_raw(0x03), None);
    assert_eq!(IoOpcode::DatasetManagement.raw(), 0x09);
    assert_eq!(FabricsType::from_raw(0x04), Some(FabricsType::PropertyGet));
    assert_eq!(FeatureId::HostIdentifier.raw(), 0x81);
    assert_eq!(LogPageId::from_raw(0x70), Some(LogPageId::Discovery));
    assert_eq!(IdentifyCns::NsIdDescriptorList.raw(), 3);
    assert_eq!(aer_dw0(aer_type::NOTICE, aer_notice::ANA_CHANGE, 0x0C), 0x0C_03_02);
}

#[test]
fn get_log_page_fields() {
    let mut sqe = Sqe {
        opcode: 0x02,
        cdw10: 0x0C | (1 << 8) | (1 << 15) | (0x3FF << 16),
        cdw11: 0x0001 | (5 << 16),
        cdw12: 0x1000,
        cdw13: 1,
        ..Sqe::default()
    };
    let g = GetLogPage::from_sqe(&sqe);
    assert_eq!(g.lid, 0x0C);
    assert_eq!(g.lsp, LSP_ANA_RGO);
    assert!(g.rae);
    assert_eq!(g.numd, 0x1_03FF);
    assert_eq!(g.len_bytes(), (0x1_03FF + 1) * 4);
    assert_eq!(g.lsi, 5);
    assert_eq!(g.lpo, (1 << 32) | 0x1000);
    let mut again = Sqe::default();
    g.apply(&mut again);
    assert_eq!(GetLogPage::from_sqe(&again), g);
    let mut h = g;
    h.set_len_bytes(512);
    assert_eq!(h.numd, 127);
    h.apply(&mut sqe);
    assert_eq!(sqe.cdw10 >> 16, 127);
}

#[test]
fn command_views() {
    let mut sqe = Sqe::default();
    let id = IdentifyCmd { cns: 3, cntid: 2, cnssid: 0, csi: 0 };
    id.apply(&mut sqe);
    assert_eq!(IdentifyCmd::from_sqe(&sqe), id);
    let rw = RwCmd { slba: 1 << 33, nlb: 7, deac: false, fua: true, lr: false };
    rw.apply(&mut sqe);
    assert_eq!(RwCmd::from_sqe(&sqe), rw);
    assert_eq!(rw.blocks(), 8);
    sqe.cdw10 = FeatureId::NumberOfQueues.raw() as u32 | (1 << 31);
    sqe.cdw11 = 3 | (5 << 16);
    let f = FeatureCmd::from_sqe(&sqe);
    assert!(f.sv);
    assert_eq!(number_of_queues_requested(f.dw11), (3, 5));
    assert_eq!(number_of_queues_dw0(3, 3), 0x0003_0003);
    sqe.cdw10 = 1;
    sqe.cdw11 = 4;
    let dsm = DsmCmd::from_sqe(&sqe);
    assert!(dsm.ad);
    assert_eq!(dsm.data_len(), 32);
    let r = DsmRange { cattr: 0, nlb: 16, slba: 99 };
    let mut data = r.encode().to_vec();
    data.extend_from_slice(&r.encode());
    assert_eq!(DsmRange::iter(&data).collect::<Vec<_>>(), vec![r, r]);
}
