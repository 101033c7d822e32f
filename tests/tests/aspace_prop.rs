//! Random sequences of mmap / munmap / mprotect / madvise / fork / exit /
//! write / verify under random THP knob settings, over both entry formats.
//! Every page's expected first word is tracked in a model per address
//! space; after every operation the invariant checker and the TLB
//! coherence check run, and at the end every tracked word is verified and
//! all frames must come back.

mod mmtest;

use std::collections::BTreeMap;

use mm::aspace::{Access, Fault, Mm};
use mm::paging::PagingArch;
use mm::thp::{GlobalMode, OrderMode};
use mm::vma::VmFlags;
use mmtest::*;
use proptest::prelude::*;

/// The region every operation targets: 4 PMDs, so ranges overlap often.
const REGION: u64 = 0x7000_0000_0000;
const REGION_PAGES: u64 = 2048;
const MAX_MMS: usize = 3;

#[derive(Clone, Debug)]
enum Op {
    Mmap {
        off: u64,
        len: u64,
        prot: Prot,
        populate: bool,
    },
    Munmap {
        off: u64,
        len: u64,
    },
    Mprotect {
        off: u64,
        len: u64,
        prot: Prot,
    },
    Madvise {
        off: u64,
        len: u64,
        advice: Advice,
    },
    Fork {
        from: usize,
    },
    Exit {
        which: usize,
    },
    Write {
        mm: usize,
        off: u64,
        len: u64,
        tag: u64,
    },
    Verify {
        mm: usize,
        off: u64,
        len: u64,
    },
    Knobs {
        global: u8,
        modes: [u8; 4],
        zero_page: bool,
    },
}

/// A page offset in the region, often 64K- or 2M-aligned.
fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        (0..REGION_PAGES),
        (0..REGION_PAGES / 16).prop_map(|x| x * 16),
        (0..REGION_PAGES / 512).prop_map(|x| x * 512),
    ]
}

/// A length in pages, often a multiple of 16 or 512.
fn length() -> impl Strategy<Value = u64> {
    prop_oneof![
        (1..64u64),
        (1..16u64).prop_map(|x| x * 16),
        (1..3u64).prop_map(|x| x * 512),
    ]
}

fn prot() -> impl Strategy<Value = Prot> {
    prop_oneof![
        4 => Just(RW),
        1 => Just(PROT_READ),
        1 => Just(PROT_NONE),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (offset(), length(), prot(), any::<bool>()).prop_map(|(off, len, prot, populate)| Op::Mmap { off, len, prot, populate }),
        2 => (offset(), length()).prop_map(|(off, len)| Op::Munmap { off, len }),
        2 => (offset(), length(), prot()).prop_map(|(off, len, prot)| Op::Mprotect { off, len, prot }),
        2 => (offset(), length(), prop_oneof![Just(MADV_DONTNEED), Just(MADV_HUGEPAGE), Just(MADV_NOHUGEPAGE)])
            .prop_map(|(off, len, advice)| Op::Madvise { off, len, advice }),
        2 => (0..MAX_MMS).prop_map(|from| Op::Fork { from }),
        1 => (0..MAX_MMS).prop_map(|which| Op::Exit { which }),
        8 => (0..MAX_MMS, offset(), length(), any::<u64>()).prop_map(|(mm, off, len, tag)| Op::Write { mm, off, len, tag }),
        3 => (0..MAX_MMS, offset(), length()).prop_map(|(mm, off, len)| Op::Verify { mm, off, len }),
        1 => knobs(),
    ]
}

/// Clip a page range to the region; returns (va, len in bytes).
fn range(off: u64, len: u64) -> (u64, u64) {
    let len = len.min(REGION_PAGES - off).max(1);
    (REGION + off * K4, len * K4)
}

struct Proc<'a, A: PagingArch> {
    mm: Mm<'a, A>,
    /// Page address -> first word (absent: zero).
    words: BTreeMap<u64, u64>,
}

fn flags_at<A: PagingArch>(mm: &Mm<'_, A>, va: u64) -> Option<VmFlags> {
    mm.vmas().find(va).map(|v| v.flags)
}

fn clear_model(words: &mut BTreeMap<u64, u64>, va: u64, len: u64) {
    let keys: Vec<u64> = words.range(va..va + len).map(|(&k, _)| k).collect();
    for k in keys {
        words.remove(&k);
    }
}

/// Knob settings to start from, then a whole-region mapping, then `ops`.
fn knobs_then(first: Op, ops: Vec<Op>) -> Vec<Op> {
    let mut all = vec![
        first,
        Op::Mmap {
            off: 0,
            len: REGION_PAGES,
            prot: RW,
            populate: false,
        },
    ];
    all.extend(ops);
    all
}

fn knobs() -> impl Strategy<Value = Op> {
    (0..3u8, [0..4u8, 0..4u8, 0..4u8, 0..4u8], any::<bool>()).prop_map(
        |(global, modes, zero_page)| Op::Knobs {
            global,
            modes,
            zero_page,
        },
    )
}

fn run_ops<A: PagingArch>(ops: Vec<Op>) {
    run::<A>(48 * MIB, |env| {
        env.buddy.set_poison(false);
        let mut procs: Vec<Proc<'_, A>> = vec![Proc {
            mm: env.mm(),
            words: BTreeMap::new(),
        }];
        for (step, op) in ops.iter().enumerate() {
            let ctx = format!("step {step}: {op:?}");
            match *op {
                Op::Mmap {
                    off,
                    len,
                    prot,
                    populate,
                } => {
                    let (va, len) = range(off, len);
                    let flags = ANON
                        | MAP_FIXED
                        | if populate {
                            MAP_POPULATE
                        } else {
                            MapFlags::empty()
                        };
                    for p in procs.iter_mut() {
                        assert_eq!(p.mm.mmap(va, len, prot, flags), Ok(va), "{ctx}");
                        clear_model(&mut p.words, va, len);
                    }
                }
                Op::Munmap { off, len } => {
                    let (va, len) = range(off, len);
                    let p = &mut procs[0];
                    assert_eq!(p.mm.munmap(va, len), Ok(()), "{ctx}");
                    clear_model(&mut p.words, va, len);
                }
                Op::Mprotect { off, len, prot } => {
                    let (va, len) = range(off, len);
                    let last = procs.len() - 1;
                    let _ = procs[last].mm.mprotect(va, len, prot);
                }
                Op::Madvise { off, len, advice } => {
                    let (va, len) = range(off, len);
                    let p = &mut procs[0];
                    let _ = p.mm.madvise(va, len, advice);
                    if advice == MADV_DONTNEED {
                        clear_model(&mut p.words, va, len);
                    }
                }
                Op::Fork { from } => {
                    if procs.len() < MAX_MMS {
                        let src = &procs[from % procs.len()];
                        let child = src.mm.fork().expect("fork");
                        let words = src.words.clone();
                        procs.push(Proc { mm: child, words });
                    }
                }
                Op::Exit { which } => {
                    if procs.len() > 1 {
                        procs.remove(which % procs.len());
                    }
                }
                Op::Write { mm, off, len, tag } => {
                    let (va, len) = range(off, len.min(128));
                    let n = procs.len();
                    let p = &mut procs[mm % n];
                    for page in (va..va + len).step_by(K4 as usize) {
                        let v = tag ^ page;
                        let writable =
                            flags_at(&p.mm, page).is_some_and(|f| f.contains(VmFlags::WRITE));
                        let r = env.touch(&p.mm, page, Access::Write);
                        if writable {
                            let pa = r.unwrap_or_else(|e| panic!("{ctx}: write {page:#x}: {e:?}"));
                            env.mem_write_u64(pa, v);
                            if v == 0 {
                                p.words.remove(&page);
                            } else {
                                p.words.insert(page, v);
                            }
                        } else {
                            assert_eq!(r, Err(Fault::Segv), "{ctx}: write {page:#x}");
                        }
                    }
                }
                Op::Verify { mm, off, len } => {
                    let (va, len) = range(off, len.min(128));
                    let p = &procs[mm % procs.len()];
                    verify(env, p, va, len, &ctx);
                }
                Op::Knobs {
                    global,
                    modes,
                    zero_page,
                } => {
                    let g = [GlobalMode::Always, GlobalMode::Madvise, GlobalMode::Never]
                        [global as usize];
                    let m = [
                        OrderMode::Always,
                        OrderMode::Inherit,
                        OrderMode::Madvise,
                        OrderMode::Never,
                    ];
                    env.thp.config.set_global_mode(g);
                    for (o, &k) in [2u32, 3, 4, 9].iter().zip(modes.iter()) {
                        env.thp.config.set_order_mode(*o, m[k as usize]);
                    }
                    env.thp.config.set_use_zero_page(zero_page);
                }
            }
            let all: Vec<&Mm<'_, A>> = procs.iter().map(|p| &p.mm).collect();
            env.check(&all);
            env.tlb.reset();
        }
        if std::env::var_os("MMTEST_STATS").is_some() {
            eprintln!("{}", env.thp.stats.vmstat().replace('\n', " "));
            for o in [2u32, 3, 4, 9] {
                eprint!(
                    " o{o}: alloc {} fb {} defer {}",
                    env.thp.stats.get(o, mm::thp::MthpStat::AnonFaultAlloc),
                    env.thp.stats.get(o, mm::thp::MthpStat::AnonFaultFallback),
                    env.thp.stats.get(o, mm::thp::MthpStat::SplitDeferred)
                );
            }
            eprintln!();
        }
        for p in &procs {
            let keys: Vec<u64> = p.words.keys().copied().collect();
            for k in keys {
                verify(env, p, k, K4, "final");
            }
        }
    });
}

fn verify<'a, A: PagingArch>(env: &Env<'a, A>, p: &Proc<'a, A>, va: u64, len: u64, ctx: &str) {
    for page in (va..va + len).step_by(K4 as usize) {
        let readable = flags_at(&p.mm, page).is_some_and(|f| f.intersects(VmFlags::ACCESS));
        let r = env.touch(&p.mm, page, Access::Read);
        if readable {
            let pa = r.unwrap_or_else(|e| panic!("{ctx}: read {page:#x}: {e:?}"));
            let want = p.words.get(&page).copied().unwrap_or(0);
            assert_eq!(env.mem_read_u64(pa), want, "{ctx}: page {page:#x}");
        } else {
            assert_eq!(r, Err(Fault::Segv), "{ctx}: read {page:#x}");
        }
    }
}

/// 12 cases per run, or `PROPTEST_CASES` (longer runs: see the README).
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(12),
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_ops_x86_64(k in knobs(), ops in proptest::collection::vec(op(), 1..40)) {
        run_ops::<arch_x86_64::pte::X86_64>(knobs_then(k, ops));
    }

    #[test]
    fn random_ops_aarch64(k in knobs(), ops in proptest::collection::vec(op(), 1..40)) {
        run_ops::<arch_aarch64::pte::Aarch64>(knobs_then(k, ops));
    }
}
