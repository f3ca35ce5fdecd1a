/*
 * flowtrace bench load generator: getppid(2) syscalls, each one traced event.
 *
 *     ft-loadgen N [RATE [N RATE]...]
 *
 * Prints "ready PID" and waits for a line on stdin (the go signal), so
 * tracers can attach first and filter on this pid. Then makes N getppid
 * syscalls as fast as it can or, with RATE > 0, paced at RATE per second
 * (an absolute schedule, sleeping when ahead of it). Further N RATE pairs
 * are phases run one after another, 0.25 s apart. Prints one JSON line:
 * the syscalls made, the loops' wall and CPU time in nanoseconds, and each
 * phase's start and end on CLOCK_MONOTONIC (the clock of bpf_ktime_get_ns).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_PHASES 16
#define PHASE_GAP_NS 250000000LL

static long long ns_of(const struct timespec *t) {
    return (long long)t->tv_sec * 1000000000LL + t->tv_nsec;
}

static long long cpu_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return ns_of(&t);
}

static long long mono_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return ns_of(&t);
}

static void sleep_until(long long ns) {
    struct timespec at = {ns / 1000000000LL, ns % 1000000000LL};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, NULL) != 0)
        ;
}

/* n getppid calls, as fast as possible (rate <= 0) or paced; returns n. */
static long run_phase(long n, double rate) {
    long done = 0;
    if (rate <= 0) {
        for (; done < n; done++)
            syscall(SYS_getppid);
        return done;
    }
    long long t0 = mono_ns();
    double interval = 1e9 / rate;
    while (done < n) {
        /* every event due by now, then sleep until the next one is due */
        long due = (long)((mono_ns() - t0) / interval) + 1;
        if (due > n)
            due = n;
        for (; done < due; done++)
            syscall(SYS_getppid);
        if (done < n)
            sleep_until(t0 + (long long)(done * interval));
    }
    return done;
}

int main(int argc, char **argv) {
    long counts[MAX_PHASES];
    double rates[MAX_PHASES];
    long long starts[MAX_PHASES], ends[MAX_PHASES];
    int phases = 0;
    if (argc < 2 || (argc > 3 && argc % 2 == 0) || (argc - 1 + 1) / 2 > MAX_PHASES) {
        fprintf(stderr, "usage: %s N [RATE [N RATE]...]\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i += 2, phases++) {
        counts[phases] = strtol(argv[i], NULL, 10);
        rates[phases] = i + 1 < argc ? strtod(argv[i + 1], NULL) : 0.0;
    }
    char line[64];

    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin))
        return 3;

    long done = 0;
    long long loop = 0, cpu = 0;
    for (int p = 0; p < phases; p++) {
        if (p > 0)
            sleep_until(ends[p - 1] + PHASE_GAP_NS);
        long long cpu0 = cpu_ns();
        starts[p] = mono_ns();
        done += run_phase(counts[p], rates[p]);
        ends[p] = mono_ns();
        cpu += cpu_ns() - cpu0;
        loop += ends[p] - starts[p];
    }

    printf("{\"generated\": %ld, \"loop_ns\": %lld, \"cpu_ns\": %lld, \"phases\": [", done, loop,
           cpu);
    for (int p = 0; p < phases; p++)
        printf("%s[%lld, %lld]", p ? ", " : "", starts[p], ends[p]);
    printf("]}\n");
    fflush(stdout);
    return 0;
}
