//! QEMU TCG plugin feeding the guest's data accesses to the TLB model.
//!
//! Arguments (`-plugin libtlb_plugin.so,arg=value,...`):
//! - `config=<name>`: a model configuration (`tlb_model::model::CONFIGS`);
//! - `dmap=<hex>`: the guest's direct-map base, so that a table at physical
//!   address `pa` is read at guest-virtual `dmap + pa`;
//! - `marker=<hex>`: user address of the phase-marker page (see
//!   `tlb_model::phase`); optional;
//! - `out=<path>`: where to write the CSV at exit (default: QEMU's log).
//!
//! Each memory callback reads the table-base registers (CR3, or TTBR0_EL1,
//! TTBR1_EL1 and TCR_EL1) and looks the leaf size up in a per-page cache
//! keyed by those registers; the cache is dropped, and the modelled TLB
//! flushed, whenever a table base changes (a context switch or an ASID
//! roll). Explicit TLB invalidations are not seen: entries live until
//! evicted or until the base changes. Accesses to unmapped addresses (about
//! to fault) are skipped. All vCPUs share one modelled TLB: run with one CPU
//! busy (the bench pins itself) for meaningful numbers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use qemu_plugin::install::{Args, Info, Value};
use qemu_plugin::plugin::{HasCallbacks, Register};
use qemu_plugin::{
    CallbackFlags, MemRW, MemoryInfo, PluginId, RegisterDescriptor, TranslationBlock, VCPUIndex,
    qemu_plugin_get_registers, qemu_plugin_read_memory_vaddr,
};
use tlb_model::model::{self, Config, LeafSize, Tlb};
use tlb_model::phase::Phases;
use tlb_model::walk::{self, Arm64Regs};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Arch {
    X86_64,
    Aarch64,
}

/// Handles of the table-base registers of one vCPU.
#[derive(Default)]
struct VcpuRegs {
    regs: Vec<RegisterDescriptor<'static>>,
}

impl VcpuRegs {
    fn read(&self) -> Vec<u64> {
        self.regs
            .iter()
            .map(|r| {
                r.read()
                    .ok()
                    .and_then(|b| {
                        b.get(..8)
                            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
                    })
                    .unwrap_or(0)
            })
            .collect()
    }
}

struct State {
    arch: Arch,
    dmap: u64,
    marker: Option<u64>,
    out: Option<String>,
    tlb: Tlb,
    phases: Phases,
    vcpus: HashMap<VCPUIndex, VcpuRegs>,
    /// Register values the cache below is valid for.
    bases: Vec<u64>,
    /// Leaf size per 4K virtual page under `bases`.
    leaves: HashMap<u64, Option<LeafSize>>,
    skipped: u64,
}

impl State {
    fn leaf(&mut self, regs: &[u64], va: u64) -> Option<LeafSize> {
        if regs != self.bases.as_slice() {
            self.bases = regs.to_vec();
            self.leaves.clear();
            self.tlb.flush();
        }
        let page = va >> 12;
        if let Some(&leaf) = self.leaves.get(&page) {
            return leaf;
        }
        let dmap = self.dmap;
        let read = |pa: u64| {
            let mut b = [0u8; 8];
            qemu_plugin_read_memory_vaddr(dmap.wrapping_add(pa), &mut b).ok()?;
            Some(u64::from_le_bytes(b))
        };
        let leaf = match (self.arch, regs) {
            (Arch::X86_64, [cr3]) => walk::x86_64(*cr3, va, read),
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
        // A non-present answer is not cached: the fault will map it.
        if leaf.is_some() {
            self.leaves.insert(page, leaf);
        }
        leaf
    }

    fn access(&mut self, vcpu: VCPUIndex, va: u64) {
        if let Some(m) = self.marker
            && va.wrapping_sub(m) < 4096
        {
            let now = self.tlb.counts();
            self.phases.mark((va - m) / 8, now);
            return;
        }
        let regs = match self.vcpus.get(&vcpu) {
            Some(r) => r.read(),
            None => return,
        };
        match self.leaf(&regs, va) {
            Some(leaf) => self.tlb.access(va, leaf),
            None => self.skipped += 1,
        }
    }

    fn report(&self) -> String {
        let mut csv = self.phases.csv(self.tlb.config(), self.tlb.counts());
        csv.push_str(&format!(
            "# skipped (unmapped) accesses: {}\n",
            self.skipped
        ));
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
            tlb: Tlb::new(config),
            phases: Phases::default(),
            vcpus: HashMap::new(),
            bases: Vec::new(),
            leaves: HashMap::new(),
            skipped: 0,
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
        let wanted: &[&str] = match s.arch {
            Arch::X86_64 => &["cr3"],
            Arch::Aarch64 => &["TTBR0_EL1", "TTBR1_EL1", "TCR_EL1"],
        };
        let mut all: Vec<RegisterDescriptor<'static>> = qemu_plugin_get_registers()?;
        let mut regs = Vec::new();
        for w in wanted {
            if let Some(i) = all.iter().position(|r| r.name.eq_ignore_ascii_case(w)) {
                regs.push(all.swap_remove(i));
            }
        }
        if regs.len() == wanted.len() {
            s.vcpus.insert(vcpu, VcpuRegs { regs });
        } else {
            let _ = qemu_plugin::qemu_plugin_outs(format!(
                "tlb-plugin: vcpu {vcpu}: registers {wanted:?} not found\n"
            ));
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
        for insn in tb.instructions() {
            let state = state.clone();
            insn.register_memory_access_callback_flags(
                move |vcpu: VCPUIndex, _info: MemoryInfo, va: u64| {
                    if let Ok(mut s) = state.lock() {
                        s.access(vcpu, va);
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
