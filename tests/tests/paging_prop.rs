//! Random sequences of batch operations against a shadow model: after every
//! batch the TLB model holds no stale entry, contiguous blocks are
//! well-formed, and every page translates as the model says.

mod common;

use std::collections::HashMap;

use common::*;
use mm::emu::{Access, Fault};
use mm::paging::{Attrs, FolioSpan, PageTable, PagingArch, Perms};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// 64 pages straddling a PTE-table boundary, block aligned.
const BASE: u64 = 0x7f00_0000_0000 + M2 - 32 * 4096;
const PAGES: u64 = 64;

#[derive(Clone, Debug)]
enum Op {
    /// Map a folio of 2^order pages at an aligned page index (if empty).
    MapFolio {
        page: u64,
        order: u32,
        writable: bool,
    },
    /// Map the pages of a 16-page folio one by one (fold candidate).
    MapSingles {
        block: u64,
    },
    Clear {
        page: u64,
        n: u64,
    },
    Wrprotect {
        page: u64,
        n: u64,
    },
    ClearYoung {
        page: u64,
        n: u64,
    },
    MakeWritable {
        page: u64,
    },
    Touch {
        page: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..PAGES, 0u32..=5, any::<bool>()).prop_map(|(page, order, writable)| Op::MapFolio {
            page,
            order,
            writable
        }),
        (0..PAGES / 16).prop_map(|block| Op::MapSingles { block }),
        (0..PAGES, 1..40u64).prop_map(|(page, n)| Op::Clear { page, n }),
        (0..PAGES, 1..40u64).prop_map(|(page, n)| Op::Wrprotect { page, n }),
        (0..PAGES, 1..40u64).prop_map(|(page, n)| Op::ClearYoung { page, n }),
        (0..PAGES).prop_map(|page| Op::MakeWritable { page }),
        (0..PAGES).prop_map(|page| Op::Touch { page }),
    ]
}

fn pfn_of(page: u64) -> u64 {
    DATA_PFN + 32 + page
}

fn run<A: PagingArch>(ops: &[Op]) -> Result<(), TestCaseError> {
    let emu = emu();
    let mut pt = PageTable::<A>::new(emu.env(), USER).unwrap();
    // page -> writable
    let mut model: HashMap<u64, bool> = HashMap::new();
    for op in ops {
        let mut g = pt.gather();
        match *op {
            Op::MapFolio {
                page,
                order,
                writable,
            } => {
                let n = 1u64 << order;
                let page = page & !(n - 1);
                let n = n.min(PAGES - page);
                let va = BASE + page * 4096;
                let free = (page..page + n).all(|p| !model.contains_key(&p));
                prop_assert_eq!(pt.ptes_none(va, n as usize), free);
                let attrs = Attrs::user(if writable {
                    Perms::USER_RW
                } else {
                    Perms::USER_RO
                });
                let r = pt.set_ptes(va, pfn_of(page), n as usize, attrs);
                prop_assert_eq!(r.is_ok(), free);
                if free {
                    for p in page..page + n {
                        model.insert(p, writable);
                    }
                }
            }
            Op::MapSingles { block } => {
                let page = block * 16;
                if (page..page + 16).all(|p| !model.contains_key(&p)) {
                    let folio = FolioSpan {
                        first_pfn: pfn_of(page),
                        nr: 16,
                    };
                    for p in page..page + 16 {
                        pt.set_pte(BASE + p * 4096, pfn_of(p), user_rw(), Some(folio))
                            .unwrap();
                        model.insert(p, true);
                    }
                    if A::CONT_PTES == 16 {
                        prop_assert_eq!(cont_count(&pt, BASE + page * 4096, 16), 16);
                    }
                }
            }
            Op::Clear { page, n } => {
                let n = n.min(PAGES - page);
                let r = pt.get_and_clear_ptes(BASE + page * 4096, n as usize, &mut g);
                let expect = (page..page + n)
                    .filter(|p| model.remove(p).is_some())
                    .count();
                prop_assert_eq!(r.present, expect);
            }
            Op::Wrprotect { page, n } => {
                let n = n.min(PAGES - page);
                pt.wrprotect_ptes(BASE + page * 4096, n as usize, &mut g);
                for p in page..page + n {
                    if let Some(w) = model.get_mut(&p) {
                        *w = false;
                    }
                }
            }
            Op::ClearYoung { page, n } => {
                let n = n.min(PAGES - page);
                pt.clear_young_ptes(BASE + page * 4096, n as usize, &mut g);
            }
            Op::MakeWritable { page } => {
                let r = pt.update_pte(BASE + page * 4096, user_rw(), &mut g);
                prop_assert_eq!(r.is_ok(), model.contains_key(&page));
                if let Some(w) = model.get_mut(&page) {
                    *w = true;
                }
            }
            Op::Touch { page } => {
                let va = BASE + page * 4096;
                let want = model.get(&page).copied();
                for acc in [Access::Read, Access::Write] {
                    let mut r = touch(&emu, &pt, va, acc);
                    if let Err(Fault::AccessFlag { .. }) = r {
                        // arm64 access-flag fault: the fault path sets AF.
                        let l = pt.read_pte(va).unwrap().leaf().unwrap();
                        pt.update_pte(
                            va,
                            Attrs {
                                young: true,
                                ..l.attrs
                            },
                            &mut g,
                        )
                        .unwrap();
                        r = touch(&emu, &pt, va, acc);
                    }
                    match (want, acc) {
                        (None, _) => {
                            prop_assert!(matches!(r, Err(Fault::NotMapped { .. })), "{:?}", r)
                        }
                        (Some(_), Access::Read) | (Some(true), Access::Write) => {
                            prop_assert_eq!(r, Ok(pfn_of(page) << 12))
                        }
                        (Some(false), _) => {
                            prop_assert!(matches!(r, Err(Fault::Permission { .. })), "{:?}", r)
                        }
                        _ => unreachable!(),
                    }
                }
            }
        }
        g.finish();
        emu.tlb
            .check_coherent::<A>(&emu.mem, pt.root(), USER)
            .map_err(TestCaseError::fail)?;
        mm::emu::check_cont_blocks(&pt).map_err(TestCaseError::fail)?;
        prop_assert_eq!(emu.tlb.conflicts(), 0);
        for p in 0..PAGES {
            let leaf = pt.read_pte(BASE + p * 4096).and_then(|e| e.leaf());
            prop_assert_eq!(
                leaf.map(|l| (l.pfn, l.attrs.perms.write)),
                model.get(&p).map(|w| (pfn_of(p), *w))
            );
        }
    }
    pt.destroy();
    prop_assert_eq!(emu.pt_in_use(), 0);
    Ok(())
}

fn random_ops<A: PagingArch>() {
    // 200 cases per run, or `PROPTEST_CASES` (longer runs: see the README).
    let mut runner = TestRunner::new(Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200),
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(op(), 1..40), |ops| {
            run::<A>(&ops)
        })
        .unwrap();
}

both!(random_ops);
