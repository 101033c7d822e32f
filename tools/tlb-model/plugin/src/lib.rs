//! QEMU TCG plugin feeding the guest's data accesses to the TLB model.
//!
//! Arguments (`-plugin libtlb_plugin.so,arg=value,...`):
//! - `config=<name>`: a model configuration (`tlb_model::model::CONFIGS`);
//! - `dmap=<hex>`: the guest's direct-map base, so that a table at physical
//!   address `pa` is read at guest-virtual `dmap + pa`;
//! - `marker=<hex>`: user address of the phase-marker page (see
//!   `tlb_model::phase`); optional;
//! - `out=<path>`: where to write the CSV at exit (default: QEMU's log);
//! - `kernel=on`: feed kernel-half accesses to the model too (default: only
//!   user-half accesses are modelled; kernel ones are only counted).
//!
//! Only user-half accesses (arm64 VA bit 55 clear, x86 bit 63 clear) feed
//! the model by default: the figures are about the program's own loads, and
//! the kernel's accesses (timer ticks, which TCG's slowness multiplies)
//! differ between kernels. Each modelled access reads the table-base
//! registers (CR3 and CR4, or TTBR0_EL1, TTBR1_EL1 and TCR_EL1) and looks the leaf
//! up in a per-page cache keyed by those values. The modelled TLB is flushed
//! when the user table base changes (ASID / PCID and, on x86, the PTI pair
//! bit ignored) and at the start of every phase, so that a phase starts cold
//! and its walks can be computed by hand; the leaf cache is dropped at every
//! marker (the bench unmaps and remaps regions between phases). Explicit
//! TLBI/INVLPG are not seen. Accesses to unmapped addresses (about to fault)
//! are skipped and counted; walks that cannot read the tables from user mode
//! wait for the next kernel entry ([`State::access`]). Each walk's
//! output address is checked against the physical address QEMU translated
//! the access to. All vCPUs share one modelled TLB: run the bench on one
//! busy CPU for meaningful numbers.
//!
//! Tables are read with `qemu_plugin_read_memory_vaddr`, which resizes the
//! `GByteArray` it is given with glib: it must be a real glib array
//! (`g_byte_array_new`), not a `{data, len}` pair on the stack.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use qemu_plugin::install::{Args, Info, Value};
use qemu_plugin::plugin::{HasCallbacks, Register};
use qemu_plugin::sys::GByteArray;
use qemu_plugin::{
    CallbackFlags, MemRW, MemoryInfo, PluginId, RegisterDescriptor, TranslationBlock, VCPUIndex,
    qemu_plugin_get_registers,
};
use tlb_model::model::{self, Config, Tlb};
use tlb_model::phase::{Phases, Seen, Snapshot};
use tlb_model::walk::{self, Arm64Regs, Leaf};

// glib, provided by the QEMU process the plugin is loaded into.
unsafe extern "C" {
    fn g_byte_array_new() -> *mut GByteArray;
    fn g_byte_array_free(array: *mut GByteArray, free_segment: bool) -> *mut u8;
}

/// Read a little-endian u64 at guest-virtual `va` through the current vCPU's
/// MMU (a debug access: no fault is raised in the guest).
fn read_u64(va: u64) -> Option<u64> {
    // SAFETY: `g_byte_array_new` returns a valid, empty glib array that
    // QEMU may resize; it is freed (with its data) below and not used after.
    unsafe {
        let array = g_byte_array_new();
        if array.is_null() {
            return None;
        }
        let ok = qemu_plugin::sys::qemu_plugin_read_memory_vaddr(va, array, 8);
        let value = if ok && (*array).len >= 8 && !(*array).data.is_null() {
            let bytes = std::slice::from_raw_parts((*array).data, 8);
            Some(u64::from_le_bytes(bytes.try_into().ok()?))
        } else {
            None
        };
        g_byte_array_free(array, true);
        value
    }
}

/// CR4.LA57: 5-level paging.
const CR4_LA57: u64 = 1 << 12;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// Whether `va` lies in the upper (kernel) half.
    fn is_kernel(self, va: u64) -> bool {
        match self {
            Arch::X86_64 => va >> 63 != 0,
            Arch::Aarch64 => va & (1 << 55) != 0,
        }
    }

    /// The user table base in the register values (ASID, PCID, CnP and
    /// flag bits dropped; on x86 also bit 12, which Linux's PTI flips
    /// between the kernel and user halves of one 8K-aligned PGD pair).
    fn user_base(self, regs: &[u64]) -> u64 {
        match self {
            Arch::X86_64 => regs.first().map_or(0, |cr3| cr3 & 0x000f_ffff_ffff_e000),
            Arch::Aarch64 => regs.first().map_or(0, |ttbr0| ttbr0 & 0x0000_ffff_ffff_fffe),
        }
    }
}

/// Handles of one vCPU's table-base registers and of the register giving
/// its privilege level (arm64 CPSR, x86 CS).
struct VcpuRegs {
    bases: Vec<RegisterDescriptor<'static>>,
    mode: RegisterDescriptor<'static>,
    /// Values read since the vCPU last entered a translation block: the
    /// registers cannot change inside one (QEMU ends a block at writes to
    /// CR3/CR4/TTBRs/TCR and at every exception and return).
    cached: Option<(Vec<u64>, bool)>,
}

/// Per-vCPU "entered a new translation block": set by the block-execution
/// callback (no lock, no register read), cleared when the registers are
/// read again. vCPUs beyond the array always re-read.
static NEW_TB: [AtomicBool; 64] = [const { AtomicBool::new(true) }; 64];

fn read_reg(r: &RegisterDescriptor<'static>) -> u64 {
    r.read()
        .ok()
        .and_then(|b| {
            let mut v = [0u8; 8];
            let n = b.len().min(8);
            v[..n].copy_from_slice(&b[..n]);
            Some(u64::from_le_bytes(v))
        })
        .unwrap_or(0)
}

impl VcpuRegs {
    /// The table-base register values and whether the vCPU runs user code
    /// (arm64 EL0: CPSR.M[3:2] = 0; x86 CPL 3: CS selector bits 1:0).
    fn read(&mut self, vcpu: VCPUIndex, arch: Arch) -> (Vec<u64>, bool) {
        let new_tb = NEW_TB
            .get(vcpu as usize)
            .is_none_or(|f| f.swap(false, Ordering::Relaxed));
        if new_tb || self.cached.is_none() {
            let m = read_reg(&self.mode);
            let user = match arch {
                Arch::Aarch64 => m & 0b1100 == 0,
                Arch::X86_64 => m & 0b11 == 3,
            };
            self.cached = Some((self.bases.iter().map(read_reg).collect(), user));
        }
        self.cached.clone().unwrap_or_default()
    }
}

/// A user-mode event waiting for a kernel-mode moment to be walked.
enum Event {
    /// The table-base registers changed to these values.
    Bases(Vec<u64>),
    /// A data access to `va`, which QEMU translated to `pa`.
    Access { va: u64, pa: Option<u64> },
    /// A phase-marker load for phase `id`.
    Mark(u64),
}

/// Kernel-mode drains that may fail on the same queued access before it is
/// given up as unreadable (Linux x86 PTI runs its entry code on the user
/// CR3, which does not map the direct map: a few failures are expected).
const DRAIN_RETRIES: u32 = 1000;

/// Most events held for a kernel entry (32 bytes each: 1 GiB at most).
const MAX_PENDING: usize = 1 << 25;

struct State {
    arch: Arch,
    dmap: u64,
    marker: Option<u64>,
    out: Option<String>,
    /// Model kernel-half accesses too.
    kernel: bool,
    tlb: Tlb,
    phases: Phases,
    seen: Seen,
    vcpus: HashMap<VCPUIndex, VcpuRegs>,
    /// Register values the leaf cache is valid for.
    bases: Vec<u64>,
    /// Register values of the last event queued.
    queued_bases: Vec<u64>,
    /// User table base the modelled TLB's entries belong to.
    user_base: Option<u64>,
    /// Leaf per 4K virtual page under `bases`.
    leaves: HashMap<u64, Leaf>,
    /// Events in guest order from the first access whose walk could not
    /// read the tables (see [`State::access`]).
    pending: VecDeque<Event>,
    /// Sampled kernel (VA - PA) offsets and how often each was seen.
    offsets: HashMap<u64, u64>,
    /// The first walk that found no leaf, for the report.
    first_fail: RefCell<Option<String>>,
    /// Failed drains since an event could last be applied.
    retries: u32,
}

/// Why a walk gave no leaf.
enum NoLeaf {
    Unmapped,
    Unreadable,
}

impl State {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            counts: self.tlb.counts(),
            seen: self.seen,
        }
    }

    fn walk(&self, va: u64) -> Result<Leaf, NoLeaf> {
        let dmap = self.dmap;
        let mut unreadable = false;
        let mut reads = Vec::new();
        let read = |pa: u64| {
            let v = read_u64(dmap.wrapping_add(pa));
            reads.push((pa, v));
            unreadable |= v.is_none();
            v
        };
        let leaf = match (self.arch, self.bases.as_slice()) {
            (Arch::X86_64, [cr3, cr4]) => walk::x86_64(*cr3, cr4 & CR4_LA57 != 0, va, read),
            (Arch::Aarch64, [ttbr0, ttbr1, tcr]) => walk::arm64(
                Arm64Regs {
                    ttbr0: *ttbr0,
                    ttbr1: *ttbr1,
                    tcr: *tcr,
                },
                va,
                read,
            ),
            _ => None,
        };
        if leaf.is_none() && !unreadable && !reads.is_empty() && self.first_fail.borrow().is_none() {
            *self.first_fail.borrow_mut() = Some(format!(
                "va {va:#x} registers {:x?} table reads (pa, value) {reads:x?}",
                self.bases
            ));
        }
        match leaf {
            Some(l) => Ok(l),
            None if unreadable => Err(NoLeaf::Unreadable),
            None => Err(NoLeaf::Unmapped),
        }
    }

    /// Apply one event to the model. False when an access's walk could not
    /// read the tables: the event is left for a later attempt.
    fn apply(&mut self, ev: &Event) -> bool {
        match ev {
            Event::Bases(regs) => {
                let user_base = self.arch.user_base(regs);
                if self.user_base != Some(user_base) {
                    self.user_base = Some(user_base);
                    self.tlb.flush();
                }
                if *regs != self.bases {
                    self.bases.clone_from(regs);
                    self.leaves.clear();
                }
            }
            Event::Mark(id) => {
                self.leaves.clear();
                if self.phases.mark(*id, self.snapshot()) {
                    self.tlb.flush();
                }
            }
            &Event::Access { va, pa } => {
                let page = va >> 12;
                let leaf = match self.leaves.get(&page) {
                    Some(&leaf) => leaf,
                    None => match self.walk(va) {
                        Ok(leaf) => {
                            if pa.is_some_and(|pa| pa >> 12 != leaf.pa >> 12) {
                                self.seen.pa_mismatch += 1;
                            }
                            // Not-present answers are not cached: the fault
                            // maps the page.
                            self.leaves.insert(page, leaf);
                            leaf
                        }
                        Err(NoLeaf::Unmapped) => {
                            self.seen.user += 1;
                            self.seen.unmapped += 1;
                            return true;
                        }
                        Err(NoLeaf::Unreadable) => return false,
                    },
                };
                self.seen.user += 1;
                self.seen.leaf(leaf.size);
                self.tlb.access(va, leaf.size);
            }
        }
        true
    }

    /// Apply `ev` now if nothing waits before it and it can be applied,
    /// else queue it behind the waiting events. Only a user-mode access
    /// waits for a walk: in kernel mode (boot code at low addresses, the
    /// kernel touching user memory) a table that cannot be read now is not
    /// going to become readable, and the access is counted as unreadable.
    fn event(&mut self, ev: Event, user_mode: bool) {
        if let Event::Bases(regs) = &ev {
            if *regs == self.queued_bases {
                return;
            }
            self.queued_bases.clone_from(regs);
        }
        if self.pending.is_empty() {
            if self.apply(&ev) {
                return;
            }
            if !user_mode {
                self.seen.user += 1;
                self.seen.unreadable += 1;
                return;
            }
        }
        if self.pending.len() >= MAX_PENDING {
            // A user-mode stretch too long to hold: give the oldest up.
            self.pending.pop_front();
            self.seen.user += 1;
            self.seen.unreadable += 1;
        }
        self.pending.push_back(ev);
    }

    /// Apply the waiting events in order, from kernel mode (where the
    /// direct map is readable), until one still cannot be walked.
    fn drain(&mut self) {
        while let Some(ev) = self.pending.pop_front() {
            if self.apply(&ev) {
                self.retries = 0;
                continue;
            }
            if self.retries < DRAIN_RETRIES {
                self.retries += 1;
                self.pending.push_front(ev);
                return;
            }
            // Given up; so are the unreadable ones right behind it (before
            // paging is on, every early access would wait as long).
            self.seen.user += u64::from(matches!(ev, Event::Access { .. }));
            self.seen.unreadable += 1;
        }
    }

    /// One data access to `va`; `hwaddr` gives QEMU's physical address for
    /// it (checked against the walk's).
    ///
    /// QEMU reads guest memory for a plugin through the vCPU's current
    /// translation regime, permission checks included: at EL0 the arm64
    /// kernel's direct map, where the walker reads the tables, is refused.
    /// So an access whose leaf is not cached and cannot be walked now is
    /// queued, with every event after it (the model must see them in
    /// order), and the queue is applied at the next kernel-half access,
    /// which is the exception entry that ends the user-mode stretch (before
    /// the kernel can change a mapping).
    fn access(&mut self, vcpu: VCPUIndex, va: u64, hwaddr: impl Fn() -> Option<u64>) {
        let kernel = self.arch.is_kernel(va);
        if kernel {
            self.seen.kernel += 1;
            if !self.pending.is_empty() {
                self.drain();
            }
        }
        if let Some(m) = self.marker
            && va.wrapping_sub(m) < 4096
        {
            self.event(Event::Mark((va - m) / 8), true);
            return;
        }
        if kernel && self.seen.kernel % 1024 == 0 {
            // Sampled (VA - PA) of kernel accesses: the direct map shows up
            // as one offset, checked against `dmap=` in the report.
            if let Some(pa) = hwaddr() {
                *self.offsets.entry(va.wrapping_sub(pa)).or_default() += 1;
            }
            if !self.kernel {
                return;
            }
        }
        if kernel && !self.kernel {
            return;
        }
        let arch = self.arch;
        let Some(r) = self.vcpus.get_mut(&vcpu) else {
            return;
        };
        let (bases, user_mode) = r.read(vcpu, arch);
        self.event(Event::Bases(bases), user_mode);
        // QEMU's address only matters for a walk: the first access to a page.
        let pa = if self.leaves.contains_key(&(va >> 12)) {
            None
        } else {
            hwaddr()
        };
        self.event(Event::Access { va, pa }, user_mode);
    }

    fn report(&self) -> String {
        let mut csv = self.phases.csv(self.tlb.config(), self.snapshot());
        csv.push_str(&format!(
            "# modelled: {} accesses; dmap={:#x}; never walked at exit: {} events\n",
            if self.kernel { "user and kernel" } else { "user" },
            self.dmap,
            self.pending.len()
        ));
        let mut offsets: Vec<_> = self.offsets.iter().map(|(&o, &n)| (n, o)).collect();
        offsets.sort_unstable_by(|a, b| b.cmp(a));
        let top: Vec<String> = offsets
            .iter()
            .take(4)
            .map(|(n, o)| format!("{o:#x} ({n})"))
            .collect();
        csv.push_str(&format!(
            "# sampled kernel VA-PA offsets (samples): {}\n",
            top.join(", ")
        ));
        if let Some(f) = self.first_fail.borrow().as_ref() {
            csv.push_str(&format!("# first walk without a leaf: {f}\n"));
        }
        csv
    }
}

struct TlbPlugin {
    state: Option<Arc<Mutex<State>>>,
}

fn hex_arg(args: &Args, key: &str) -> Option<u64> {
    match args.parsed.get(key)? {
        Value::Integer(i) => Some(*i as u64),
        Value::String(s) => u64::from_str_radix(s.trim_start_matches("0x"), 16).ok(),
        _ => None,
    }
}

fn str_arg(args: &Args, key: &str) -> Option<String> {
    args.raw
        .iter()
        .find_map(|a| a.strip_prefix(key)?.strip_prefix('=').map(str::to_string))
}

impl Register for TlbPlugin {
    fn register(&mut self, id: PluginId, args: &Args, info: &Info) -> qemu_plugin::Result<()> {
        let arch = if info.target_name.starts_with("aarch64") {
            Arch::Aarch64
        } else {
            Arch::X86_64
        };
        let name = str_arg(args, "config").unwrap_or_else(|| "neoverse-n1".into());
        let config: Config = model::config(&name).unwrap_or(model::NEOVERSE_N1);
        let state = Arc::new(Mutex::new(State {
            arch,
            dmap: hex_arg(args, "dmap").unwrap_or(0),
            marker: hex_arg(args, "marker"),
            out: str_arg(args, "out"),
            kernel: str_arg(args, "kernel").is_some_and(|v| v == "on"),
            tlb: Tlb::new(config),
            phases: Phases::default(),
            seen: Seen::default(),
            vcpus: HashMap::new(),
            bases: Vec::new(),
            queued_bases: Vec::new(),
            user_base: None,
            leaves: HashMap::new(),
            pending: VecDeque::new(),
            retries: 0,
            first_fail: RefCell::new(None),
            offsets: HashMap::new(),
        }));
        let at_exit = state.clone();
        qemu_plugin::qemu_plugin_register_atexit_cb(id, move |_| {
            if let Ok(s) = at_exit.lock() {
                let report = s.report();
                match &s.out {
                    Some(path) => {
                        let _ = std::fs::write(path, report);
                    }
                    None => {
                        let _ = qemu_plugin::qemu_plugin_outs(report);
                    }
                }
            }
        })?;
        self.state = Some(state);
        Ok(())
    }
}

impl HasCallbacks for TlbPlugin {
    fn on_vcpu_init(&mut self, _id: PluginId, vcpu: VCPUIndex) -> qemu_plugin::Result<()> {
        let Some(state) = &self.state else {
            return Ok(());
        };
        let mut s = state
            .lock()
            .map_err(|_| qemu_plugin::Error::PluginInstanceSetError)?;
        let (wanted, mode): (&[&str], &str) = match s.arch {
            Arch::X86_64 => (&["cr3", "cr4"], "cs"),
            Arch::Aarch64 => (&["TTBR0_EL1", "TTBR1_EL1", "TCR_EL1"], "cpsr"),
        };
        let mut all: Vec<RegisterDescriptor<'static>> = qemu_plugin_get_registers()?;
        let mut take = |name: &str| {
            let i = all.iter().position(|r| r.name.eq_ignore_ascii_case(name))?;
            Some(all.swap_remove(i))
        };
        let bases: Option<Vec<_>> = wanted.iter().map(|w| take(w)).collect();
        match (bases, take(mode)) {
            (Some(bases), Some(mode)) => {
                s.vcpus.insert(
                    vcpu,
                    VcpuRegs {
                        bases,
                        mode,
                        cached: None,
                    },
                );
            }
            _ => {
                let _ = qemu_plugin::qemu_plugin_outs(format!(
                    "tlb-plugin: vcpu {vcpu}: registers {wanted:?} + {mode} not found\n"
                ));
            }
        }
        Ok(())
    }

    fn on_translation_block_translate(
        &mut self,
        _id: PluginId,
        tb: TranslationBlock,
    ) -> qemu_plugin::Result<()> {
        let Some(state) = &self.state else {
            return Ok(());
        };
        tb.register_execute_callback(|vcpu: VCPUIndex| {
            if let Some(f) = NEW_TB.get(vcpu as usize) {
                f.store(true, Ordering::Relaxed);
            }
        });
        for insn in tb.instructions() {
            let state = state.clone();
            insn.register_memory_access_callback_flags(
                move |vcpu: VCPUIndex, info: MemoryInfo, va: u64| {
                    if let Ok(mut s) = state.lock() {
                        s.access(vcpu, va, || info.hwaddr(va).map(|h| h.hwaddr()));
                    }
                },
                MemRW::QEMU_PLUGIN_MEM_RW,
                CallbackFlags::QEMU_PLUGIN_CB_R_REGS,
            );
        }
        Ok(())
    }
}

qemu_plugin::register!(TlbPlugin { state: None });
