/* Calls getppid() without pause for SECONDS seconds, then prints how many
 * calls it made. Waits for a line on stdin first. Usage: busy_getppid SECONDS */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 2)
        return 2;
    double seconds = strtod(argv[1], NULL);
    char go[16];
    if (!fgets(go, sizeof(go), stdin))
        return 1;
    long calls = 0;
    double end = now() + seconds;
    while (now() < end) {
        for (int i = 0; i < 64; i++)
            syscall(SYS_getppid);
        calls += 64;
    }
    printf("%ld\n", calls);
    return 0;
}
