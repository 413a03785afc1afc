//! Identifier spaces of NVMe Base 2.0 / NVMe-oF 1.1: admin and NVM I/O
//! opcodes, fabrics command types (fctype), feature identifiers, log page
//! identifiers, Identify CNS values, and the bit constants reported in
//! Identify Controller and the Commands Supported and Effects log.
//!
//! Invariant: every enum's discriminant is its wire code, and `from_raw`
//! returns `None` (never panics) for codes not listed, so callers can map
//! unknown codes to `INVALID_OPCODE` / `INVALID_FIELD` themselves.

use super::wire::wire_enum;

wire_enum! {
    /// Admin command set opcodes (SQE byte 0 on the admin queue).
    pub enum AdminOpcode: u8 {
        DeleteIoSq = 0x00,
        CreateIoSq = 0x01,
        GetLogPage = 0x02,
        DeleteIoCq = 0x04,
        CreateIoCq = 0x05,
        Identify = 0x06,
        Abort = 0x08,
        SetFeatures = 0x09,
        GetFeatures = 0x0A,
        AsyncEventRequest = 0x0C,
        NamespaceManagement = 0x0D,
        FirmwareCommit = 0x10,
        FirmwareImageDownload = 0x11,
        DeviceSelfTest = 0x14,
        NamespaceAttachment = 0x15,
        KeepAlive = 0x18,
        DirectiveSend = 0x19,
        DirectiveReceive = 0x1A,
        VirtualizationManagement = 0x1C,
        NvmeMiSend = 0x1D,
        NvmeMiReceive = 0x1E,
        DoorbellBufferConfig = 0x7C,
        /// Fabrics command; the command type is in `fctype` (SQE byte 4).
        Fabrics = 0x7F,
        FormatNvm = 0x80,
        SecuritySend = 0x81,
        SecurityReceive = 0x82,
        Sanitize = 0x84,
        GetLbaStatus = 0x86,
    }
}

wire_enum! {
    /// NVM command set I/O opcodes.
    pub enum IoOpcode: u8 {
        Flush = 0x00,
        Write = 0x01,
        Read = 0x02,
        WriteUncorrectable = 0x04,
        Compare = 0x05,
        WriteZeroes = 0x08,
        DatasetManagement = 0x09,
        Verify = 0x0C,
        ReservationRegister = 0x0D,
        ReservationReport = 0x0E,
        ReservationAcquire = 0x11,
        ReservationRelease = 0x15,
        Copy = 0x19,
    }
}

wire_enum! {
    /// Fabrics command types (`fctype`, SQE byte 4 when opcode is 0x7F).
    pub enum FabricsType: u8 {
        PropertySet = 0x00,
        Connect = 0x01,
        PropertyGet = 0x04,
        AuthenticationSend = 0x05,
        AuthenticationReceive = 0x06,
        Disconnect = 0x08,
    }
}

wire_enum! {
    /// Feature Identifiers (Get/Set Features CDW10 bits 7:0).
    pub enum FeatureId: u8 {
        Arbitration = 0x01,
        PowerManagement = 0x02,
        LbaRangeType = 0x03,
        TemperatureThreshold = 0x04,
        ErrorRecovery = 0x05,
        VolatileWriteCache = 0x06,
        NumberOfQueues = 0x07,
        InterruptCoalescing = 0x08,
        InterruptVectorConfiguration = 0x09,
        WriteAtomicityNormal = 0x0A,
        AsyncEventConfig = 0x0B,
        AutonomousPowerStateTransition = 0x0C,
        HostMemoryBuffer = 0x0D,
        Timestamp = 0x0E,
        KeepAliveTimer = 0x0F,
        HostControlledThermalManagement = 0x10,
        NonOperationalPowerStateConfig = 0x11,
        HostIdentifier = 0x81,
        ReservationNotificationMask = 0x82,
        ReservationPersistence = 0x83,
        NamespaceWriteProtectionConfig = 0x84,
    }
}

wire_enum! {
    /// Log Page Identifiers (Get Log Page CDW10 bits 7:0).
    pub enum LogPageId: u8 {
        SupportedLogPages = 0x00,
        Error = 0x01,
        Smart = 0x02,
        FirmwareSlot = 0x03,
        ChangedNsList = 0x04,
        CommandsSupported = 0x05,
        DeviceSelfTest = 0x06,
        TelemetryHostInitiated = 0x07,
        TelemetryControllerInitiated = 0x08,
        EnduranceGroupInformation = 0x09,
        Ana = 0x0C,
        PersistentEventLog = 0x0D,
        /// Fabrics Discovery log page.
        Discovery = 0x70,
        ReservationNotification = 0x80,
        SanitizeStatus = 0x81,
    }
}

wire_enum! {
    /// Identify Controller or Namespace Structure (CNS, CDW10 bits 7:0).
    pub enum IdentifyCns: u8 {
        /// Identify Namespace data structure for NSID.
        Namespace = 0x00,
        /// Identify Controller data structure.
        Controller = 0x01,
        /// Active Namespace ID list (NSIDs greater than CDW1.NSID).
        ActiveNsList = 0x02,
        /// Namespace Identification Descriptor list.
        NsIdDescriptorList = 0x03,
        /// NVM Set list.
        NvmSetList = 0x04,
        /// I/O Command Set specific Identify Namespace.
        IoCommandSetNamespace = 0x05,
        /// I/O Command Set specific Identify Controller.
        IoCommandSetController = 0x06,
        /// I/O Command Set specific active NSID list.
        IoCommandSetActiveNsList = 0x07,
        /// I/O Command Set Independent Identify Namespace.
        IndependentNamespace = 0x08,
        AllocatedNsList = 0x10,
        AllocatedNamespace = 0x11,
        NsAttachedControllerList = 0x12,
        ControllerList = 0x13,
        /// Identify I/O Command Set data structure.
        IoCommandSet = 0x1C,
    }
}

/// Asynchronous Event Types (AER completion dw0 bits 2:0).
pub mod aer_type {
    pub const ERROR: u8 = 0x0;
    pub const SMART_HEALTH: u8 = 0x1;
    pub const NOTICE: u8 = 0x2;
    pub const IMMEDIATE: u8 = 0x3;
    pub const IO_COMMAND_SPECIFIC: u8 = 0x6;
    pub const VENDOR_SPECIFIC: u8 = 0x7;
}

/// Asynchronous Event Information for [`aer_type::NOTICE`].
pub mod aer_notice {
    pub const NAMESPACE_ATTRIBUTE_CHANGED: u8 = 0x00;
    pub const FIRMWARE_ACTIVATION_STARTING: u8 = 0x01;
    pub const TELEMETRY_LOG_CHANGED: u8 = 0x02;
    pub const ANA_CHANGE: u8 = 0x03;
    pub const PREDICTABLE_LATENCY_AGGREGATE_CHANGE: u8 = 0x04;
    pub const LBA_STATUS_INFORMATION_ALERT: u8 = 0x05;
    pub const ENDURANCE_GROUP_EVENT_AGGREGATE_CHANGE: u8 = 0x06;
    pub const DISCOVERY_LOG_PAGE_CHANGE: u8 = 0xF0;
}

/// Completion dword 0 of an Asynchronous Event Request: event type (bits
/// 2:0), event information (bits 15:8) and the log page to read (23:16).
pub const fn aer_dw0(event_type: u8, info: u8, lid: u8) -> u32 {
    (event_type as u32 & 0x7) | ((info as u32) << 8) | ((lid as u32) << 16)
}

/// Bits of Identify Controller fields.
pub mod ctrl_bits {
    /// CMIC bit 0: NVM subsystem may have two or more ports.
    pub const CMIC_MULTI_PORT: u8 = 1 << 0;
    /// CMIC bit 1: NVM subsystem may have two or more controllers.
    pub const CMIC_MULTI_CTRL: u8 = 1 << 1;
    /// CMIC bit 3: Asymmetric Namespace Access Reporting.
    pub const CMIC_ANA: u8 = 1 << 3;
    /// OAES bit 8: Namespace Attribute Notices.
    pub const OAES_NS_ATTR: u32 = 1 << 8;
    /// OAES bit 11: Asymmetric Namespace Access Change Notices.
    pub const OAES_ANA_CHANGE: u32 = 1 << 11;
    /// OAES bit 31: Discovery Log Page Change Notification.
    pub const OAES_DISC_LOG_CHANGE: u32 = 1 << 31;
    /// CTRATT bit 0: 128-bit Host Identifier.
    pub const CTRATT_HOST_ID_128: u32 = 1 << 0;
    /// LPA bit 0: SMART / Health log per namespace.
    pub const LPA_SMART_PER_NS: u8 = 1 << 0;
    /// LPA bit 1: Commands Supported and Effects log page.
    pub const LPA_CMD_EFFECTS: u8 = 1 << 1;
    /// LPA bit 2: extended data for Get Log Page (NUMDU, LPOL/LPOU).
    pub const LPA_EXTENDED_DATA: u8 = 1 << 2;
    /// ONCS bit 0: Compare.
    pub const ONCS_COMPARE: u16 = 1 << 0;
    /// ONCS bit 2: Dataset Management.
    pub const ONCS_DSM: u16 = 1 << 2;
    /// ONCS bit 3: Write Zeroes.
    pub const ONCS_WRITE_ZEROES: u16 = 1 << 3;
    /// ONCS bit 4: Save field in Set Features / Select field in Get Features.
    pub const ONCS_SAVE_SELECT: u16 = 1 << 4;
    /// ONCS bit 5: Reservations.
    pub const ONCS_RESERVATIONS: u16 = 1 << 5;
    /// SGLS bits 1:0 = 01b: SGLs supported, no alignment requirement.
    pub const SGLS_SUPPORTED: u32 = 1 << 0;
    /// SGLS bit 2: Keyed SGL Data Block descriptor (RDMA only).
    pub const SGLS_KEYED: u32 = 1 << 2;
    /// SGLS bit 20: Address field may be an offset (in-capsule data).
    pub const SGLS_OFFSET: u32 = 1 << 20;
    /// FRMW bit 0: firmware slot 1 is read only.
    pub const FRMW_SLOT1_RO: u8 = 1 << 0;
    /// ANACAP bits 0..4: which ANA states are reported.
    pub const ANACAP_OPTIMIZED: u8 = 1 << 0;
    pub const ANACAP_NON_OPTIMIZED: u8 = 1 << 1;
    pub const ANACAP_INACCESSIBLE: u8 = 1 << 2;
    pub const ANACAP_PERSISTENT_LOSS: u8 = 1 << 3;
    pub const ANACAP_CHANGE: u8 = 1 << 4;
    /// ANACAP bit 6: ANAGRPID does not change while attached.
    pub const ANACAP_GRPID_NOT_CHANGED: u8 = 1 << 6;
    /// CNTRLTYPE: I/O controller.
    pub const CNTRLTYPE_IO: u8 = 1;
    /// CNTRLTYPE: Discovery controller.
    pub const CNTRLTYPE_DISCOVERY: u8 = 2;
    /// CNTRLTYPE: Administrative controller.
    pub const CNTRLTYPE_ADMIN: u8 = 3;
}

/// Bits of Identify Namespace fields.
pub mod ns_bits {
    /// NSFEAT bit 0: thin provisioning.
    pub const NSFEAT_THIN: u8 = 1 << 0;
    /// NSFEAT bit 2: deallocated or unwritten logical block error.
    pub const NSFEAT_DAE: u8 = 1 << 2;
    /// NSFEAT bit 4: NPWG, NPWA, NPDG, NPDA and NOWS are valid.
    pub const NSFEAT_OPTPERF: u8 = 1 << 4;
    /// NMIC bit 0: namespace may be attached to two or more controllers.
    pub const NMIC_SHARED: u8 = 1 << 0;
    /// DLFEAT bits 2:0 = 001b: deallocated blocks read as zeroes.
    pub const DLFEAT_READ_ZEROES: u8 = 0x1;
    /// DLFEAT bit 3: Write Zeroes supports the Deallocate bit.
    pub const DLFEAT_WRITE_ZEROES_DEAC: u8 = 1 << 3;
    /// NSATTR bit 0: namespace is write protected.
    pub const NSATTR_WRITE_PROTECTED: u8 = 1 << 0;
}

/// Command Effects bits (Commands Supported and Effects log entries).
pub mod effects {
    /// Command Supported.
    pub const CSUPP: u32 = 1 << 0;
    /// Logical Block Content Change.
    pub const LBCC: u32 = 1 << 1;
    /// Namespace Capability Change.
    pub const NCC: u32 = 1 << 2;
    /// Namespace Inventory Change.
    pub const NIC: u32 = 1 << 3;
    /// Controller Capability Change.
    pub const CCC: u32 = 1 << 4;
}
