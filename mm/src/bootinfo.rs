//! What the architecture's boot code learned from the firmware.
//!
//! Fixed-size arrays only: this is filled in before any allocator exists.

/// A half-open physical range `[start, end)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysRange {
    pub start: u64,
    pub end: u64,
}

impl PhysRange {
    pub const fn new(start: u64, end: u64) -> Self {
        Self { start, end }
    }
    pub const fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }
    pub const fn overlaps(&self, other: &PhysRange) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// Why a range is reserved (shown in the boot log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReservedKind {
    KernelImage,
    BootInfo,
    DeviceTree,
    Initrd,
    Firmware,
    /// Frames the arch boot code took for the kernel's own page tables and boot stacks.
    EarlyPageTables,
}

pub const MAX_RAM_RANGES: usize = 64;
pub const MAX_RESERVED: usize = 16;
pub const MAX_CMDLINE: usize = 1024;

/// Everything the portable kernel needs from the boot protocol.
pub struct BootInfo {
    /// Usable RAM as reported by the firmware (e820 type 1 / DT `memory`).
    pub ram: [PhysRange; MAX_RAM_RANGES],
    pub nr_ram: usize,
    /// Ranges inside `ram` that must not be handed out.
    pub reserved: [(PhysRange, ReservedKind); MAX_RESERVED],
    pub nr_reserved: usize,
    /// Kernel command line (copied out of firmware memory).
    pub cmdline: [u8; MAX_CMDLINE],
    pub cmdline_len: usize,
    /// Initial ramdisk, if the boot protocol passed one.
    pub initrd: Option<PhysRange>,
    /// The NUMA nodes the firmware described (ACPI SRAT/SLIT, device-tree
    /// `numa-node-id`/`distance-map`); one node 0 when it described none.
    pub numa: crate::physmem::node::NodeMap,
}

impl BootInfo {
    pub const fn empty() -> Self {
        Self {
            ram: [PhysRange::new(0, 0); MAX_RAM_RANGES],
            nr_ram: 0,
            reserved: [(PhysRange::new(0, 0), ReservedKind::Firmware); MAX_RESERVED],
            nr_reserved: 0,
            cmdline: [0; MAX_CMDLINE],
            cmdline_len: 0,
            initrd: None,
            numa: crate::physmem::node::NodeMap::single(),
        }
    }

    pub fn ram(&self) -> &[PhysRange] {
        &self.ram[..self.nr_ram]
    }

    pub fn reserved(&self) -> &[(PhysRange, ReservedKind)] {
        &self.reserved[..self.nr_reserved]
    }

    /// Adds a RAM range, skipping empty ones (qboot ends its map with a zero entry).
    /// Returns false when the table is full.
    pub fn add_ram(&mut self, r: PhysRange) -> bool {
        if r.is_empty() {
            return true;
        }
        if self.nr_ram == MAX_RAM_RANGES {
            return false;
        }
        self.ram[self.nr_ram] = r;
        self.nr_ram += 1;
        true
    }

    pub fn add_reserved(&mut self, r: PhysRange, kind: ReservedKind) -> bool {
        if r.is_empty() {
            return true;
        }
        if self.nr_reserved == MAX_RESERVED {
            return false;
        }
        self.reserved[self.nr_reserved] = (r, kind);
        self.nr_reserved += 1;
        true
    }

    /// Copies the command line, truncating at `MAX_CMDLINE` bytes.
    pub fn set_cmdline(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(MAX_CMDLINE);
        self.cmdline[..n].copy_from_slice(&bytes[..n]);
        self.cmdline_len = n;
    }

    pub fn cmdline(&self) -> &str {
        core::str::from_utf8(&self.cmdline[..self.cmdline_len]).unwrap_or("")
    }

    /// Total bytes of RAM the firmware reported.
    pub fn total_ram(&self) -> u64 {
        self.ram().iter().map(|r| r.len()).sum()
    }
}
