/* Two threads pinned to one CPU hand a token back and forth ROUNDS times
 * through a pair of pipes, so the CPU switches directly between them. Both
 * run SCHED_FIFO at one priority: no ordinary task runs in between and a
 * woken thread waits until the other blocks, so each round is exactly one
 * switch each way. Prints both thread ids, then waits for a line on stdin
 * before playing. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

static int to_pong[2], to_ping[2];
static long rounds;
static pthread_barrier_t ready;

static void pin(void) {
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    CPU_SET(0, &cpus);
    if (sched_setaffinity(0, sizeof(cpus), &cpus) != 0)
        exit(3);
    struct sched_param fifo = {.sched_priority = 1};
    if (sched_setscheduler(0, SCHED_FIFO, &fifo) != 0)
        exit(5);
}

static void *pong(void *unused) {
    char token;
    pin();
    printf("%ld\n", (long)syscall(SYS_gettid));
    fflush(stdout);
    pthread_barrier_wait(&ready);
    for (long i = 0; i < rounds; i++) {
        if (read(to_pong[0], &token, 1) != 1 || write(to_ping[1], &token, 1) != 1)
            exit(4);
    }
    return unused;
}

int main(int argc, char **argv) {
    pthread_t thread;
    char token = 'x', go[16];
    rounds = argc > 1 ? strtol(argv[1], NULL, 10) : 1000;
    if (pipe(to_pong) || pipe(to_ping))
        return 1;
    pin();
    printf("%ld\n", (long)syscall(SYS_gettid));
    fflush(stdout);
    pthread_barrier_init(&ready, NULL, 2);
    if (pthread_create(&thread, NULL, pong, NULL))
        return 1;
    pthread_barrier_wait(&ready);
    if (!fgets(go, sizeof(go), stdin))
        return 1;
    for (long i = 0; i < rounds; i++) {
        if (write(to_pong[1], &token, 1) != 1 || read(to_ping[0], &token, 1) != 1)
            return 4;
    }
    pthread_join(thread, NULL);
    return 0;
}
