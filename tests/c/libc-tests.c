/*
 * The same kind of checks as mthp-tests, written as an ordinary C program
 * against the C library (glibc or musl, linked -static): proof that
 * programs built the usual way run unchanged on this kernel, from libc
 * start-up (auxv, TLS, SSE/FP state) through stdio on /proc and /sys to
 * fork, mmap and madvise.  Prints `test <name> ... ok|FAILED: why` (or
 * `... skipped: why`) and `N passed, N failed, N skipped`; exit status 0
 * only if nothing failed.  It saves and restores the THP knobs it
 * changes, so it also runs on a Linux host (as root; otherwise the tests
 * that set knobs say `skipped`).  On the mthp kernel (uname release
 * `*-mthp`) a skip is a failure: everything the tests need is there, so a
 * knob write that fails is a regression (the skip policy of the Rust
 * suite, tests/user/src/lib.rs).  The THP tests prove their folio sizes
 * (the per-size anon_fault_alloc counter, smaps AnonHugePages) before
 * checking behaviour on them.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define THP "/sys/kernel/mm/transparent_hugepage"
#define SZ_2M (2UL << 20)

static char why[256];
#define REQUIRE(c, ...) do { if (!(c)) { snprintf(why, sizeof why, __VA_ARGS__); return 1; } } while (0)

static int write_knob(const char *path, const char *v)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return -errno;
	int r = fputs(v, f);
	if (fclose(f) != 0)
		return -errno;
	return r < 0 ? -EIO : 0;
}

static long read_num(const char *path)
{
	FILE *f = fopen(path, "r");
	long v = -1;
	if (!f)
		return -1;
	if (fscanf(f, "%ld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

/* The selected word of an `a [b] c` knob, into `out`. */
static void selected(const char *path, char *out, size_t n)
{
	char buf[128] = "";
	FILE *f = fopen(path, "r");
	out[0] = 0;
	if (!f)
		return;
	if (fgets(buf, sizeof buf, f)) {
		char *s = strchr(buf, '['), *e = strchr(buf, ']');
		if (s && e && e > s && (size_t)(e - s) < n) {
			memcpy(out, s + 1, e - s - 1);
			out[e - s - 1] = 0;
		}
	}
	fclose(f);
}

/* Only `kb` (0: none) is "always"; every other size "never". */
static int thp_only(int kb)
{
	static const int sizes[] = { 16, 32, 64, 128, 256, 512, 1024, 2048 };
	char p[128];
	for (unsigned i = 0; i < sizeof sizes / sizeof *sizes; i++) {
		snprintf(p, sizeof p, THP "/hugepages-%dkB/enabled", sizes[i]);
		int r = write_knob(p, sizes[i] == kb ? "always" : "never");
		if (r && r != -ENOENT)
			return r;
	}
	return 0;
}

static long minflt(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_minflt;
}

/* `len` bytes of anonymous memory aligned to 2 MiB. */
static char *map_2m(size_t len)
{
	char *m = mmap(NULL, len + SZ_2M, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return NULL;
	char *a = (char *)(((uintptr_t)m + SZ_2M - 1) & ~(uintptr_t)(SZ_2M - 1));
	if (a > m)
		munmap(m, a - m);
	munmap(a + len, m + len + SZ_2M - (a + len));
	return a;
}

static long smaps_field(const void *addr, const char *key)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	int in = 0;
	long val = -1;
	size_t kl = strlen(key);
	if (!f)
		return -1;
	while (fgets(line, sizeof line, f)) {
		unsigned long s, e;
		if (sscanf(line, "%lx-%lx ", &s, &e) == 2) {
			in = s == (unsigned long)addr;
			continue;
		}
		if (in && !strncmp(line, key, kl)) {
			sscanf(line + kl, "%ld", &val);
			break;
		}
	}
	fclose(f);
	return val;
}

static int startup_and_fp(void)
{
	/* printf of doubles, libm-free FP, malloc of a large block (mmap). */
	double h = 0;
	char buf[64];
	for (int i = 1; i < 1000; i++)
		h += 1.0 / i;
	snprintf(buf, sizeof buf, "%.6f", h);
	REQUIRE(!strcmp(buf, "7.484471"), "harmonic sum printed as %s", buf);
	char *big = malloc(16 << 20);
	REQUIRE(big, "malloc(16 MiB) failed");
	memset(big, 0x5a, 16 << 20);
	REQUIRE(big[(16 << 20) - 1] == 0x5a, "malloc'd memory lost a write");
	free(big);
	REQUIRE(sysconf(_SC_PAGESIZE) == 4096, "page size %ld", sysconf(_SC_PAGESIZE));
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	usleep(2000);
	clock_gettime(CLOCK_MONOTONIC, &b);
	long ns = (b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec);
	REQUIRE(ns >= 2000000, "usleep(2000) took %ld ns", ns);
	return 0;
}

static int fault_order_64k(void)
{
	if (thp_only(64))
		return -1;
	long a0 = read_num(THP "/hugepages-64kB/stats/anon_fault_alloc");
	size_t len = 4 << 20;
	char *a = map_2m(len);
	REQUIRE(a, "mmap failed");
	long f0 = minflt();
	for (size_t i = 0; i < len; i += 4096)
		a[i] = (char)(i >> 12);
	long faults = minflt() - f0;
	long a1 = read_num(THP "/hugepages-64kB/stats/anon_fault_alloc");
	munmap(a, len);
	REQUIRE(a0 >= 0 && a1 >= 0, "hugepages-64kB/stats/anon_fault_alloc unreadable");
	REQUIRE(faults == 64, "%ld faults for 4 MiB of 64K folios", faults);
	REQUIRE(a1 - a0 == 64, "anon_fault_alloc went up by %ld", a1 - a0);
	return 0;
}

static int fork_cow_and_dontneed(void)
{
	if (thp_only(64))
		return -1;
	size_t len = 2 << 20;
	char *a = map_2m(len);
	REQUIRE(a, "mmap failed");
	long a0 = read_num(THP "/hugepages-64kB/stats/anon_fault_alloc");
	for (size_t i = 0; i < len; i += 512)
		a[i] = (char)(i * 7);
	long a1 = read_num(THP "/hugepages-64kB/stats/anon_fault_alloc");
	/* Proof the 2 MiB is 32 folios of 64K (>=: other processes on Linux). */
	REQUIRE(a0 >= 0 && a1 - a0 >= 32, "64K anon_fault_alloc %ld -> %ld: not 64K folios", a0, a1);
	pid_t pid = fork();
	if (pid == 0) {
		for (size_t i = 0; i < len; i += 512)
			if (a[i] != (char)(i * 7))
				_exit(2);
		memset(a, 1, len);
		_exit(0);
	}
	int st;
	REQUIRE(pid > 0, "fork: %s", strerror(errno));
	REQUIRE(waitpid(pid, &st, 0) == pid, "waitpid");
	REQUIRE(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child saw wrong data (status %#x)", st);
	for (size_t i = 0; i < len; i += 512)
		REQUIRE(a[i] == (char)(i * 7), "parent's byte %zu changed by the child", i);
	REQUIRE(madvise(a + 4096, 8192, MADV_DONTNEED) == 0, "madvise: %s", strerror(errno));
	REQUIRE(a[4096] == 0 && a[8192] == 0 && a[0] == 0 && a[12288] == (char)(12288 * 7),
		"MADV_DONTNEED inside a 64K folio: wrong data");
	munmap(a, len);
	return 0;
}

static int pmd_thp_in_smaps(void)
{
	if (thp_only(2048))
		return -1;
	char *a = map_2m(SZ_2M);
	REQUIRE(a, "mmap failed");
	memset(a, 3, SZ_2M);
	long ahp = smaps_field(a, "AnonHugePages:");
	long elig = smaps_field(a, "THPeligible:");
	munmap(a, SZ_2M);
	REQUIRE(ahp == 2048, "AnonHugePages %ld kB, expected 2048", ahp);
	REQUIRE(elig == 1, "THPeligible %ld", elig);
	return 0;
}

static int prctl_thp_disable(void)
{
	if (thp_only(2048))
		return -1;
	REQUIRE(prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0, "PR_SET_THP_DISABLE: %s", strerror(errno));
	char *a = map_2m(SZ_2M);
	if (!a)
		prctl(PR_SET_THP_DISABLE, 0, 0, 0, 0);
	REQUIRE(a, "mmap failed");
	memset(a, 3, SZ_2M);
	long ahp = smaps_field(a, "AnonHugePages:");
	munmap(a, SZ_2M);
	int off = prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0);
	prctl(PR_SET_THP_DISABLE, 0, 0, 0, 0);
	REQUIRE(off == 1, "PR_GET_THP_DISABLE said %d", off);
	REQUIRE(ahp == 0, "AnonHugePages %ld kB with THP disabled", ahp);
	return 0;
}

static int pipe_abort_and_dirs(void)
{
	/* A child reports through a pipe with stdio, then abort()s. */
	int fds[2];
	REQUIRE(pipe(fds) == 0, "pipe: %s", strerror(errno));
	pid_t pid = fork();
	if (pid == 0) {
		close(fds[0]);
		FILE *w = fdopen(fds[1], "w");
		fprintf(w, "child %d says hi\n", (int)getpid());
		fclose(w);
		abort();
	}
	REQUIRE(pid > 0, "fork: %s", strerror(errno));
	close(fds[1]);
	char line[64] = "";
	FILE *r = fdopen(fds[0], "r");
	REQUIRE(r && fgets(line, sizeof line, r), "nothing read from the pipe");
	fclose(r);
	int st;
	REQUIRE(waitpid(pid, &st, 0) == pid, "waitpid");
	REQUIRE(strstr(line, "says hi"), "read %s", line);
	REQUIRE(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT, "abort(): status %#x", st);
	/* opendir/readdir of the THP directory. */
	DIR *d = opendir(THP);
	REQUIRE(d, "opendir: %s", strerror(errno));
	int sizes = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		sizes += !strncmp(e->d_name, "hugepages-", 10) && e->d_type == DT_DIR;
	closedir(d);
	REQUIRE(sizes >= 8, "%d hugepages-* directories", sizes);
	REQUIRE(getuid() == 0 || access(THP "/enabled", W_OK) != 0, "uid");
	return 0;
}

static const struct {
	const char *name;
	int (*fn)(void);
} tests[] = {
	{ "libc_startup_and_fp", startup_and_fp },
	{ "libc_fault_order_64k", fault_order_64k },
	{ "libc_fork_cow_and_dontneed", fork_cow_and_dontneed },
	{ "libc_pmd_thp_in_smaps", pmd_thp_in_smaps },
	{ "libc_prctl_thp_disable", prctl_thp_disable },
	{ "libc_pipe_abort_and_dirs", pipe_abort_and_dirs },
};

/* The program runs on the mthp kernel, where skips are failures. */
static int on_mthp(void)
{
	struct utsname u;
	if (uname(&u))
		return 0;
	size_t n = strlen(u.release);
	return n >= 5 && !strcmp(u.release + n - 5, "-mthp");
}

int main(void)
{
	static const int sizes[] = { 16, 32, 64, 128, 256, 512, 1024, 2048 };
	char saved[8][16], p[128];
	int passed = 0, failed = 0, skipped = 0, mthp = on_mthp();
	for (unsigned i = 0; i < 8; i++) {
		snprintf(p, sizeof p, THP "/hugepages-%dkB/enabled", sizes[i]);
		selected(p, saved[i], sizeof saved[i]);
	}
	setvbuf(stdout, NULL, _IONBF, 0);
	for (unsigned i = 0; i < sizeof tests / sizeof *tests; i++) {
		why[0] = 0;
		int r = tests[i].fn();
		if (r < 0 && mthp) {
			printf("test %s ... FAILED: skipped on the mthp kernel, where it must run: "
			       "cannot set the THP knobs\n", tests[i].name);
			failed++;
		} else if (r < 0) {
			printf("test %s ... skipped: cannot set the THP knobs\n", tests[i].name);
			skipped++;
		} else if (r == 0) {
			printf("test %s ... ok\n", tests[i].name);
			passed++;
		} else {
			printf("test %s ... FAILED: %s\n", tests[i].name, why);
			failed++;
		}
	}
	for (unsigned i = 0; i < 8; i++) {
		if (!saved[i][0])
			continue;
		snprintf(p, sizeof p, THP "/hugepages-%dkB/enabled", sizes[i]);
		write_knob(p, saved[i]);
	}
	printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
	return failed != 0;
}
