/*
 * flowtrace bench load generator: N getppid(2) syscalls, each one traced event.
 *
 *     ft-loadgen N [RATE]
 *
 * Prints "ready PID" and waits for a line on stdin (the go signal), so
 * tracers can attach first and filter on this pid. Then makes N getppid
 * syscalls as fast as it can or, with RATE > 0, paced at RATE per second
 * (an absolute schedule, sleeping when ahead of it). Prints one JSON line:
 * the syscalls made and the loop's wall and CPU time in nanoseconds.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long long ns_of(const struct timespec *t) {
    return (long long)t->tv_sec * 1000000000LL + t->tv_nsec;
}

static long long cpu_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return ns_of(&t);
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s N [RATE]\n", argv[0]);
        return 2;
    }
    long n = strtol(argv[1], NULL, 10);
    double rate = argc == 3 ? strtod(argv[2], NULL) : 0.0;
    char line[64];
    struct timespec start, now, end;
    long done = 0;

    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin))
        return 3;

    long long cpu0 = cpu_ns();
    clock_gettime(CLOCK_MONOTONIC, &start);
    if (rate <= 0) {
        for (; done < n; done++)
            syscall(SYS_getppid);
    } else {
        long long t0 = ns_of(&start);
        double interval = 1e9 / rate;
        while (done < n) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            /* every event due by now, then sleep until the next one is due */
            long due = (long)((ns_of(&now) - t0) / interval) + 1;
            if (due > n)
                due = n;
            for (; done < due; done++)
                syscall(SYS_getppid);
            if (done < n) {
                long long next = t0 + (long long)(done * interval);
                struct timespec at = {next / 1000000000LL, next % 1000000000LL};
                clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, NULL);
            }
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    long long cpu1 = cpu_ns();

    printf("{\"generated\": %ld, \"loop_ns\": %lld, \"cpu_ns\": %lld}\n", done,
           ns_of(&end) - ns_of(&start), cpu1 - cpu0);
    fflush(stdout);
    return 0;
}
