//! Unit tests of `abi::thp_sysfs`.

use super::*;

fn thp() -> Thp {
    Thp::new()
}

/// Asserts that reading `path` gives exactly `want`.
#[track_caller]
fn reads(t: &Thp, path: &str, want: &str) {
    assert_eq!(t.read(path).unwrap(), want, "{path}");
}

#[test]
fn default_reads() {
    let t = thp();
    let cases: &[(&str, &str)] = &[
        ("enabled", "[always] madvise never\n"),
        ("defrag", "always defer defer+madvise [madvise] never\n"),
        ("use_zero_page", "1\n"),
        ("shrink_underused", "1\n"),
        ("large_cow", "1\n"),
        ("hpage_pmd_size", "2097152\n"),
        ("khugepaged/defrag", "1\n"),
        ("khugepaged/pages_to_scan", "4096\n"),
        ("khugepaged/scan_sleep_millisecs", "10000\n"),
        ("khugepaged/alloc_sleep_millisecs", "60000\n"),
        ("khugepaged/max_ptes_none", "511\n"),
        ("khugepaged/max_ptes_swap", "64\n"),
        ("khugepaged/max_ptes_shared", "256\n"),
        ("khugepaged/pages_collapsed", "0\n"),
        ("khugepaged/full_scans", "0\n"),
        (
            "hugepages-2048kB/enabled",
            "always [inherit] madvise never\n",
        ),
        ("hugepages-16kB/enabled", "always inherit madvise [never]\n"),
        ("hugepages-32kB/enabled", "always inherit madvise [never]\n"),
        ("hugepages-64kB/enabled", "always inherit madvise [never]\n"),
        (
            "hugepages-128kB/enabled",
            "always inherit madvise [never]\n",
        ),
        (
            "hugepages-256kB/enabled",
            "always inherit madvise [never]\n",
        ),
        (
            "hugepages-512kB/enabled",
            "always inherit madvise [never]\n",
        ),
        (
            "hugepages-1024kB/enabled",
            "always inherit madvise [never]\n",
        ),
        ("hugepages-64kB/stats/anon_fault_alloc", "0\n"),
        (
            "/sys/kernel/mm/transparent_hugepage/enabled",
            "[always] madvise never\n",
        ),
        (
            "/sys/kernel/mm/transparent_hugepage/hugepages-64kB//stats/split",
            "0\n",
        ),
        (
            "./hugepages-64kB/./enabled",
            "always inherit madvise [never]\n",
        ),
    ];
    for (p, want) in cases {
        assert_eq!(t.read(p).as_deref(), Ok(*want), "{p}");
    }
}

#[test]
fn writes_and_reads_back() {
    let t = thp();
    let cases: &[(&str, &str, &str)] = &[
        ("enabled", "madvise\n", "always [madvise] never\n"),
        ("enabled", "never", "always madvise [never]\n"),
        ("enabled", "always\n", "[always] madvise never\n"),
        (
            "hugepages-64kB/enabled",
            "always\n",
            "[always] inherit madvise never\n",
        ),
        (
            "hugepages-64kB/enabled",
            "inherit",
            "always [inherit] madvise never\n",
        ),
        (
            "hugepages-64kB/enabled",
            "madvise\n",
            "always inherit [madvise] never\n",
        ),
        (
            "hugepages-2048kB/enabled",
            "never\n",
            "always inherit madvise [never]\n",
        ),
        (
            "defrag",
            "defer+madvise\n",
            "always defer [defer+madvise] madvise never\n",
        ),
        (
            "defrag",
            "defer",
            "always [defer] defer+madvise madvise never\n",
        ),
        (
            "defrag",
            "always\n",
            "[always] defer defer+madvise madvise never\n",
        ),
        (
            "defrag",
            "never\n",
            "always defer defer+madvise madvise [never]\n",
        ),
        ("use_zero_page", "0\n", "0\n"),
        ("use_zero_page", "+1", "1\n"),
        ("shrink_underused", "n\n", "0\n"),
        ("shrink_underused", "yes", "1\n"),
        ("shrink_underused", "off", "0\n"),
        ("shrink_underused", "On", "1\n"),
        ("large_cow", "0\n", "0\n"),
        ("large_cow", "1", "1\n"),
        ("khugepaged/defrag", "0\n", "0\n"),
        ("khugepaged/pages_to_scan", "1\n", "1\n"),
        ("khugepaged/pages_to_scan", "4294967295", "4294967295\n"),
        ("khugepaged/scan_sleep_millisecs", "0\n", "0\n"),
        ("khugepaged/alloc_sleep_millisecs", "5\n", "5\n"),
        ("khugepaged/max_ptes_none", "0\n", "0\n"),
        ("khugepaged/max_ptes_none", "511\n", "511\n"),
        ("khugepaged/max_ptes_swap", "0", "0\n"),
        ("khugepaged/max_ptes_shared", "511", "511\n"),
    ];
    for (p, v, want) in cases {
        assert_eq!(t.write(p, v), Ok(()), "{p} <- {v:?}");
        assert_eq!(t.read(p).as_deref(), Ok(*want), "{p} after {v:?}");
    }
}

#[test]
fn write_errors() {
    let t = thp();
    let cases: &[(&str, &str, Errno)] = &[
        ("enabled", "inherit\n", Errno::EINVAL),
        ("enabled", "Always", Errno::EINVAL),
        ("enabled", " always", Errno::EINVAL),
        ("enabled", "always\n\n", Errno::EINVAL),
        ("enabled", "always ", Errno::EINVAL),
        ("enabled", "[always]", Errno::EINVAL),
        ("hugepages-64kB/enabled", "defer", Errno::EINVAL),
        ("hugepages-64kB/enabled", "al", Errno::EINVAL),
        ("defrag", "inherit", Errno::EINVAL),
        ("defrag", "defer+", Errno::EINVAL),
        ("use_zero_page", "2\n", Errno::EINVAL),
        ("use_zero_page", "-1", Errno::EINVAL),
        ("use_zero_page", "0x1", Errno::EINVAL),
        ("use_zero_page", "99999999999999999999999", Errno::ERANGE),
        ("use_zero_page", "1\n\n", Errno::EINVAL),
        ("use_zero_page", " 1", Errno::EINVAL),
        ("shrink_underused", "maybe", Errno::EINVAL),
        ("large_cow", "2\n", Errno::EINVAL),
        ("shrink_underused", "o", Errno::EINVAL),
        ("shrink_underused", "\n", Errno::EINVAL),
        ("khugepaged/defrag", "2", Errno::EINVAL),
        ("khugepaged/pages_to_scan", "0\n", Errno::EINVAL),
        ("khugepaged/pages_to_scan", "4294967296", Errno::EINVAL),
        ("khugepaged/pages_to_scan", "-5", Errno::EINVAL),
        ("khugepaged/scan_sleep_millisecs", "abc", Errno::EINVAL),
        ("khugepaged/max_ptes_none", "512\n", Errno::EINVAL),
        ("khugepaged/max_ptes_swap", "512", Errno::EINVAL),
        ("khugepaged/max_ptes_shared", "1000", Errno::EINVAL),
        (
            "khugepaged/max_ptes_none",
            "99999999999999999999999",
            Errno::EINVAL,
        ),
        ("hpage_pmd_size", "4096", Errno::EACCES),
        ("khugepaged/pages_collapsed", "0", Errno::EACCES),
        ("khugepaged/full_scans", "0", Errno::EACCES),
        ("hugepages-64kB/stats/split", "0", Errno::EACCES),
        ("nonexistent", "1", Errno::ENOENT),
        ("hugepages-8kB/enabled", "always", Errno::ENOENT),
        ("hugepages-8kB/stats/anon_fault_alloc", "0", Errno::ENOENT),
        ("hugepages-4kB/enabled", "always", Errno::ENOENT),
        ("hugepages-4096kB/enabled", "always", Errno::ENOENT),
        ("hugepages-064kB/enabled", "always", Errno::ENOENT),
        ("hugepages-64kB/shmem_enabled", "deny", Errno::EINVAL),
        ("shmem_enabled", "madvise", Errno::EINVAL),
        ("hugepages-64kB/stats/bogus", "0", Errno::ENOENT),
        ("khugepaged", "1", Errno::EISDIR),
        ("", "1", Errno::EISDIR),
        ("enabled/x", "1", Errno::ENOTDIR),
    ];
    for (p, v, e) in cases {
        let before = t.read(p);
        assert_eq!(t.write(p, v), Err(*e), "{p} <- {v:?}");
        assert_eq!(t.read(p), before, "{p} changed by failed write");
    }
}

#[test]
fn empty_write_is_noop() {
    let t = thp();
    assert_eq!(t.write("enabled", ""), Ok(()));
    reads(&t, "enabled", "[always] madvise never\n");
    assert_eq!(t.write("hpage_pmd_size", ""), Err(Errno::EACCES));
}

#[test]
fn writes_drive_policy() {
    let t = thp();
    t.write("enabled", "never\n").unwrap();
    t.write("hugepages-64kB/enabled", "always\n").unwrap();
    t.write("hugepages-16kB/enabled", "madvise\n").unwrap();
    let none = crate::thp::policy::VmaThpHints::default();
    let huge = crate::thp::policy::VmaThpHints {
        hugepage: true,
        nohugepage: false,
    };
    assert_eq!(t.config.allowable_orders(none), 1 << 4);
    assert_eq!(t.config.allowable_orders(huge), (1 << 4) | (1 << 2));
    t.write("enabled", "madvise\n").unwrap();
    assert_eq!(
        t.config.allowable_orders(huge),
        (1 << 4) | (1 << 2) | (1 << 9)
    );
    let g = t.config.generation();
    t.write("khugepaged/scan_sleep_millisecs", "100").unwrap();
    assert!(t.config.generation() > g);
}

#[test]
fn stats_files_reflect_counters() {
    let t = thp();
    t.stats.add(4, MthpStat::AnonFaultAlloc, 64);
    t.stats.inc(9, MthpStat::SplitDeferred);
    t.stats.add_pages_collapsed(3);
    reads(&t, "hugepages-64kB/stats/anon_fault_alloc", "64\n");
    reads(&t, "hugepages-2048kB/stats/split_deferred", "1\n");
    reads(&t, "hugepages-32kB/stats/anon_fault_alloc", "0\n");
    reads(&t, "khugepaged/pages_collapsed", "3\n");
}

#[test]
fn listings() {
    let t = thp();
    let names =
        |p: &str| -> Vec<String> { t.list(p).unwrap().into_iter().map(|e| e.name).collect() };
    let root = names("");
    for want in [
        "enabled",
        "defrag",
        "use_zero_page",
        "shrink_underused",
        "large_cow",
        "hpage_pmd_size",
        "shmem_enabled",
        "khugepaged",
        "hugepages-8kB",
        "hugepages-16kB",
        "hugepages-32kB",
        "hugepages-64kB",
        "hugepages-128kB",
        "hugepages-256kB",
        "hugepages-512kB",
        "hugepages-1024kB",
        "hugepages-2048kB",
    ] {
        assert!(root.iter().any(|n| n == want), "{want}");
    }
    assert_eq!(root.len(), 17);
    assert_eq!(names("hugepages-8kB"), ["shmem_enabled", "stats"]);
    assert_eq!(names("hugepages-8kB/stats").len(), 7);
    let mut sorted = root.clone();
    sorted.sort();
    assert_eq!(root, sorted);
    assert_eq!(
        names("hugepages-64kB"),
        ["enabled", "reserve", "shmem_enabled", "stats"]
    );
    assert_eq!(names("hugepages-64kB/stats").len(), MthpStat::COUNT);
    assert_eq!(names("khugepaged").len(), 9);
    assert_eq!(t.list("enabled"), Err(Errno::ENOTDIR));
    assert_eq!(t.list("nope"), Err(Errno::ENOENT));
    assert_eq!(t.read("khugepaged"), Err(Errno::EISDIR));
    // Every listed file is readable; writable ones accept their own
    // current value back (minus brackets).
    let files = t.all_files();
    assert_eq!(files.len(), 7 + 9 + 8 * (3 + MthpStat::COUNT) + 1 + 7);
    for f in &files {
        let info = t.stat(f).unwrap();
        assert!(!info.is_dir);
        let v = t.read(f).unwrap();
        assert!(v.ends_with('\n'), "{f}");
        if info.mode == 0o644 {
            let sel = match (v.find('['), v.find(']')) {
                (Some(a), Some(b)) => String::from(&v[a + 1..b]),
                _ => v.clone(),
            };
            assert_eq!(t.write(f, &sel), Ok(()), "{f} <- {sel:?}");
            assert_eq!(t.read(f).unwrap(), v, "{f}");
        } else {
            assert_eq!(info.mode, 0o444);
            assert_eq!(t.write(f, "0"), Err(Errno::EACCES));
        }
    }
    assert_eq!(t.stat("khugepaged").unwrap().mode, 0o755);
}

#[test]
fn parsers() {
    assert_eq!(kstrtoul("0"), Ok(0));
    assert_eq!(kstrtoul("+7\n"), Ok(7));
    assert_eq!(kstrtoul("18446744073709551615"), Ok(u64::MAX));
    assert_eq!(kstrtoul("18446744073709551616"), Err(Errno::ERANGE));
    for bad in ["", "+", "\n", "1 ", " 1", "1\n\n", "++1", "1a", "-0"] {
        assert_eq!(kstrtoul(bad), Err(Errno::EINVAL), "{bad:?}");
    }
    assert_eq!(kstrtouint("4294967296"), Err(Errno::ERANGE));
    for (s, v) in [
        ("y", true),
        ("1x", true),
        ("N", false),
        ("of", false),
        ("ON", true),
    ] {
        assert_eq!(kstrtobool(s), Ok(v), "{s}");
    }
    assert!(sysfs_streq("a\n", "a"));
    assert!(!sysfs_streq("a\n\n", "a"));
    assert!(!sysfs_streq("", "a"));
}

/// `shmem_enabled` and the per-size files: Linux 6.12's words, defaults,
/// brackets and the `force`/`inherit` rules.
#[test]
fn shmem_enabled_files() {
    let t = thp();
    reads(
        &t,
        "shmem_enabled",
        "always within_size advise [never] deny force\n",
    );
    reads(
        &t,
        "hugepages-2048kB/shmem_enabled",
        "always [inherit] within_size advise never\n",
    );
    reads(
        &t,
        "hugepages-64kB/shmem_enabled",
        "always inherit within_size advise [never]\n",
    );
    t.write("hugepages-64kB/shmem_enabled", "within_size\n")
        .unwrap();
    assert_eq!(
        t.read("hugepages-64kB/shmem_enabled").unwrap(),
        "always inherit within_size advise [never]\n"
            .replace("within_size advise [never]", "[within_size] advise never")
    );
    t.write("shmem_enabled", "force").unwrap();
    assert_eq!(
        t.write("hugepages-64kB/shmem_enabled", "inherit"),
        Err(Errno::EINVAL)
    );
    t.write("shmem_enabled", "deny\n").unwrap();
    t.write("hugepages-64kB/shmem_enabled", "inherit").unwrap();
    assert_eq!(t.write("shmem_enabled", "force"), Err(Errno::EINVAL));
}
