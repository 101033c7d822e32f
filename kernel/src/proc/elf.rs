//! ELF64 executables: the header and program headers a static loader needs
//! (non-PIE `ET_EXEC` and static-PIE `ET_DYN` without an interpreter).
use alloc::vec::Vec;
use mm::abi::errno::Errno;

pub const PT_LOAD: u32 = 1;
pub const PT_INTERP: u32 = 3;
pub const PT_PHDR: u32 = 6;
pub const PF_X: u32 = 1;
pub const PF_W: u32 = 2;
pub const PF_R: u32 = 4;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
pub const PHENT_SIZE: usize = 56;

#[cfg(target_arch = "x86_64")]
const EM_HOST: u16 = 62;
#[cfg(target_arch = "aarch64")]
const EM_HOST: u16 = 183;

/// One program header.
#[derive(Clone, Copy, Debug)]
pub struct Phdr {
    pub p_type: u32,
    pub flags: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
    pub memsz: u64,
}

/// A parsed executable.
#[derive(Debug)]
pub struct Elf<'a> {
    _data: core::marker::PhantomData<&'a [u8]>,
    /// `ET_DYN` (static PIE): every address is relative to a load base.
    pub pie: bool,
    pub entry: u64,
    pub phoff: u64,
    pub phnum: u16,
    pub phdrs: Vec<Phdr>,
}

fn u16_at(d: &[u8], o: usize) -> Result<u16, Errno> {
    d.get(o..o + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or(Errno::ENOEXEC)
}
fn u32_at(d: &[u8], o: usize) -> Result<u32, Errno> {
    d.get(o..o + 4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
        .ok_or(Errno::ENOEXEC)
}
fn u64_at(d: &[u8], o: usize) -> Result<u64, Errno> {
    d.get(o..o + 8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
        .ok_or(Errno::ENOEXEC)
}

impl<'a> Elf<'a> {
    /// Check and parse; ENOEXEC for anything this loader cannot run (wrong
    /// class, endianness, machine or type, an interpreter, bad headers).
    pub fn parse(data: &'a [u8]) -> Result<Elf<'a>, Errno> {
        if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 || data[5] != 1 {
            return Err(Errno::ENOEXEC);
        }
        let ty = u16_at(data, 16)?;
        if (ty != ET_EXEC && ty != ET_DYN) || u16_at(data, 18)? != EM_HOST {
            return Err(Errno::ENOEXEC);
        }
        let entry = u64_at(data, 24)?;
        let phoff = u64_at(data, 32)?;
        let phentsize = u16_at(data, 54)? as usize;
        let phnum = u16_at(data, 56)?;
        if phentsize != PHENT_SIZE || phnum == 0 || phnum > 64 {
            return Err(Errno::ENOEXEC);
        }
        let mut phdrs = Vec::with_capacity(phnum as usize);
        for i in 0..phnum as usize {
            let o = (phoff as usize)
                .checked_add(i * PHENT_SIZE)
                .ok_or(Errno::ENOEXEC)?;
            let p = Phdr {
                p_type: u32_at(data, o)?,
                flags: u32_at(data, o + 4)?,
                offset: u64_at(data, o + 8)?,
                vaddr: u64_at(data, o + 16)?,
                filesz: u64_at(data, o + 32)?,
                memsz: u64_at(data, o + 40)?,
            };
            if p.p_type == PT_INTERP {
                return Err(Errno::ENOEXEC);
            }
            if p.p_type == PT_LOAD
                && (p.filesz > p.memsz
                    || p.offset
                        .checked_add(p.filesz)
                        .is_none_or(|e| e > data.len() as u64)
                    || p.vaddr.checked_add(p.memsz).is_none()
                    || (p.vaddr ^ p.offset) & 0xfff != 0)
            {
                return Err(Errno::ENOEXEC);
            }
            phdrs.push(p);
        }
        if !phdrs.iter().any(|p| p.p_type == PT_LOAD) {
            return Err(Errno::ENOEXEC);
        }
        Ok(Elf {
            _data: core::marker::PhantomData,
            pie: ty == ET_DYN,
            entry,
            phoff,
            phnum,
            phdrs,
        })
    }

    pub fn loads(&self) -> impl Iterator<Item = &Phdr> {
        self.phdrs.iter().filter(|p| p.p_type == PT_LOAD)
    }

    /// Lowest and highest (exclusive) virtual address of the PT_LOADs.
    pub fn span(&self) -> (u64, u64) {
        let lo = self.loads().map(|p| p.vaddr & !0xfff).min().unwrap_or(0);
        let hi = self.loads().map(|p| p.vaddr + p.memsz).max().unwrap_or(0);
        (lo, hi)
    }

    /// Virtual address (before relocation) of the program headers: PT_PHDR,
    /// else the PT_LOAD that contains `e_phoff` in the file.
    pub fn phdr_vaddr(&self) -> Option<u64> {
        if let Some(p) = self.phdrs.iter().find(|p| p.p_type == PT_PHDR) {
            return Some(p.vaddr);
        }
        self.loads()
            .find(|p| {
                p.offset <= self.phoff
                    && self.phoff + (self.phnum as u64 * 56) <= p.offset + p.filesz
            })
            .map(|p| p.vaddr + (self.phoff - p.offset))
    }
}
