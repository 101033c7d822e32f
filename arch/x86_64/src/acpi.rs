//! Which CPUs the machine has: the local APIC ids from the ACPI MADT, or
//! from the MP table when there is no ACPI, read once at boot; the NUMA
//! nodes from the SRAT and SLIT ([`numa`]); and the
//! devices the kernel drives: the IOAPICs (MADT) and the virtio-mmio
//! transports (DSDT), kept in [`DEVICES`].
//!
//! Runs in the early boot while the entry code's identity map of the low
//! 4 GiB is still live, because firmware tables may sit in memory the
//! direct map does not cover (e820 reserved or ACPI areas between RAM
//! ranges).  Only what was found is kept; nothing reads the tables later.
//!
//! Where the root pointer comes from: the PVH start info's `rsdp_paddr`
//! when the loader filled it, else the EBDA's first KiB and the BIOS area
//! 0xE0000..0x100000 (both `-M q35` with SeaBIOS and `-M microvm` put it
//! there).  Without an RSDP the MP floating pointer is searched in the
//! same places; without either the machine is taken to have one CPU, and
//! a line on the console says so.
use crate::console::kprint;
use mm::cpu::MAX_CPUS;
use mm::physmem::node::{MAX_NODE_RANGES, MAX_NUMNODES, NodeMap};

/// What the firmware tables said.
#[derive(Clone, Copy, Debug)]
pub struct CpuList {
    /// Local APIC ids of the usable CPUs, in table order (boot CPU included).
    pub apic_ids: [u32; MAX_CPUS],
    pub n: usize,
    /// Enabled CPUs the tables listed beyond [`MAX_CPUS`] (not used).
    pub dropped: usize,
    /// Which table the list came from.
    pub source: &'static str,
}

impl CpuList {
    const fn empty() -> Self {
        CpuList {
            apic_ids: [0; MAX_CPUS],
            n: 0,
            dropped: 0,
            source: "none",
        }
    }

    fn push(&mut self, id: u32) {
        if self.apic_ids[..self.n].contains(&id) {
            return;
        }
        if self.n < MAX_CPUS {
            self.apic_ids[self.n] = id;
            self.n += 1;
        } else {
            self.dropped += 1;
        }
    }
}

/// Read a `T` at physical address `pa` through the boot identity map;
/// `T::default()` beyond 4 GiB.  Only reached from [`discover`], whose
/// contract keeps the identity map live.
fn rd<T: Copy + Default>(pa: u64) -> T {
    if !below_4g(pa, core::mem::size_of::<T>() as u64) {
        return T::default();
    }
    // SAFETY: below 4 GiB (checked), which the boot identity map covers
    // while `discover` runs (its contract); reads of firmware tables have
    // no side effects.
    unsafe { core::ptr::read_unaligned(pa as *const T) }
}

fn below_4g(pa: u64, len: u64) -> bool {
    pa.checked_add(len).is_some_and(|e| e <= 1 << 32)
}

/// Byte sum of `len` bytes at `pa` (ACPI and MP checksums make it 0).
fn checksum(pa: u64, len: u64) -> u8 {
    (0..len).fold(0u8, |s, i| s.wrapping_add(rd::<u8>(pa + i)))
}

/// The 16-byte aligned addresses where `sig` starts in the EBDA's first
/// KiB or the BIOS area, whose `len` bytes sum to zero.
fn scan(sig: &[u8], len: u64) -> Option<u64> {
    // 0x40E: the EBDA segment in the BIOS data area.
    let ebda = u64::from(rd::<u16>(0x40E)) << 4;
    let areas = [
        (
            ebda,
            if (0x80000..0xA0000).contains(&ebda) {
                1024
            } else {
                0
            },
        ),
        (0xE0000, 0x20000),
    ];
    for (base, size) in areas {
        let mut a = base;
        while a + len <= base + size {
            if (0..sig.len()).all(|i| rd::<u8>(a + i as u64) == sig[i]) && checksum(a, len) == 0 {
                return Some(a);
            }
            a += 16;
        }
    }
    None
}

/// Find the CPUs.  `rsdp_hint` is the PVH start info's `rsdp_paddr` (0 if
/// none).
///
/// # Safety
/// The boot identity map of the low 4 GiB must be live (early boot, before
/// `paging::init` switches to the kernel's tables).
pub unsafe fn discover(rsdp_hint: u64) -> CpuList {
    if let Some(r) = find_rsdp(rsdp_hint) {
        DEVICES.call_once(|| devices(r));
        if let Some(l) = from_madt(r) {
            return l;
        }
    }
    if let Some(l) = from_mp_table() {
        return l;
    }
    kprint!("x86_64: no ACPI MADT and no MP table: running on the boot CPU only\n");
    CpuList::empty()
}

/// The RSDP: the PVH hint when it is usable, else the BIOS areas.
fn find_rsdp(rsdp_hint: u64) -> Option<u64> {
    if rsdp_hint != 0 && below_4g(rsdp_hint, 36) {
        Some(rsdp_hint)
    } else {
        scan(b"RSD PTR ", 20)
    }
}

/// The NUMA nodes from the SRAT (memory affinity and processor
/// (x2)APIC affinity entries) and the SLIT, or `None` without an SRAT.
/// Proximity domains become node ids in the order they first appear in
/// the SRAT (Linux numbers them in order of first use too; for QEMU's
/// tables the two are equal).  Disabled and hot-pluggable memory entries
/// are left out (no memory hotplug here).  CPUs get their logical ids as
/// [`crate::smp`] numbers them (`bsp_apic_id` first, then `cpus` order).
/// Without a SLIT, or with a SLIT that does not match the nodes or that
/// breaks the rules (10 local, more remote), the distances are Linux's
/// defaults (10 local, 20 remote).
///
/// # Safety
/// As [`discover`]: the boot identity map of the low 4 GiB must be live.
pub unsafe fn numa(rsdp_hint: u64, cpus: &CpuList, bsp_apic_id: u32) -> Option<NodeMap> {
    let rsdp = find_rsdp(rsdp_hint)?;
    let (srat, len) = find_table(rsdp, b"SRAT")?;
    if len < 48 || checksum(srat, len) != 0 {
        kprint!("x86_64: ACPI SRAT at {:#x} is malformed, ignored\n", srat);
        return None;
    }
    // Proximity domains in order of first appearance.
    let mut pxms = [0u32; MAX_NUMNODES];
    let mut nr = 0usize;
    let mut too_many = false;
    let mut node_of = |pxm: u32| -> Option<usize> {
        if let Some(i) = pxms[..nr].iter().position(|&p| p == pxm) {
            return Some(i);
        }
        if nr == MAX_NUMNODES {
            too_many = true;
            return None;
        }
        pxms[nr] = pxm;
        nr += 1;
        Some(nr - 1)
    };
    let mut mem = [(0u64, 0u64, 0usize); MAX_NODE_RANGES];
    let mut nr_mem = 0;
    let mut cpu_nodes = [(0u32, 0usize); MAX_CPUS];
    let mut nr_cpu = 0;
    let mut off = 48;
    while off + 2 <= len {
        let (ty, elen) = (rd::<u8>(srat + off), u64::from(rd::<u8>(srat + off + 1)));
        if elen < 2 || off + elen > len {
            break;
        }
        let e = srat + off;
        match (ty, elen) {
            // Processor local APIC affinity: domain bits 7:0 at 2, APIC id
            // at 3, flags at 4, domain bits 31:8 at 9..12.
            (0, 16..) if rd::<u32>(e + 4) & 1 != 0 => {
                let hi = u32::from(rd::<u16>(e + 9)) | u32::from(rd::<u8>(e + 11)) << 16;
                let pxm = u32::from(rd::<u8>(e + 2)) | hi << 8;
                if let Some(n) = node_of(pxm)
                    && nr_cpu < MAX_CPUS
                {
                    cpu_nodes[nr_cpu] = (u32::from(rd::<u8>(e + 3)), n);
                    nr_cpu += 1;
                }
            }
            // Memory affinity: domain at 2, base at 8, length at 16, flags
            // at 28 (bit 0 enabled, bit 1 hot-pluggable).
            (1, 40..) => {
                let flags = rd::<u32>(e + 28);
                let (base, size) = (rd::<u64>(e + 8), rd::<u64>(e + 16));
                if flags & 3 == 1
                    && size != 0
                    && let Some(n) = node_of(rd::<u32>(e + 2))
                    && nr_mem < MAX_NODE_RANGES
                {
                    mem[nr_mem] = (base, base.saturating_add(size), n);
                    nr_mem += 1;
                }
            }
            // Processor local x2APIC affinity: domain at 4, x2APIC id at 8,
            // flags at 12.
            (2, 24..) if rd::<u32>(e + 12) & 1 != 0 => {
                if let Some(n) = node_of(rd::<u32>(e + 4))
                    && nr_cpu < MAX_CPUS
                {
                    cpu_nodes[nr_cpu] = (rd::<u32>(e + 8), n);
                    nr_cpu += 1;
                }
            }
            _ => {}
        }
        off += elen;
    }
    if too_many {
        kprint!(
            "x86_64: the SRAT has more than {} proximity domains: NUMA off\n",
            MAX_NUMNODES
        );
        return None;
    }
    if nr == 0 {
        return None;
    }
    let mut map = NodeMap::new(nr).ok()?;
    for &(s, e, n) in &mem[..nr_mem] {
        if let Err(err) = map.add_mem(s, e, n) {
            kprint!(
                "x86_64: SRAT memory {:#x}-{:#x}: {:?}: NUMA off\n",
                s,
                e,
                err
            );
            return None;
        }
    }
    let mut listed = [0u64; MAX_CPUS];
    for (d, &s) in listed.iter_mut().zip(&cpus.apic_ids[..cpus.n]) {
        *d = u64::from(s);
    }
    for &(apic, n) in &cpu_nodes[..nr_cpu] {
        if let Some(cpu) =
            arch_common::smp::logical_id(u64::from(bsp_apic_id), &listed[..cpus.n], u64::from(apic))
        {
            let _ = map.set_cpu_node(cpu, n);
        }
    }
    if let Some((slit, slen)) = find_table(rsdp, b"SLIT") {
        let count = rd::<u64>(slit + 36);
        if count as usize == nr && 44 + count * count <= slen {
            // The SLIT is indexed by proximity domain; our nodes are the
            // domains in order of appearance.
            let mut d = [0u8; MAX_NUMNODES * MAX_NUMNODES];
            let mut ok = true;
            for a in 0..nr {
                for b in 0..nr {
                    let (pa, pb) = (u64::from(pxms[a]), u64::from(pxms[b]));
                    if pa >= count || pb >= count {
                        ok = false;
                    } else {
                        d[a * nr + b] = rd::<u8>(slit + 44 + pa * count + pb);
                    }
                }
            }
            if !ok || map.set_distances(&d[..nr * nr]).is_err() {
                kprint!("x86_64: ACPI SLIT does not fit the SRAT's domains, ignored\n");
            }
        }
    }
    Some(map)
}

/// The interrupt controllers and virtio-mmio transports the ACPI tables
/// describe (empty without ACPI: `q35` has IOAPICs but no virtio-mmio).
#[derive(Clone, Copy, Debug, Default)]
pub struct Devices {
    /// IOAPICs from the MADT: (register base, first GSI); at most two
    /// (`microvm` with `ioapic2=on` has two, q35 one).
    pub ioapics: [(u64, u32); MAX_IOAPICS],
    pub nr_ioapics: usize,
    pub virtio: arch_common::MmioDevices,
}

pub const MAX_IOAPICS: usize = 2;

/// Filled once by [`discover`], read-only after.
pub static DEVICES: spin::Once<Devices> = spin::Once::new();

/// The RSDT/XSDT the RSDP at `rsdp` names: (address, entry size).
fn root_table(rsdp: u64) -> Option<(u64, u64)> {
    let rev = rd::<u8>(rsdp + 15);
    let x = if rev >= 2 { rd::<u64>(rsdp + 24) } else { 0 };
    let (root, entry_size) = if x != 0 {
        (x, 8)
    } else {
        (u64::from(rd::<u32>(rsdp + 16)), 4)
    };
    (root != 0 && below_4g(root, 36)).then_some((root, entry_size))
}

/// The first table with signature `sig` the root table lists, if its
/// length is sane: (address, length).
fn find_table(rsdp: u64, sig: &[u8; 4]) -> Option<(u64, u64)> {
    let (root, entry_size) = root_table(rsdp)?;
    let root_len = u64::from(rd::<u32>(root + 4));
    let mut off = 36;
    while off + entry_size <= root_len && below_4g(root, root_len) {
        let t = if entry_size == 8 {
            rd::<u64>(root + off)
        } else {
            u64::from(rd::<u32>(root + off))
        };
        if t != 0 && below_4g(t, 8) && rd::<[u8; 4]>(t) == *sig {
            let len = u64::from(rd::<u32>(t + 4));
            return (len >= 36 && below_4g(t, len)).then_some((t, len));
        }
        off += entry_size;
    }
    None
}

/// Call `f(type, entry address, entry length)` for each MADT entry.
fn madt_entries(madt: u64, len: u64, mut f: impl FnMut(u8, u64, u64)) {
    let mut off = 44;
    while off + 2 <= len {
        let (ty, elen) = (rd::<u8>(madt + off), u64::from(rd::<u8>(madt + off + 1)));
        if elen < 2 || off + elen > len {
            break;
        }
        f(ty, madt + off, elen);
        off += elen;
    }
}

/// IOAPICs from the MADT, virtio-mmio windows from the DSDT.
///
/// The DSDT is AML, and this kernel has no AML interpreter.  What QEMU's
/// `microvm` writes for each virtio-mmio transport is a device whose
/// `_CRS` is a constant resource template: a Memory32Fixed descriptor
/// (tag 0x86, length 9) with the window, directly followed by an Extended
/// Interrupt descriptor (tag 0x89) with its GSI.  That pair is what is
/// looked for, byte by byte.  A false match is harmless: the kernel checks
/// the virtio magic value in the window before it drives anything there.
/// (QEMU also lists the transports as `virtio_mmio.device=` words on the
/// command line, but only when ACPI is off, which would cost the MADT and
/// so the secondary CPUs; the DSDT is there whenever ACPI is on.)
fn devices(rsdp: u64) -> Devices {
    let mut d = Devices::default();
    if let Some((madt, len)) = find_table(rsdp, b"APIC") {
        madt_entries(madt, len, |ty, e, elen| {
            if ty == 1 && elen >= 12 && d.nr_ioapics < MAX_IOAPICS {
                d.ioapics[d.nr_ioapics] = (u64::from(rd::<u32>(e + 4)), rd::<u32>(e + 8));
                d.nr_ioapics += 1;
            }
        });
    }
    let dsdt = find_table(rsdp, b"FACP").map(|(fadt, len)| {
        let x = if len >= 148 { rd::<u64>(fadt + 140) } else { 0 };
        if x != 0 {
            x
        } else {
            u64::from(rd::<u32>(fadt + 40))
        }
    });
    if let Some(dsdt) = dsdt.filter(|&a| a != 0 && below_4g(a, 36))
        && rd::<[u8; 4]>(dsdt) == *b"DSDT"
    {
        let len = u64::from(rd::<u32>(dsdt + 4));
        if below_4g(dsdt, len) {
            let mut a = dsdt + 36;
            // Memory32Fixed (12 bytes) + Extended Interrupt with one GSI (9).
            while a + 21 <= dsdt + len {
                if rd::<[u8; 3]>(a) == [0x86, 0x09, 0x00]
                    && rd::<u8>(a + 12) == 0x89
                    && rd::<u16>(a + 13) >= 6
                    && rd::<u8>(a + 16) >= 1
                {
                    let (base, size) = (rd::<u32>(a + 4), rd::<u32>(a + 8));
                    d.virtio.push(arch_common::MmioDevice {
                        base: u64::from(base),
                        size: u64::from(size),
                        irq: rd::<u32>(a + 17),
                    });
                    a += 21;
                } else {
                    a += 1;
                }
            }
        }
    }
    d
}

/// Walk the RSDT/XSDT the RSDP at `rsdp` names to the MADT ("APIC") and
/// collect the enabled (or online-capable) local APIC and x2APIC entries.
fn from_madt(rsdp: u64) -> Option<CpuList> {
    let (madt, len) = find_table(rsdp, b"APIC")?;
    if len < 44 || checksum(madt, len) != 0 {
        kprint!("x86_64: ACPI MADT at {:#x} is malformed, ignored\n", madt);
        return None;
    }
    let mut l = CpuList::empty();
    l.source = "ACPI MADT";
    madt_entries(madt, len, |ty, e, elen| match (ty, elen) {
        // Processor local APIC: uid u8, APIC id u8, flags u32.
        (0, 8..) => {
            let flags = rd::<u32>(e + 4);
            if flags & 3 != 0 {
                l.push(u32::from(rd::<u8>(e + 3)));
            }
        }
        // Processor local x2APIC: reserved u16, x2APIC id u32, flags u32, uid u32.
        (9, 16..) => {
            let flags = rd::<u32>(e + 8);
            if flags & 3 != 0 {
                l.push(rd::<u32>(e + 4));
            }
        }
        _ => {}
    });
    (l.n > 0).then_some(l)
}

/// The MP specification's configuration table: processor entries (type 0,
/// 20 bytes, flags bit 0 = enabled); every other entry type is 8 bytes.
fn from_mp_table() -> Option<CpuList> {
    let fp = scan(b"_MP_", 16)?;
    let cfg = u64::from(rd::<u32>(fp + 4));
    if cfg == 0 || !below_4g(cfg, 44) || rd::<[u8; 4]>(cfg) != *b"PCMP" {
        return None;
    }
    let len = u64::from(rd::<u16>(cfg + 4));
    let count = rd::<u16>(cfg + 34);
    if !below_4g(cfg, len) {
        return None;
    }
    let mut l = CpuList::empty();
    l.source = "MP table";
    let mut off = 44;
    for _ in 0..count {
        if off >= len {
            break;
        }
        let ty = rd::<u8>(cfg + off);
        if ty == 0 {
            let (id, flags) = (rd::<u8>(cfg + off + 1), rd::<u8>(cfg + off + 3));
            if flags & 1 != 0 {
                l.push(u32::from(id));
            }
            off += 20;
        } else {
            off += 8;
        }
    }
    (l.n > 0).then_some(l)
}
