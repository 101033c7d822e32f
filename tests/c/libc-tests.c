/*
 * The same kind of checks as mthp-tests, written as an ordinary C program
 * against the C library (glibc or musl, linked -static): proof that
 * programs built the usual way run unchanged on this kernel, from libc
 * start-up (auxv, TLS, SSE/FP state) through stdio on /proc and /sys to
 * fork, mmap and madvise, and pthreads (threads, mutexes, condition
 * variables, TLS, join, exit_group).  Prints `test <name> ... ok|FAILED: why` (or
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
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define THP "/sys/kernel/mm/transparent_hugepage"
#define SZ_2M (2UL << 20)

static char why[256];
static int on_mthp(void);
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

/* pthreads: NT threads each fill their own region and bump a shared
 * counter under a mutex; each has its own tid and its own `__thread`
 * value, and sees the process's pid and CPU affinity. */
#define NT 4
#define ROUNDS 2000
#define REGION (64 << 10)
static pthread_mutex_t count_lock = PTHREAD_MUTEX_INITIALIZER;
static long counter;
static __thread long tls_val = -1;
static char *regions;
struct worker {
	int id;
	pid_t tid;
	long tls_seen;
	const void *tls_addr;
	int pid_ok, affinity_ok;
};

static void *worker_fn(void *arg)
{
	struct worker *w = arg;
	tls_val = w->id * 100;
	w->tid = (pid_t)syscall(SYS_gettid);
	w->pid_ok = getpid() == (pid_t)syscall(SYS_getpid);
	cpu_set_t set;
	CPU_ZERO(&set);
	w->affinity_ok = sched_getaffinity(w->tid, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0 &&
			 sched_setaffinity(w->tid, sizeof set, &set) == 0;
	memset(regions + (size_t)w->id * REGION, 'A' + w->id, REGION);
	for (int i = 0; i < ROUNDS; i++) {
		pthread_mutex_lock(&count_lock);
		counter++;
		pthread_mutex_unlock(&count_lock);
		if (i % 256 == 0)
			sched_yield();
	}
	w->tls_seen = tls_val;
	w->tls_addr = &tls_val;
	return (void *)(long)(w->id + 1);
}

static int pthreads_mutex_tls(void)
{
	pthread_t t[NT];
	struct worker w[NT];
	regions = mmap(NULL, NT * REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	REQUIRE(regions != MAP_FAILED, "mmap failed");
	counter = 0;
	tls_val = 7;
	for (int i = 0; i < NT; i++) {
		w[i] = (struct worker){ .id = i };
		int e = pthread_create(&t[i], NULL, worker_fn, &w[i]);
		REQUIRE(e == 0, "pthread_create %d: %s", i, strerror(e));
	}
	for (int i = 0; i < NT; i++) {
		void *ret;
		int e = pthread_join(t[i], &ret);
		REQUIRE(e == 0, "pthread_join %d: %s", i, strerror(e));
		REQUIRE(ret == (void *)(long)(i + 1), "thread %d returned %p", i, ret);
	}
	REQUIRE(counter == NT * ROUNDS, "counter %ld, expected %d", counter, NT * ROUNDS);
	REQUIRE(tls_val == 7, "main thread's TLS value changed to %ld", tls_val);
	for (int i = 0; i < NT; i++) {
		for (size_t o = 0; o < REGION; o += 4096)
			REQUIRE(regions[i * REGION + o] == 'A' + i, "region %d byte %zu is %d", i, o,
				regions[i * REGION + o]);
		REQUIRE(w[i].tls_seen == i * 100, "thread %d saw TLS value %ld", i, w[i].tls_seen);
		REQUIRE(w[i].tls_addr != &tls_val, "thread %d shares the main thread's TLS", i);
		REQUIRE(w[i].tid > 0 && w[i].tid != getpid(), "thread %d tid %d (pid %d)", i, w[i].tid,
			getpid());
		REQUIRE(w[i].pid_ok, "thread %d: getpid differs from the group id", i);
		REQUIRE(w[i].affinity_ok, "thread %d: sched_{get,set}affinity on its tid failed", i);
		for (int j = 0; j < i; j++) {
			REQUIRE(w[j].tid != w[i].tid, "threads %d and %d share tid %d", j, i, w[i].tid);
			REQUIRE(w[j].tls_addr != w[i].tls_addr, "threads %d and %d share TLS", j, i);
		}
	}
	munmap(regions, NT * REGION);
	return 0;
}

/* A condition-variable handoff: a token passed back and forth. */
static pthread_mutex_t hand_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hand_cv = PTHREAD_COND_INITIALIZER;
static int turn, handoffs;

/* 200 times: wait for the token to be `me`'s, count, pass it on. */
static void handoff(int me)
{
	for (int i = 0; i < 200; i++) {
		pthread_mutex_lock(&hand_lock);
		while (turn != me)
			pthread_cond_wait(&hand_cv, &hand_lock);
		handoffs++;
		turn = !me;
		pthread_cond_signal(&hand_cv);
		pthread_mutex_unlock(&hand_lock);
	}
}

static void *ponger(void *arg)
{
	(void)arg;
	handoff(1);
	return NULL;
}

static int pthreads_condvar(void)
{
	pthread_t t;
	turn = 0;
	handoffs = 0;
	REQUIRE(pthread_create(&t, NULL, ponger, NULL) == 0, "pthread_create failed");
	handoff(0);
	REQUIRE(pthread_join(t, NULL) == 0, "pthread_join failed");
	REQUIRE(handoffs == 400, "%d handoffs, expected 400", handoffs);
	/* A timed wait nobody signals times out. */
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += 20 * 1000 * 1000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&hand_lock);
	int e = pthread_cond_timedwait(&hand_cv, &hand_lock, &ts);
	pthread_mutex_unlock(&hand_lock);
	REQUIRE(e == ETIMEDOUT, "pthread_cond_timedwait: %s", strerror(e));
	return 0;
}

/* One thread first-touches a THP-sized range (64 KiB and 2 MiB folios)
 * while the main thread reads it: every byte read is 0 or the writer's,
 * and the range ends up fully mapped (for 2 MiB: one PMD folio, so the
 * reader starts after the writer's first store: a read fault first would
 * map the zero page instead, as it may on Linux). */
struct toucher {
	volatile char *a;
	size_t len;
	volatile int started, done;
};

static void *touch_fn(void *arg)
{
	struct toucher *t = arg;
	for (size_t o = 0; o < t->len; o += 4096) {
		t->a[o] = 0x5a;
		t->started = 1;
	}
	t->done = 1;
	return NULL;
}

static int touch_while_reading(int kb, size_t len)
{
	if (thp_only(kb))
		return -1;
	char *a = map_2m(len);
	REQUIRE(a, "mmap failed");
	struct toucher t = { .a = a, .len = len };
	pthread_t th;
	REQUIRE(pthread_create(&th, NULL, touch_fn, &t) == 0, "pthread_create failed");
	long bad = 0;
	while (kb == 2048 && !t.started)
		sched_yield();
	do {
		for (size_t o = 0; o < len; o += 4096) {
			char c = ((volatile char *)a)[o];
			bad += c != 0 && c != 0x5a;
		}
		sched_yield();
	} while (!t.done);
	REQUIRE(pthread_join(th, NULL) == 0, "pthread_join failed");
	REQUIRE(bad == 0, "%ld reads saw neither zero nor the written byte", bad);
	for (size_t o = 0; o < len; o += 4096)
		REQUIRE(a[o] == 0x5a, "byte %zu lost its value", o);
	long rss = smaps_field(a, "Rss:");
	long ahp = smaps_field(a, "AnonHugePages:");
	munmap(a, len);
	REQUIRE(rss == (long)(len >> 10), "Rss %ld kB, expected %zu", rss, len >> 10);
	if (kb == 2048)
		REQUIRE(ahp == 2048, "AnonHugePages %ld kB, expected 2048", ahp);
	return 0;
}

static int pthreads_thp_first_touch(void)
{
	int r = touch_while_reading(64, 16 << 16);
	return r ? r : touch_while_reading(2048, SZ_2M);
}

/* exit() from main ends every thread: one faulting memory in and out in
 * user mode, one asleep in a futex wait, one in a pipe read that no write
 * will satisfy; the parent sees the exit status,
 * and (on the mthp kernel, where the count is exact) MemFree is back where
 * it was: nothing of the address space or the threads leaks. */
static void *churn_fn(void *arg)
{
	(void)arg;
	for (;;) {
		char *m = mmap(NULL, 4 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			       -1, 0);
		if (m == MAP_FAILED)
			continue;
		for (size_t o = 0; o < (4 << 20); o += 4096)
			((volatile char *)m)[o] = 1;
		munmap(m, 4 << 20);
	}
	return NULL;
}

static void *sleep_fn(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&hand_lock);
	for (;;)
		pthread_cond_wait(&hand_cv, &hand_lock);
	return NULL;
}

static int pipe_fds[2];

static void *reader_fn(void *arg)
{
	char c;
	(void)arg;
	for (;;)
		read(pipe_fds[0], &c, 1);
	return NULL;
}

static long mem_free_kb(void)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[128];
	long v = -1;
	while (f && fgets(line, sizeof line, f))
		if (sscanf(line, "MemFree: %ld", &v) == 1)
			break;
	if (f)
		fclose(f);
	return v;
}

static int pthreads_exit_group(void)
{
	long before = mem_free_kb(), after = -1;
	pid_t pid = fork();
	REQUIRE(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		pthread_t a, b, c;
		if (pipe(pipe_fds) || pthread_create(&a, NULL, churn_fn, NULL) ||
		    pthread_create(&b, NULL, sleep_fn, NULL) || pthread_create(&c, NULL, reader_fn, NULL))
			_exit(1);
		usleep(30000);
		exit(3);
	}
	int st;
	REQUIRE(waitpid(pid, &st, 0) == pid, "waitpid: %s", strerror(errno));
	REQUIRE(WIFEXITED(st) && WEXITSTATUS(st) == 3, "status %#x, expected exit 3", st);
	/* The exited threads' kernel stacks are freed once they are reaped. */
	for (int i = 0; i < 20 && after != before; i++) {
		usleep(5000);
		after = mem_free_kb();
	}
	REQUIRE(!on_mthp() || after == before, "MemFree %ld kB after the threaded child, %ld before",
		after, before);
	return 0;
}

/* tgkill with a fatal signal from a second thread to the first ends the
 * whole group, killed by that signal; signal 0 probes a live thread and
 * ESRCH answers a thread of another group. */
static pid_t main_tid;

static void *killer_fn(void *arg)
{
	(void)arg;
	if (syscall(SYS_tgkill, getpid(), main_tid, 0) != 0)
		_exit(10);
	if (syscall(SYS_tgkill, getppid(), main_tid, 0) != -1 || errno != ESRCH)
		_exit(11);
	syscall(SYS_tgkill, getpid(), main_tid, SIGTERM);
	for (;;)
		sched_yield();
	return NULL;
}

static int pthreads_tgkill(void)
{
	pid_t pid = fork();
	REQUIRE(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		pthread_t t;
		main_tid = (pid_t)syscall(SYS_gettid);
		if (pthread_create(&t, NULL, killer_fn, NULL))
			_exit(1);
		pthread_join(t, NULL);
		_exit(2);
	}
	int st;
	REQUIRE(waitpid(pid, &st, 0) == pid, "waitpid: %s", strerror(errno));
	REQUIRE(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM, "status %#x, expected SIGTERM", st);
	return 0;
}

/* ---- SMP: several CPUs on one address space (issue 14). ---- */

/* The CPUs the program started with (main reads them first). */
static cpu_set_t start_cpus;

static int online_cpus(void)
{
	int n = CPU_COUNT(&start_cpus);
	return n > 0 ? n : 1;
}

/* Give the calling thread back every CPU it started with. */
static void unpin_self(void)
{
	sched_setaffinity(0, sizeof start_cpus, &start_cpus);
}

/* Pin the calling thread (tid 0 = the caller) to CPU `cpu`. */
static int pin_self(int cpu)
{
	cpu_set_t s;
	CPU_ZERO(&s);
	CPU_SET(cpu, &s);
	return sched_setaffinity(0, sizeof s, &s);
}

/* What the main thread does to the range while the watcher, on CPU 1,
 * keeps its translations hot: unmap it, make it read-only, or replace it
 * with new memory holding 0x77. */
enum change { UNMAP, READ_ONLY, REPLACE };

struct watcher {
	char *a;
	size_t len;
	enum change how;
	int report; /* pipe write end: 's' = stale translation used, 'k' = fine */
	volatile int gone, ready;
};

static void *watch_fn(void *arg)
{
	struct watcher *w = arg;
	if (pin_self(1)) {
		write(w->report, "p", 1);
		_exit(3);
	}
	long sum = 0;
	while (!w->gone) {
		for (size_t o = 0; o < w->len; o += 4096)
			sum += ((volatile char *)w->a)[o];
		w->ready = 1;
	}
	/* The page read last first (surely still in this CPU's TLB), then
	 * the others: each access must fault (UNMAP, READ_ONLY: the process
	 * dies of SIGSEGV) or see the new memory (REPLACE). */
	for (size_t k = 0; k < w->len; k += 4096) {
		size_t o = w->len - 4096 - k;
		if (w->how == READ_ONLY) {
			((volatile char *)w->a)[o] = 1;
		} else {
			char c = ((volatile char *)w->a)[o];
			if (w->how == REPLACE && c == 0x77)
				continue;
		}
		write(w->report, "s", 1);
		_exit(0);
	}
	write(w->report, "k", 1);
	_exit((int)(sum & 0));
}

/* One run in a child process: returns 0 when the watcher never used a
 * stale translation. */
static int shootdown_case(enum change how, int kb)
{
	size_t len = kb == 2048 ? SZ_2M : kb == 64 ? (64 << 10) : 4096;
	int fds[2];
	REQUIRE(pipe(fds) == 0, "pipe: %s", strerror(errno));
	pid_t pid = fork();
	if (pid == 0) {
		close(fds[0]);
		if (pin_self(0))
			_exit(4);
		struct watcher w = { .how = how, .len = len, .report = fds[1] };
		w.a = map_2m(len);
		if (!w.a)
			_exit(5);
		memset(w.a, 0x11, len);
		pthread_t th;
		if (pthread_create(&th, NULL, watch_fn, &w))
			_exit(6);
		while (!w.ready)
			;
		if (how == UNMAP) {
			munmap(w.a, len);
		} else if (how == READ_ONLY) {
			mprotect(w.a, len, PROT_READ);
		} else {
			char *b = mmap(w.a, len, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
			if (b != w.a)
				_exit(7);
			memset(b, 0x77, len);
		}
		w.gone = 1;
		pthread_join(th, NULL);
		_exit(8);
	}
	REQUIRE(pid > 0, "fork: %s", strerror(errno));
	close(fds[1]);
	char r = 0;
	int st;
	REQUIRE(waitpid(pid, &st, 0) == pid, "waitpid: %s", strerror(errno));
	if (read(fds[0], &r, 1) != 1)
		r = 0;
	close(fds[0]);
	const char *what = how == UNMAP ? "munmap" : how == READ_ONLY ? "mprotect(PROT_READ)" : "replace";
	REQUIRE(r != 's', "%s of %d KiB: CPU 1 still used the old translation", what, kb);
	REQUIRE(r != 'p', "cannot pin a thread to CPU 1");
	if (how == REPLACE)
		REQUIRE(r == 'k' && WIFEXITED(st) && WEXITSTATUS(st) == 0,
			"replace of %d KiB: status %#x, report '%c'", kb, st, r ? r : '-');
	else
		REQUIRE(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV,
			"%s of %d KiB: status %#x (no SIGSEGV), report '%c'", what, kb, st, r ? r : '-');
	return 0;
}

/* A thread on CPU 1 keeps reading a 4K, 64K and 2M range while the main
 * thread on CPU 0 changes it: it must fault or see the new memory, never
 * use the old translation.  On x86 only the shootdown IPIs make that true
 * (QEMU keeps a TLB per vCPU and INVLPG is local): with user shootdowns
 * reduced to the local flush the mprotect and replace tests fail (checked
 * once on x86, -smp 2; the munmap one passed there all the same, so on
 * that kernel something else also reached CPU 1's TLB); arm64 broadcasts
 * its TLBIs. */
static int smp_shootdown(enum change how)
{
	if (online_cpus() < 2)
		return -2;
	static const int kbs[] = { 4, 64, 2048 };
	for (unsigned i = 0; i < 3; i++) {
		if (thp_only(kbs[i]))
			return -1;
		int r = shootdown_case(how, kbs[i]);
		if (r)
			return r;
	}
	return 0;
}

static int smp_shootdown_munmap(void) { return smp_shootdown(UNMAP); }
static int smp_shootdown_mprotect(void) { return smp_shootdown(READ_ONLY); }
static int smp_shootdown_replace(void) { return smp_shootdown(REPLACE); }

/* N threads, one per CPU, write the first page of one untouched 64K or
 * 2M range at the same moment: exactly one folio of that size is
 * allocated, every thread's byte is there (a racing second folio would
 * lose some), the rest reads zero, and the memory comes back. */
#define MAXT 8
struct racer {
	char *a;
	size_t len;
	int id, cpu;
	volatile int *go;
	long nonzero;
};

static void *race_fn(void *arg)
{
	struct racer *r = arg;
	pin_self(r->cpu);
	while (!*r->go)
		;
	r->a[r->id * 64] = (char)(r->id + 1);
	for (size_t o = 0; o < r->len; o += 512)
		r->nonzero += o >= MAXT * 64 && ((volatile char *)r->a)[o] != 0;
	return NULL;
}

static int smp_first_touch_race(void)
{
	int n = online_cpus();
	if (n < 2)
		return -2;
	if (n > MAXT)
		n = MAXT;
	static const int kbs[] = { 64, 2048 };
	for (unsigned i = 0; i < 2; i++) {
		int kb = kbs[i];
		char path[128];
		if (thp_only(kb))
			return -1;
		snprintf(path, sizeof path, THP "/hugepages-%dkB/stats/anon_fault_alloc", kb);
		size_t len = (size_t)kb << 10;
		long free0 = mem_free_kb();
		char *a = map_2m(len);
		REQUIRE(a, "mmap failed");
		long f0 = read_num(path);
		volatile int go = 0;
		struct racer rs[MAXT];
		pthread_t th[MAXT];
		for (int t = 0; t < n; t++) {
			rs[t] = (struct racer){ .a = a, .len = len, .id = t, .cpu = t, .go = &go };
			REQUIRE(pthread_create(&th[t], NULL, race_fn, &rs[t]) == 0, "pthread_create");
		}
		go = 1;
		long nonzero = 0;
		for (int t = 0; t < n; t++) {
			pthread_join(th[t], NULL);
			nonzero += rs[t].nonzero;
		}
		long f1 = read_num(path);
		long rss = smaps_field(a, "Rss:");
		int lost = 0;
		for (int t = 0; t < n; t++)
			lost += a[t * 64] != (char)(t + 1);
		munmap(a, len);
		long free1 = mem_free_kb();
		REQUIRE(lost == 0, "%d of %d threads' bytes lost (%d KiB)", lost, n, kb);
		REQUIRE(nonzero == 0, "%ld reads of untouched bytes were not zero (%d KiB)", nonzero, kb);
		REQUIRE(f1 - f0 == 1, "%ld %d KiB folios allocated for one range by %d threads", f1 - f0, kb, n);
		REQUIRE(rss == kb, "Rss %ld kB, expected %d", rss, kb);
		/* Within 1 MiB: other allocations (stdio, page tables) may move. */
		REQUIRE(!on_mthp() || labs(free1 - free0) < 1024, "MemFree %ld kB after, %ld before", free1, free0);
	}
	return 0;
}

/* fork while another thread writes: the child's memory is the parent's at
 * the fork, never what the writer on CPU 1 stores after it.  fork
 * write-protects the parent's entries; without that change reaching CPU 1
 * (a shootdown on x86), the writer keeps storing through its old writable
 * translation into the frame the child now shares.  The writer stores
 * its pass number into every page of a 64K-backed region; after fork
 * returns, the parent sends the child the pass then running, and the
 * child, a little later, must find no larger number anywhere. */
struct fwriter {
	volatile long *a;
	size_t words;
	volatile long pass;
	volatile int stop, ready;
};

static void *fork_writer_fn(void *arg)
{
	struct fwriter *w = arg;
	pin_self(1);
	while (!w->stop) {
		long p = w->pass + 1;
		for (size_t i = 0; i < w->words; i += 512)
			w->a[i] = p;
		w->pass = p;
		w->ready = 1;
	}
	return NULL;
}

static int smp_fork_while_writing(void)
{
	if (online_cpus() < 2)
		return -2;
	if (thp_only(64))
		return -1;
	size_t len = 1 << 20;
	struct fwriter w = { .words = len / sizeof(long) };
	w.a = (volatile long *)map_2m(len);
	REQUIRE(w.a, "mmap failed");
	pin_self(0);
	pthread_t th;
	REQUIRE(pthread_create(&th, NULL, fork_writer_fn, &w) == 0, "pthread_create");
	while (!w.ready)
		;
	int fds[2], res[2];
	REQUIRE(pipe(fds) == 0 && pipe(res) == 0, "pipe: %s", strerror(errno));
	pid_t pid = fork();
	if (pid == 0) {
		long limit;
		if (read(fds[0], &limit, sizeof limit) != sizeof limit)
			_exit(2);
		usleep(20000);
		long worst = 0;
		for (size_t i = 0; i < len / sizeof(long); i += 512)
			if (w.a[i] > worst)
				worst = w.a[i];
		write(res[1], &worst, sizeof worst);
		_exit(worst <= limit ? 0 : 1);
	}
	/* The pass running when fork returned may still be storing; the
	 * next one starts after: anything above it came after the fork. */
	long limit = w.pass + 1;
	write(fds[1], &limit, sizeof limit);
	int st;
	long worst = -1;
	REQUIRE(pid > 0, "fork: %s", strerror(errno));
	waitpid(pid, &st, 0);
	read(res[0], &worst, sizeof worst);
	w.stop = 1;
	pthread_join(th, NULL);
	munmap((void *)w.a, len);
	unpin_self();
	close(fds[0]);
	close(fds[1]);
	close(res[0]);
	close(res[1]);
	REQUIRE(WIFEXITED(st) && WEXITSTATUS(st) == 0,
		"the child saw pass %ld, stored after the fork (at most %ld when fork returned); status %#x",
		worst, limit, st);
	return 0;
}

/* MADV_COLLAPSE on CPU 0 while a thread on CPU 1 keeps reading the range:
 * every read sees the page's own value, before, during and after the
 * 4K pages are replaced by one 2M folio (the old frames are freed: a
 * stale translation on CPU 1 would read a freed frame). */
struct creader {
	volatile char *a;
	size_t len;
	volatile int stop, ready;
	long bad;
	volatile long rounds;
};

static void *collapse_reader_fn(void *arg)
{
	struct creader *r = arg;
	pin_self(1);
	while (!r->stop) {
		for (size_t o = 0; o < r->len; o += 4096)
			r->bad += r->a[o] != (char)(o >> 12 | 1);
		r->rounds++;
		r->ready = 1;
	}
	return NULL;
}

static int smp_collapse_under_reader(void)
{
	if (online_cpus() < 2)
		return -2;
	if (thp_only(4))
		return -1;
	struct creader r = { .len = SZ_2M };
	r.a = (volatile char *)map_2m(SZ_2M);
	REQUIRE(r.a, "mmap failed");
	for (size_t o = 0; o < SZ_2M; o += 4096)
		r.a[o] = (char)(o >> 12 | 1);
	REQUIRE(smaps_field((void *)r.a, "AnonHugePages:") == 0, "already huge before the collapse");
	pin_self(0);
	pthread_t th;
	REQUIRE(pthread_create(&th, NULL, collapse_reader_fn, &r) == 0, "pthread_create");
	while (!r.ready)
		;
	int c = madvise((void *)r.a, SZ_2M, 25 /* MADV_COLLAPSE */);
	int e = errno;
	long rounds = r.rounds;
	while (r.rounds < rounds + 3)
		;
	r.stop = 1;
	pthread_join(th, NULL);
	unpin_self();
	long ahp = smaps_field((void *)r.a, "AnonHugePages:");
	munmap((void *)r.a, SZ_2M);
	REQUIRE(c == 0, "MADV_COLLAPSE: %s", strerror(e));
	REQUIRE(ahp == 2048, "AnonHugePages %ld kB after MADV_COLLAPSE", ahp);
	REQUIRE(r.bad == 0, "%ld reads on CPU 1 saw a wrong byte", r.bad);
	return 0;
}

/* A PMD split (2 MiB folio) or a contpte unfold (64K folio; on x86 just
 * its 16 PTEs) on CPU 0 while a thread on CPU 1 keeps reading the block.
 * The main thread changes page `hole` in the middle (munmap, or
 * mprotect(PROT_READ)), which splits the PMD / unfolds the contiguous
 * block, then drops page `zap` (MADV_DONTNEED: its frame stays part of
 * the large folio, so a stale translation would still read the old
 * value there) and writes a new value into every page but the hole.
 * Each word the reader sees meanwhile must be the page's old value, its
 * new one, or (`zap` only) zero.  Once the main thread says it is done
 * (release/acquire on `done`), every page but the hole must hold its new
 * value, the read-only hole its old one, and the reader's last access, a
 * read of the unmapped hole or a write to the read-only one, must kill
 * the child with SIGSEGV (no signal handlers on this kernel: the reader
 * reports through a pipe what it saw before that access).
 *
 * Checked to fail without its mechanism (x86, -smp 2, user TLB flushes
 * reduced to the local one in kernel/src/mem/mmglue.rs): CPU 1 read the
 * zapped page's old value after the change (2 MiB: 3 boots of 4; 64K: 2
 * of 4, five runs each).  Not every run catches it: QEMU keeps 4K
 * entries even for a 2M leaf, and something else sometimes empties CPU
 * 1's TLB (the shootdown tests above saw the same).  On Linux 6.12
 * (runner run --linux, both arches) they pass. */
struct sreader {
	volatile long *a;
	size_t pages, hole, zap;
	enum change how;
	int report;
	int done; /* __atomic: set (release) by the main thread */
	volatile long rounds;
};

#define WORDS_PER_PAGE (4096 / sizeof(long))

static long old_val(size_t p) { return 0x1000 + (long)p; }
static long new_val(size_t p) { return 0x7000 + (long)p; }

/* Say `msg` on the pipe and end the process (every thread). */
static void say_and_exit(int fd, const char *msg, int status)
{
	write(fd, msg, strlen(msg));
	_exit(status);
}

static void *split_reader_fn(void *arg)
{
	struct sreader *r = arg;
	char msg[160];
	if (pin_self(1))
		say_and_exit(r->report, "p", 3);
	for (;;) {
		int done = __atomic_load_n(&r->done, __ATOMIC_ACQUIRE);
		for (size_t p = 0; p < r->pages; p++) {
			/* The unmapped hole is read only at the end; the
			 * read-only one keeps its old value throughout. */
			if (p == r->hole && r->how == UNMAP)
				continue;
			long v = r->a[p * WORDS_PER_PAGE];
			int ok = p == r->hole ? v == old_val(p)
				 : done	      ? v == new_val(p)
				 : v == old_val(p) || v == new_val(p) || (p == r->zap && v == 0);
			if (!ok) {
				snprintf(msg, sizeof msg, "CPU 1 read %#lx from page %zu %s", v, p,
					 done ? "after the change, not the new value"
					      : "during the change: neither old nor new");
				say_and_exit(r->report, msg, 0);
			}
		}
		r->rounds++;
		if (done)
			break;
	}
	volatile long *h = r->a + r->hole * WORDS_PER_PAGE;
	write(r->report, "k", 1);
	/* Must fault: the process dies here. */
	if (r->how == READ_ONLY)
		*h = 1;
	else
		(void)*h;
	snprintf(msg, sizeof msg, "page %zu still %s on CPU 1 after the change", r->hole,
		 r->how == READ_ONLY ? "writable" : "readable");
	say_and_exit(r->report, msg, 0);
	return NULL;
}

/* The child: build the block, start the reader, change the block. */
static void split_child(enum change how, int kb, int report)
{
	size_t len = (size_t)kb << 10, pages = len / 4096;
	char path[128], msg[160];
	snprintf(path, sizeof path, THP "/hugepages-%dkB/stats/anon_fault_alloc", kb);
	if (pin_self(0))
		say_and_exit(report, "ecannot pin the main thread to CPU 0", 4);
	struct sreader r = { .pages = pages, .hole = pages / 2, .zap = pages / 4, .how = how,
			     .report = report };
	char *a = map_2m(len);
	if (!a)
		say_and_exit(report, "emmap failed", 5);
	madvise(a, len, MADV_HUGEPAGE);
	r.a = (volatile long *)a;
	long f0 = read_num(path);
	for (size_t p = 0; p < pages; p++)
		r.a[p * WORDS_PER_PAGE] = old_val(p);
	long f1 = read_num(path);
	long ahp = smaps_field(a, "AnonHugePages:");
	if (f1 - f0 != 1 || (kb == 2048 && ahp != 2048)) {
		snprintf(msg, sizeof msg, "e%ld %d KiB folios for the block, AnonHugePages %ld kB",
			 f1 - f0, kb, ahp);
		say_and_exit(report, msg, 6);
	}
	pthread_t th;
	if (pthread_create(&th, NULL, split_reader_fn, &r))
		say_and_exit(report, "epthread_create failed", 7);
	while (r.rounds < 2)
		;
	char *hole = a + r.hole * 4096;
	int rc = how == UNMAP ? munmap(hole, 4096) : mprotect(hole, 4096, PROT_READ);
	if (rc == 0)
		rc = madvise(a + r.zap * 4096, 4096, MADV_DONTNEED);
	if (rc) {
		snprintf(msg, sizeof msg, "echanging the block: %s", strerror(errno));
		say_and_exit(report, msg, 9);
	}
	for (size_t p = 0; p < pages; p++)
		if (p != r.hole)
			r.a[p * WORDS_PER_PAGE] = new_val(p);
	/* The PMD is gone: only PTEs map the block now. */
	if (kb == 2048 && (ahp = smaps_field(a, "AnonHugePages:")) != 0) {
		snprintf(msg, sizeof msg, "eAnonHugePages %ld kB after the change (no split)", ahp);
		say_and_exit(report, msg, 10);
	}
	__atomic_store_n(&r.done, 1, __ATOMIC_RELEASE);
	pthread_join(th, NULL);
	_exit(8);
}

/* One run in a child process: 0 when the reader saw only right values
 * and its last access faulted. */
static int split_case(enum change how, int kb)
{
	const char *what = how == UNMAP ? "munmap" : "mprotect(PROT_READ)";
	int fds[2];
	REQUIRE(pipe(fds) == 0, "pipe: %s", strerror(errno));
	pid_t pid = fork();
	if (pid == 0) {
		close(fds[0]);
		split_child(how, kb, fds[1]);
	}
	REQUIRE(pid > 0, "fork: %s", strerror(errno));
	close(fds[1]);
	char buf[256];
	size_t n = 0;
	ssize_t k;
	while (n < sizeof buf - 1 && (k = read(fds[0], buf + n, sizeof buf - 1 - n)) > 0)
		n += k;
	buf[n] = 0;
	close(fds[0]);
	int st;
	REQUIRE(waitpid(pid, &st, 0) == pid, "waitpid: %s", strerror(errno));
	REQUIRE(buf[0] != 'p', "cannot pin a thread to CPU 1");
	REQUIRE(buf[0] != 'e', "%d KiB, %s: %.160s", kb, what, buf + 1);
	REQUIRE(buf[0] == 'k' && !buf[1], "%d KiB, %s of one page: %.160s", kb, what,
		buf[0] == 'k' ? buf + 1 : buf[0] ? buf : "(the reader said nothing)");
	REQUIRE(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV,
		"%d KiB, %s of one page: status %#x, no SIGSEGV on the last access", kb, what, st);
	return 0;
}

/* libc_smp_split_under_reader: one 4K page of a PMD-mapped 2 MiB folio
 * unmapped, then (another run) made read-only, under a reader on CPU 1.
 * libc_smp_contpte_unfold_under_reader: the same inside a 64K folio
 * (arm64: one contpte block, unfolded by the change). */
static int smp_split_or_unfold(int kb)
{
	if (online_cpus() < 2)
		return -2;
	if (thp_only(kb))
		return -1;
	/* Several runs: under QEMU a stale translation is not always kept
	 * (see the checked-to-fail note above). */
	for (int run = 0; run < 5; run++) {
		int r = split_case(UNMAP, kb);
		if (!r)
			r = split_case(READ_ONLY, kb);
		if (r)
			return r;
	}
	return 0;
}

static int smp_split_under_reader(void) { return smp_split_or_unfold(2048); }
static int smp_contpte_unfold_under_reader(void) { return smp_split_or_unfold(64); }

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
	{ "libc_pthreads_mutex_tls", pthreads_mutex_tls },
	{ "libc_pthreads_condvar", pthreads_condvar },
	{ "libc_pthreads_thp_first_touch", pthreads_thp_first_touch },
	{ "libc_pthreads_exit_group", pthreads_exit_group },
	{ "libc_pthreads_tgkill", pthreads_tgkill },
	{ "libc_smp_shootdown_munmap", smp_shootdown_munmap },
	{ "libc_smp_shootdown_mprotect", smp_shootdown_mprotect },
	{ "libc_smp_shootdown_replace", smp_shootdown_replace },
	{ "libc_smp_first_touch_race", smp_first_touch_race },
	{ "libc_smp_fork_while_writing", smp_fork_while_writing },
	{ "libc_smp_collapse_under_reader", smp_collapse_under_reader },
	{ "libc_smp_split_under_reader", smp_split_under_reader },
	{ "libc_smp_contpte_unfold_under_reader", smp_contpte_unfold_under_reader },
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

/* `libc_filter=<word>` on the kernel command line: run only the tests
 * whose name contains it (the others are not counted), to repeat one
 * test quickly; empty when absent. */
static void cmdline_filter(char out[128])
{
	char line[1024] = "";
	FILE *f = fopen("/proc/cmdline", "r");
	out[0] = 0;
	if (!f)
		return;
	if (fgets(line, sizeof line, f)) {
		char *w = strstr(line, "libc_filter=");
		if (w && (w == line || w[-1] == ' '))
			sscanf(w + strlen("libc_filter="), "%127s", out);
	}
	fclose(f);
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
	if (sched_getaffinity(0, sizeof start_cpus, &start_cpus))
		CPU_ZERO(&start_cpus);
	char filter[128];
	cmdline_filter(filter);
	for (unsigned i = 0; i < sizeof tests / sizeof *tests; i++) {
		if (filter[0] && !strstr(tests[i].name, filter))
			continue;
		why[0] = 0;
		int r = tests[i].fn();
		if (r == -2 && mthp) {
			printf("test %s ... FAILED: one CPU online; the mthp runner boots this "
			       "suite with two\n", tests[i].name);
			failed++;
		} else if (r == -2) {
			printf("test %s ... skipped: one CPU online\n", tests[i].name);
			skipped++;
		} else if (r < 0 && mthp) {
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
